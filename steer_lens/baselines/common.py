"""Shared pieces of the baselines: pooled target activations, plan assembly, and a
train-only layer choice (held-out separation of contrast pairs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..activations import capture, hook_name
from ..pipeline import target_norms
from ..plan import SteeringPlan, model_card
from ..tokens import Prompt


def pooled_activations(model, positives: Sequence[Prompt], negatives: Sequence[Prompt], layers: Sequence[int], *,
                       hook: str = "resid_post", chat_template: bool | None = None,
                       batch_size: int = 16, position: str = "mean") -> tuple[Tensor, Tensor]:
    """Activations "n layer d" of positives and of negatives: ``position="mean"`` over the
    completion span (ExpertSteer's pooling) or ``"last"``, the completion's last token (CAA's
    answer-letter token for A/B items)."""
    acts = capture(model, list(positives) + list(negatives), layers=layers, hook=hook, position=position,
                   chat_template=chat_template, batch_size=batch_size).tensor
    return acts[: len(positives)], acts[len(positives):]


def baseline_plan(model, vectors: Mapping[str, Float[Tensor, " d"]], norms: Mapping[str, float], *,
                  method: str, settings: dict | None = None) -> SteeringPlan:
    """A SteeringPlan with unit vectors (no expert, no layer pairs)."""
    unit = {}
    for name, v in vectors.items():
        v = v.detach().float().flatten()
        if v.shape[0] != model.cfg.d_model or float(v.norm()) == 0 or not torch.isfinite(v).all():
            raise ValueError(f"{method}: bad vector for {name} (width {v.shape[0]}, norm {float(v.norm())})")
        unit[name] = v / v.norm()
    return SteeringPlan(vectors=unit, pairs=[], mi=None, expert={"name": method}, target=model_card(model),
                        norms={k: float(norms[k]) for k in unit}, settings={"method": method, **(settings or {})})


def hook_norms(model, prompts: Sequence[Prompt], layers: Sequence[int], hook: str,
               chat_template: bool | None) -> dict[str, float]:
    """Median residual norm at each hook (first token excluded), as ExpertSteer computes it."""
    return target_norms(model, prompts, list(layers), hook, chat_template)


def choose_layer(pos: Float[Tensor, "n layer d"], neg: Float[Tensor, "n layer d"], layers: Sequence[int], *,
                 candidates: Sequence[int] | None = None, seed: int = 0) -> tuple[int, dict[int, float]]:
    """Pick the layer whose mean-difference direction (fitted on one half of the train pairs)
    best ranks positive above negative on the other half (both ways, averaged). Train only."""
    n = pos.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(pos.device)
    halves = (perm[: n // 2], perm[n // 2:])
    scores: dict[int, float] = {}
    for i, layer in enumerate(layers):
        if candidates is not None and layer not in candidates:
            continue
        acc = []
        for a, b in (halves, halves[::-1]):
            d = pos[a, i].mean(0) - neg[a, i].mean(0)
            acc.append(float(((pos[b, i] - neg[b, i]) @ d > 0).float().mean()))
        scores[layer] = sum(acc) / 2
    if not scores:
        raise ValueError(f"no candidate layer among {list(layers)}")
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


def shortlist_layers(scores: Mapping[int, float], k: int, ties: str = "spread") -> list[int]:
    """The ``k`` best layers by train score (e.g. ``choose_layer``'s), in score order.

    ``ties="spread"``: layers tied at the cut-off score are not broken by index. A saturated
    score (every layer separates the train pairs perfectly, as a label contrast whose answer
    tokens differ does) says nothing about depth, and "lowest index first" would shortlist the
    first layers of the window only. The free slots go to tied layers spread evenly over the tied
    set (the members at quantiles (i + 0.5) / slots, in depth order). ``ties="lowest"``: the
    lowest layers first (the rule before; kept to reproduce old runs)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ties not in ("spread", "lowest"):
        raise ValueError(f"ties must be 'spread' or 'lowest', got {ties!r}")
    order = sorted(scores, key=lambda layer: (-scores[layer], layer))
    if len(order) <= k or ties == "lowest":
        return order[:k]
    cut = scores[order[k - 1]]
    above = [layer for layer in order if scores[layer] > cut]
    tied = sorted(layer for layer in order if scores[layer] == cut)
    slots = k - len(above)
    return above + [tied[int((i + 0.5) * len(tied) / slots)] for i in range(slots)]


def resid_hook(model, layer: int, hook: str = "resid_post") -> str:
    return hook_name(model, hook, layer)
