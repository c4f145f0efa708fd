"""Token-level views of a steering vector.

* `token_projections`: each token's residual projected on the (unit) vector, per layer:
  where in the prompt the concept is already written ("layer pos" heatmap data).
* `steering_attribution`: gradient × activation of the answer's log-prob with respect to
  the steering perturbation δ = strength × norm × v added at each hook and real position.
  Summing the attributions over components and positions gives the directional derivative
  d/dα log p(answer | α δ) at α = 1, a first-order account of the steering effect.
* `answer_gradient`: the gradient of an answer's log-prob with respect to one vector added at
  every position of the unsteered model: which direction moves the answer fastest (the
  "readout" direction a steering vector must have a component along).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..activations import hook_name, resolve_layers
from ..tokens import Prompt, TokenBatch, batch_encode


@dataclass
class TokenProjection:
    """``values`` "layer pos": token residual · unit vector, for one prompt's tokens."""

    tokens: list[str]
    layers: list[int]
    values: Tensor


def token_projections(model, prompt: Prompt, vector: Float[Tensor, " d"] | Float[Tensor, "layer d"],
                      layers: Sequence[int] | None = None, *, hook: str = "resid_post",
                      chat_template: bool | None = None) -> TokenProjection:
    """Per-token, per-layer projection of ``prompt``'s residuals on ``vector`` (one vector for
    every layer, or one row per layer)."""
    layers = resolve_layers(model, range(model.cfg.n_layers) if layers is None else layers)
    names = [hook_name(model, hook, layer) for layer in layers]
    batch = batch_encode(model, [prompt], chat_template=chat_template)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, names_filter=names)
    vec = torch.as_tensor(vector, dtype=torch.float32).to(cache[names[0]].device)
    vec = vec.expand(len(layers), -1) if vec.dim() == 1 else vec
    if vec.shape[0] != len(layers):
        raise ValueError(f"{vec.shape[0]} vectors for {len(layers)} layers")
    unit = vec / vec.norm(dim=-1, keepdim=True)
    values = torch.stack([cache[n][0].float() @ unit[i] for i, n in enumerate(names)])
    tokens = [model.tokenizer.decode([t]) for t in batch.tokens[0].tolist()]
    return TokenProjection(tokens, layers, values)


def _deltas(model, batch: TokenBatch, vectors: Mapping[str, Tensor], strength: float,
            norms: Mapping[str, float] | None) -> dict[str, Tensor]:
    """Per hook: the perturbation "n pos d" (zero on padding) steering adds (relative scale)."""
    real = batch.attention_mask.bool()[..., None].float()
    out = {}
    for name, v in vectors.items():
        v = torch.as_tensor(v, dtype=torch.float32).flatten().to(real.device)
        size = float(norms[name]) if norms is not None else 1.0
        out[name] = (strength * size) * (v / v.norm()) * real
    return out


def _answer_logprob(model, batch: TokenBatch, deltas: Mapping[str, Tensor]) -> Tensor:
    """Summed log-prob of each row's span tokens with ``deltas`` added at their hooks."""
    hooks = [(name, (lambda x, hook=None, _d=d: x + _d.to(x.device, x.dtype))) for name, d in deltas.items()]
    with model.hooks(fwd_hooks=hooks):
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
    if hasattr(model, "_last_hf_cache"):
        del model._last_hf_cache
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok_lp = lp.gather(-1, batch.tokens[:, 1:, None])[..., 0]
    return (tok_lp * batch.span[:, 1:]).sum(1)


def _resolve(model, prompts, vectors, plan, norms, chat_template):
    if (plan is None) == (vectors is None):
        raise ValueError("pass exactly one of vectors= or plan=")
    if plan is not None:
        vectors, norms = plan.vectors, plan.norms
    if norms is None or any(h not in norms for h in vectors):
        from ..pipeline import target_norms

        norms = dict(norms or {})
        for h in vectors:  # template of this hook, e.g. "blocks.{layer}.hook_resid_post"
            if h not in norms:
                _, layer, rest = h.split(".", 2)
                norms.update(target_norms(model, prompts, [int(layer)], "blocks.{layer}." + rest, chat_template))
    return vectors, norms


def answer_logprob(model, prompts: Sequence[Prompt], vectors: Mapping[str, Tensor] | None = None,
                   strength: float = 1.0, *, plan=None, norms: Mapping[str, float] | None = None,
                   chat_template: bool | None = None) -> Float[Tensor, " n"]:
    """Summed completion log-prob of ``(prompt, completion)`` pairs under steering."""
    vectors, norms = _resolve(model, prompts, vectors, plan, norms, chat_template)
    batch = batch_encode(model, prompts, chat_template=chat_template)
    with torch.no_grad():
        return _answer_logprob(model, batch, _deltas(model, batch, vectors, strength, norms))


def answer_gradient(model, prompts: Sequence[tuple[str, str]], hooks: Sequence[str], *, per_token: bool = False,
                    chat_template: bool | None = None, batch_size: int = 8) -> dict[str, Float[Tensor, "n d"]]:
    """Per hook: d log p(completion | prompt) / d v for a vector v added at every real position
    of the unsteered model (the gradient summed over positions, as steering adds one vector
    everywhere). Its dot product with ``strength × norm × unit`` is the first-order change of
    the answer's log-prob; its mean over items is the direction that moves the answer fastest.
    ``per_token``: of the mean log-prob per completion token (``evaluate``'s scoring)."""
    prompts = list(prompts)
    unknown = [h for h in hooks if h not in model.hook_dict]
    if unknown:
        raise ValueError(f"the model has no hook point {unknown[0]!r}; use names like 'blocks.3.hook_resid_post'")
    out: dict[str, list[Tensor]] = {h: [] for h in hooks}
    for i in range(0, len(prompts), batch_size):
        batch = batch_encode(model, prompts[i:i + batch_size], chat_template=chat_template)
        real = batch.attention_mask.bool()[..., None].float()
        zeros = {h: torch.zeros(real.shape[0], 1, model.cfg.d_model, device=real.device, requires_grad=True)
                 for h in hooks}
        with torch.enable_grad():
            lp = _answer_logprob(model, batch, {h: z * real for h, z in zeros.items()})
            if per_token:
                lp = lp / batch.span[:, 1:].sum(1).clamp(min=1)
            grads = torch.autograd.grad(lp.sum(), list(zeros.values()))
        for h, g in zip(hooks, grads):
            out[h].append(g[:, 0].detach().float())
    return {h: torch.cat(v) for h, v in out.items()}


@dataclass
class Attribution:
    """Gradient × activation of the answer log-prob w.r.t. the steering perturbation.

    ``per_component[hook]`` "n d" (summed over positions), ``per_position[hook]`` "n pos"
    (summed over components), ``total`` "n" (all hooks), ``logprob_steered``/``_clean`` "n"
    (nats), ``tokens`` per prompt (padded rows trimmed)."""

    per_component: dict[str, Tensor]
    per_position: dict[str, Tensor]
    total: Tensor
    logprob_steered: Tensor
    logprob_clean: Tensor
    tokens: list[list[str]]


def steering_attribution(model, prompts: Sequence[tuple[str, str]], vectors: Mapping[str, Tensor] | None = None,
                         strength: float = 1.0, *, plan=None, norms: Mapping[str, float] | None = None,
                         chat_template: bool | None = None) -> Attribution:
    """Gradient × activation attribution of each answer's log-prob to the steering vector's
    components and positions (relative scale, all real positions steered, as ``plan.apply``)."""
    prompts = list(prompts)
    vectors, norms = _resolve(model, prompts, vectors, plan, norms, chat_template)
    batch = batch_encode(model, prompts, chat_template=chat_template)
    deltas = {h: d.clone().requires_grad_(True) for h, d in _deltas(model, batch, vectors, strength, norms).items()}
    with torch.enable_grad():
        lp = _answer_logprob(model, batch, deltas)
        grads = torch.autograd.grad(lp.sum(), list(deltas.values()))
    with torch.no_grad():
        clean = _answer_logprob(model, batch, {})
    attr = {h: g * d.detach() for (h, d), g in zip(deltas.items(), grads)}
    tokens = [[model.tokenizer.decode([t]) for t in row[: int(n)]]
              for row, n in zip(batch.tokens.tolist(), batch.lengths.tolist())]
    return Attribution(
        per_component={h: a.sum(1) for h, a in attr.items()},
        per_position={h: a.sum(2) for h, a in attr.items()},
        total=sum(a.sum((1, 2)) for a in attr.values()),
        logprob_steered=lp.detach(), logprob_clean=clean, tokens=tokens,
    )
