"""Direct logit attribution of an answer margin, and of a steering effect on it, to components.

The residual the unembedding reads at the last prompt position is a sum: the stream entering
block 0 (embeddings), every block's attention and MLP output, and whatever steering adds. An
RMSNorm final norm divides that sum by one scale per token (read from the run itself: the
``ln_final.hook_scale`` hook) and multiplies by its weight, so the margin between two answers

    margin = logit(choice 1) - logit(choice 0) = sum over terms of (term / scale) . r,
    r = weight * (W_U[:, choice 1] - W_U[:, choice 0])

splits exactly into one number per term, in the clean run and in the steered one (each with its
own scale). In the steered run every term is divided by the *clean* run's scale and the
difference the steered scale makes is a term of its own (``final_norm_scale``), so a term's
steered-minus-clean change is the change of that component's output alone. It says where a
steering effect enters the margin: directly through the added vectors (the ``steering`` term:
the residual left after the components are subtracted, checked to be ~0 without steering),
through the final norm's rescaling, or through the response of a particular block's attention or
MLP, or with ``heads=True`` a particular attention head (``hook_z`` x ``W_O``) and with
``neurons=[L]`` a particular neuron of block L's MLP (``hook_post`` x ``W_out``). For two-way items whose choices differ only in their last token (SST-2's
" negative"/" positive" on SmolLM2, " (A"/" (B"), read where that token is predicted, the margin
is exactly the difference of ``evaluate``'s summed choice scores. Every split is checked against the model's own logits and raises when it does not
reconstruct them (a logit soft-cap as in Gemma-2 or a LayerNorm final norm is refused; Gemma-3's
post-attention norms rule out the per-head split, not the per-block one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..data import Item
from ..tokens import pad


@dataclass
class ComponentAttribution:
    """Per item (rows) and term (columns): its share of the margin, in logits (nats for two
    single-token choices); every row sums to the item's margin. ``steered`` is None when no
    steering was given."""

    terms: list[str]
    clean: Float[Tensor, "n term"]
    margin_clean: Float[Tensor, " n"]
    steered: Float[Tensor, "n term"] | None = None
    margin_steered: Float[Tensor, " n"] | None = None
    scale: Float[Tensor, " n"] | None = None  # the clean run's final-norm scale at the last position

    @property
    def delta(self) -> Float[Tensor, "n term"]:
        if self.steered is None:
            raise ValueError("no steered run: pass plan= or vectors= to margin_components")
        return self.steered - self.clean

    def table(self) -> list[dict]:
        """One row per term: mean clean and steered contribution, their difference and its share
        of the mean margin change, sorted by |difference| (by |clean| without steering)."""
        rows = []
        total = float((self.margin_steered - self.margin_clean).mean()) if self.steered is not None else None
        for k, name in enumerate(self.terms):
            row = {"term": name, "clean": float(self.clean[:, k].mean())}
            if self.steered is not None:
                d = float(self.delta[:, k].mean())
                row.update(steered=float(self.steered[:, k].mean()), delta=d,
                           share=d / total if total else float("nan"))
            rows.append(row)
        key = "delta" if self.steered is not None else "clean"
        return sorted(rows, key=lambda r: -abs(r[key]))


def _choice_tokens(model, items: Sequence[Item], chat_template) -> tuple[list[list[int]], list[tuple[int, int]]]:
    from ..evaluate import _item_rows

    prompts, pairs = [], []
    for it in items:
        prompt, conts, _ = _item_rows(model, it, chat_template)
        if len(conts) != 2 or len(conts[0]) != len(conts[1]) or not conts[0] or conts[0][:-1] != conts[1][:-1]:
            raise ValueError(f"item {it.id!r}: margin_components needs two choices that differ only in their last "
                             f"token, got continuations {conts}; use two-way items with one-token answers (e.g. "
                             "SST-2 on SmolLM2, or ' (A' / ' (B')")
        prompts.append(prompt + conts[0][:-1])  # shared continuation tokens (" (") join the prompt
        pairs.append((conts[0][-1], conts[1][-1]))
    return prompts, pairs


def _readout(model) -> tuple[Tensor, Tensor | None]:
    """The final norm's weight folded into the unembedding ("d_model vocab") and the bias."""
    cfg = model.cfg
    if getattr(cfg, "normalization_type", None) not in ("RMS", "RMSPre"):
        raise ValueError(f"margin_components needs an RMSNorm final norm (Llama, Qwen, Mistral, Gemma, ...); "
                         f"{cfg.model_name!r} has {getattr(cfg, 'normalization_type', None)!r}")
    cap = getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0
    if cap > 0:
        raise ValueError(f"{cfg.model_name!r} soft-caps its logits ({cap}): the margin is not linear in the residual")
    w_u = model.W_U.detach().float()
    norm = model.ln_final.original_component
    probe = torch.full((1, w_u.shape[0]), 1e3, dtype=w_u.dtype, device=w_u.device)
    with torch.no_grad():  # RMS of a constant vector is the constant: the output is the (effective) weight
        weight = norm(probe.to(next(norm.parameters()).dtype)).float()[0].to(w_u.device)
    b_u = getattr(model, "b_U", None)
    b_u = b_u.detach().float() if b_u is not None and bool(b_u.abs().sum() > 0) else None
    return weight[:, None] * w_u, b_u


def _names(n_layers: int, heads: bool, neurons: Sequence[int]) -> list[str]:
    names = ["blocks.0.hook_resid_pre", "ln_final.hook_in", "ln_final.hook_scale"]
    for layer in range(n_layers):
        names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
        if heads:
            names.append(f"blocks.{layer}.attn.hook_z")
        if layer in neurons:
            names.append(f"blocks.{layer}.mlp.hook_post")
    return names


def _with_bias(parts: Tensor, out: Tensor, bias, atol: float, problem: str) -> Tensor:
    """``parts`` "n k d" of a module's output ``out`` "n d" plus the remainder as a last part; the
    remainder must be the module's own bias (zero without one), else raise ``problem``."""
    rest = out - parts.sum(1)
    expected = bias.detach().float().to(rest.device) if bias is not None else torch.zeros_like(rest[0])
    if not torch.allclose(rest, expected.expand_as(rest), atol=atol * max(1.0, float(out.abs().max()))):
        raise ValueError(problem)
    return torch.cat([parts, rest[:, None]], dim=1)


def _split(model, cache, logits, pairs, readout, b_u, heads: bool, neurons: Sequence[int], atol: float,
           ref_scale: Tensor | None = None) -> tuple[list[str], Tensor, Tensor, Tensor, Tensor]:
    """The terms and their contributions "n term" of one batch (left-padded: the last column is every
    prompt's end), each divided by ``ref_scale`` (the clean run's final-norm scale; default this run's
    own), the difference to this run's scale in the ``final_norm_scale`` term. Returns the term names,
    the contributions, the margin, the share of the final residual the components leave unexplained
    and this run's scale "n 1"."""
    name = model.cfg.model_name
    a = torch.tensor([p[0] for p in pairs], device=readout.device)
    b = torch.tensor([p[1] for p in pairs], device=readout.device)
    r = (readout[:, b] - readout[:, a]).T  # (n, d_model)
    own = cache["ln_final.hook_scale"][:, -1].float().reshape(-1, 1).to(r.device)
    scale = own if ref_scale is None else ref_scale
    named: list[tuple[list[str], Tensor]] = []

    def last(hook: str) -> Tensor:
        return cache[hook][:, -1].float()

    def add(names: list[str], x: Tensor) -> None:  # x: "n k d" residual contributions at the last position
        named.append((names, ((x.to(r.device) / scale[:, :, None]) * r[:, None]).sum(-1)))

    add(["resid_pre0"], last("blocks.0.hook_resid_pre")[:, None])
    parts = [last("blocks.0.hook_resid_pre")]
    for layer in range(model.cfg.n_layers):
        attn, mlp = last(f"blocks.{layer}.hook_attn_out"), last(f"blocks.{layer}.hook_mlp_out")
        if heads:
            z, block = last(f"blocks.{layer}.attn.hook_z"), model.blocks[layer].attn  # z: (n, heads, d_head)
            per_head = torch.einsum("nhe,hed->nhd", z, block.W_O.detach().float().to(z.device))
            add([f"blocks.{layer}.attn.head{h}" for h in range(per_head.shape[1])] + [f"blocks.{layer}.attn.bias"],
                _with_bias(per_head, attn, getattr(block, "b_O", None), atol,
                           f"block {layer}: hook_z x W_O does not reconstruct hook_attn_out for {name!r} (a norm "
                           "after attention?); use heads=False"))
        else:
            add([f"blocks.{layer}.attn"], attn[:, None])
        if layer in neurons:
            post, block = last(f"blocks.{layer}.mlp.hook_post"), model.blocks[layer].mlp  # post: (n, d_mlp)
            per_neuron = post[:, :, None] * block.W_out.detach().float().to(post.device)[None]
            add([f"blocks.{layer}.mlp.n{i}" for i in range(post.shape[1])] + [f"blocks.{layer}.mlp.bias"],
                _with_bias(per_neuron, mlp, getattr(block, "b_out", None), atol,
                           f"block {layer}: hook_post x W_out does not reconstruct hook_mlp_out for {name!r} (a "
                           "norm after the MLP?); leave it out of neurons="))
        else:
            add([f"blocks.{layer}.mlp"], mlp[:, None])
        parts += [attn, mlp]
    final = last("ln_final.hook_in")
    rest = final - sum(parts)
    add(["steering"], rest[:, None])
    rescale = (final.to(r.device) * r).sum(-1) * (1 / own - 1 / scale)[:, 0]  # the final norm's rescaling
    lg = logits[:, -1].float().to(r.device)
    margin = (lg.gather(-1, b[:, None]) - lg.gather(-1, a[:, None]))[:, 0]
    bias = (b_u[b] - b_u[a]) if b_u is not None else torch.zeros_like(margin)
    named += [(["final_norm_scale"], rescale[:, None]), (["unembed_bias"], bias[:, None])]
    out = torch.cat([x for _, x in named], dim=1)
    if not torch.allclose(out.sum(1), margin, atol=atol * max(1.0, float(margin.abs().max()))):
        raise ValueError(f"the components do not add up to the margin for {name!r} (max error "
                         f"{float((out.sum(1) - margin).abs().max()):.3g}): its readout is not linear in these hooks")
    return [n for names, _ in named for n in names], out, margin, rest.norm(dim=-1) / final.norm(dim=-1), own


def margin_components(model, items: Sequence[Item], *, plan=None, vectors: Mapping[str, Tensor] | None = None,
                      strength: float = 1.0, norms: Mapping[str, float] | None = None, heads: bool = False,
                      neurons: Sequence[int] = (), clean: ComponentAttribution | None = None,
                      chat_template: bool | None = None, batch_size: int = 8,
                      atol: float = 1e-3) -> ComponentAttribution:
    """Split each two-way item's answer margin (choice 1 minus choice 0, at the last prompt
    token) into the contributions of the embeddings (``resid_pre0``), every block's attention
    (or, with ``heads``, every head and the output bias) and MLP, the ``steering`` term (the
    residual the components do not account for: ~0 unsteered, the added vectors when steered)
    and the unembedding's bias (0 for most models). ``neurons``: blocks whose MLP is split into its
    neurons (``blocks.L.mlp.n<i>``: activation x its output row) and output bias (``blocks.L.mlp.bias``).
    With ``plan`` (or ``vectors`` [+ ``norms``], relative scale) at ``strength``, the steered run
    is split too. ``clean``: an earlier result on the same items with the same ``heads`` and
    ``neurons`` (e.g. ``margin_components(model, items)``) whose unsteered split is reused instead of
    recomputed, to compare many plans or strengths. ``atol``: tolerance of the reconstruction
    checks, relative to the largest value."""
    from ..steer import steer

    items = list(items)
    if not items:
        raise ValueError("no items: pass at least one two-way Item")
    if plan is not None and vectors is not None:
        raise ValueError("pass plan= or vectors=, not both")
    if clean is not None and (clean.scale is None or len(clean.margin_clean) != len(items)):
        raise ValueError(f"clean= holds {len(clean.margin_clean)} items, not these {len(items)}: pass the result of "
                         "margin_components on the same items")
    prompts, pairs = _choice_tokens(model, items, chat_template)
    readout, b_u = _readout(model)
    neurons = sorted({int(n) for n in neurons})
    if any(not 0 <= n < model.cfg.n_layers for n in neurons):
        raise ValueError(f"neurons={neurons}: blocks are numbered 0..{model.cfg.n_layers - 1}")
    names = _names(model.cfg.n_layers, heads, neurons)
    steering = None
    if plan is not None:
        steering = lambda: plan.apply(model, strength)  # noqa: E731
    elif vectors is not None:
        steering = lambda: steer(model, vectors, strength, norms=norms)  # noqa: E731
    runs: dict[str, list] = {"clean": [], "steered": []}
    terms = None
    for start in range(0, len(items), batch_size):
        chunk = list(range(start, min(start + batch_size, len(items))))
        batch = pad(model, [(prompts[i], 0) for i in chunk], padding_side="left")
        clean_scale = None if clean is None else clean.scale[chunk][:, None].to(readout.device)
        for run in ("clean",) * (clean is None) + ("steered",) * (steering is not None):
            with torch.no_grad(), (steering() if run == "steered" else contextlib.nullcontext()):
                logits, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask,
                                                     names_filter=names)
            if hasattr(model, "_last_hf_cache"):
                del model._last_hf_cache
            terms, out, margin, rest, scale = _split(model, cache, logits, [pairs[i] for i in chunk], readout, b_u,
                                                     heads, neurons, atol,
                                                     ref_scale=clean_scale if run == "steered" else None)
            if run == "clean":
                clean_scale = scale
                if float(rest.max()) > atol * 10:
                    raise ValueError(f"without steering the components leave {float(rest.max()):.3g} of the final "
                                     f"residual unexplained for {model.cfg.model_name!r}; its blocks add more than "
                                     "hook_attn_out + hook_mlp_out (e.g. post-norms)")
            runs[run].append((out, margin, scale))
    if clean is not None and terms is not None and terms != clean.terms:
        raise ValueError("clean= was split with other heads= / neurons= settings than this call; pass the same ones")

    def cat(run: str, k: int):
        return torch.cat([r[k] for r in runs[run]]) if runs[run] else None

    if clean is None:
        return ComponentAttribution(terms, cat("clean", 0), cat("clean", 1), cat("steered", 0), cat("steered", 1),
                                    scale=cat("clean", 2)[:, 0])
    return ComponentAttribution(clean.terms, clean.clean, clean.margin_clean, cat("steered", 0), cat("steered", 1),
                                scale=clean.scale)
