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


def _per_neuron(model, cache, layer: int, atol: float) -> Tensor:
    """Block ``layer``'s MLP output at the last position split into its neurons plus the output bias
    (last column): "n (d_mlp + 1) d_model"; raises when they do not add up to ``hook_mlp_out``."""
    post = cache[f"blocks.{layer}.mlp.hook_post"][:, -1].float()  # (n, d_mlp)
    mlp = model.blocks[layer].mlp
    w_out = mlp.W_out.detach().float().to(post.device)  # (d_mlp, d_model)
    parts = post[:, :, None] * w_out[None]
    out = cache[f"blocks.{layer}.hook_mlp_out"][:, -1].float()
    bias = out - parts.sum(1)
    b_out = getattr(mlp, "b_out", None)
    expected = b_out.detach().float().to(bias.device) if b_out is not None else torch.zeros_like(bias[0])
    if not torch.allclose(bias, expected.expand_as(bias), atol=atol * max(1.0, float(out.abs().max()))):
        raise ValueError(f"block {layer}: hook_post x W_out does not reconstruct hook_mlp_out for "
                         f"{model.cfg.model_name!r} (a norm after the MLP?); leave it out of neurons=")
    return torch.cat([parts, bias[:, None]], dim=1)


def _split(model, cache, logits, pairs, readout, b_u, heads: bool, atol: float, ref_scale: Tensor | None = None,
           neurons: Sequence[int] = ()):
    """Contributions (n, term) of one batch (left-padded: the last column is every prompt's end),
    each term divided by ``ref_scale`` (the clean run's final-norm scale; default this run's own),
    the difference to this run's scale in the ``final_norm_scale`` term. Returns the contributions,
    the margin, the share of the final residual the components leave unexplained and the scale."""
    n_layers = model.cfg.n_layers
    a = torch.tensor([p[0] for p in pairs], device=readout.device)
    b = torch.tensor([p[1] for p in pairs], device=readout.device)
    r = (readout[:, b] - readout[:, a]).T  # (n, d_model)
    own = cache["ln_final.hook_scale"][:, -1].float().reshape(-1, 1).to(r.device)
    scale = own if ref_scale is None else ref_scale

    def share(x: Tensor) -> Tensor:
        return ((x[:, -1].float().to(r.device) / scale) * r).sum(-1)

    cols, parts = [share(cache["blocks.0.hook_resid_pre"])], [cache["blocks.0.hook_resid_pre"][:, -1].float()]
    for layer in range(n_layers):
        attn = cache[f"blocks.{layer}.hook_attn_out"]
        if heads:
            z = cache[f"blocks.{layer}.attn.hook_z"][:, -1].float()  # (n, heads, d_head)
            w_o = model.blocks[layer].attn.W_O.detach().float().to(z.device)  # (heads, d_head, d_model)
            per_head = torch.einsum("nhe,hed->nhd", z, w_o)
            bias = attn[:, -1].float() - per_head.sum(1)
            b_o = getattr(model.blocks[layer].attn, "b_O", None)
            expected = b_o.detach().float().to(bias.device) if b_o is not None else torch.zeros_like(bias[0])
            if not torch.allclose(bias, expected.expand_as(bias), atol=atol * max(1.0, float(attn.abs().max()))):
                raise ValueError(f"block {layer}: hook_z x W_O does not reconstruct hook_attn_out for "
                                 f"{model.cfg.model_name!r} (a norm after attention?); use heads=False")
            for h in range(per_head.shape[1]):
                cols.append(share(per_head[:, h][:, None]))
            cols.append(share(bias[:, None]))
        else:
            cols.append(share(attn))
        if layer in neurons:
            cols += list(((_per_neuron(model, cache, layer, atol).to(r.device) / scale[:, :, None])
                          * r[:, None]).sum(-1).T)
        else:
            cols.append(share(cache[f"blocks.{layer}.hook_mlp_out"]))
        parts += [attn[:, -1].float(), cache[f"blocks.{layer}.hook_mlp_out"][:, -1].float()]
    final = cache["ln_final.hook_in"][:, -1].float()
    rest = final - sum(parts)
    cols.append(share(rest[:, None]))
    cols.append((final.to(r.device) * r).sum(-1) * (1 / own - 1 / scale)[:, 0])  # the norm's rescaling
    out = torch.stack(cols, dim=1)
    last = logits[:, -1].float().to(r.device)
    margin = (last.gather(-1, b[:, None]) - last.gather(-1, a[:, None]))[:, 0]
    bias = (b_u[b] - b_u[a]) if b_u is not None else torch.zeros_like(margin)
    out = torch.cat([out, bias[:, None]], dim=1)
    total = out.sum(1)
    if not torch.allclose(total, margin, atol=atol * max(1.0, float(margin.abs().max()))):
        raise ValueError(f"the components do not add up to the margin for {model.cfg.model_name!r} (max error "
                         f"{float((total - margin).abs().max()):.3g}): its readout is not linear in these hooks")
    return out, margin, rest.norm(dim=-1) / final.norm(dim=-1), own


def margin_components(model, items: Sequence[Item], *, plan=None, vectors: Mapping[str, Tensor] | None = None,
                      strength: float = 1.0, norms: Mapping[str, float] | None = None, heads: bool = False,
                      neurons: Sequence[int] = (), chat_template: bool | None = None, batch_size: int = 8,
                      atol: float = 1e-3) -> ComponentAttribution:
    """Split each two-way item's answer margin (choice 1 minus choice 0, at the last prompt
    token) into the contributions of the embeddings (``resid_pre0``), every block's attention
    (or, with ``heads``, every head and the output bias) and MLP, the ``steering`` term (the
    residual the components do not account for: ~0 unsteered, the added vectors when steered)
    and the unembedding's bias (0 for most models). ``neurons``: blocks whose MLP is split into its
    neurons (``blocks.L.mlp.n<i>``: activation x its output row) and output bias (``blocks.L.mlp.bias``).
    With ``plan`` (or ``vectors`` [+ ``norms``], relative scale) at ``strength``, the steered run
    is split too. ``atol``: tolerance of the reconstruction checks, relative to the largest value."""
    from ..steer import steer

    items = list(items)
    if not items:
        raise ValueError("no items: pass at least one two-way Item")
    if plan is not None and vectors is not None:
        raise ValueError("pass plan= or vectors=, not both")
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
    runs = {"clean": [], "steered": []}
    for start in range(0, len(items), batch_size):
        chunk = list(range(start, min(start + batch_size, len(items))))
        batch = pad(model, [(prompts[i], 0) for i in chunk], padding_side="left")
        clean_scale = None
        for run in ("clean", "steered") if steering else ("clean",):
            with torch.no_grad(), (steering() if run == "steered" else contextlib.nullcontext()):
                logits, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask,
                                                     names_filter=names)
            if hasattr(model, "_last_hf_cache"):
                del model._last_hf_cache
            out, margin, rest, scale = _split(model, cache, logits, [pairs[i] for i in chunk], readout, b_u, heads,
                                              atol, ref_scale=clean_scale if run == "steered" else None,
                                              neurons=neurons)
            clean_scale = scale if run == "clean" else clean_scale
            if run == "clean" and float(rest.max()) > atol * 10:
                raise ValueError(f"without steering the components leave {float(rest.max()):.3g} of the final "
                                 f"residual unexplained for {model.cfg.model_name!r}; its blocks add more than "
                                 "hook_attn_out + hook_mlp_out (e.g. post-norms)")
            runs[run].append((out, margin))
    terms = ["resid_pre0"]
    for layer in range(model.cfg.n_layers):
        if heads:
            n_heads = model.cfg.n_heads
            terms += [f"blocks.{layer}.attn.head{h}" for h in range(n_heads)] + [f"blocks.{layer}.attn.bias"]
        else:
            terms.append(f"blocks.{layer}.attn")
        if layer in neurons:
            terms += [f"blocks.{layer}.mlp.n{i}" for i in range(model.cfg.d_mlp)] + [f"blocks.{layer}.mlp.bias"]
        else:
            terms.append(f"blocks.{layer}.mlp")
    terms += ["steering", "final_norm_scale", "unembed_bias"]

    def cat(run: str, k: int):
        return torch.cat([r[k] for r in runs[run]]) if runs[run] else None

    return ComponentAttribution(terms, cat("clean", 0), cat("clean", 1), cat("steered", 0), cat("steered", 1))
