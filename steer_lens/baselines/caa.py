"""Contrastive Activation Addition (Rimsky et al. 2024): the mean difference of the target's
own span-mean activations, positives - negatives, at one target layer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..tokens import Prompt
from .common import baseline_plan, hook_norms, pooled_activations, resid_hook


def fit_caa(model, positives: Sequence[Prompt], negatives: Sequence[Prompt], layer: int, *,
            hook: str = "resid_post", chat_template: bool | None = None,
            acts: tuple[Tensor, Tensor] | None = None, acts_layers: Sequence[int] | None = None,
            position: str = "mean"):
    """SteeringPlan with the unit mean-difference vector at ``layer``. ``acts``: precomputed
    (pos, neg) "n layer d" activations over ``acts_layers`` (avoids a second capture).
    ``position``: "mean" over the completion span, or "last" (the answer-letter token of A/B
    items: CAA's own recipe, whose steering then covers the positions after the prompt,
    ``evaluate(..., positions="generated")``)."""
    if acts is None:
        acts, acts_layers = pooled_activations(model, positives, negatives, [layer], hook=hook,
                                               chat_template=chat_template, position=position), [layer]
    i = list(acts_layers).index(layer)
    diff = acts[0][:, i].mean(0) - acts[1][:, i].mean(0)
    name = resid_hook(model, layer, hook)
    norms = hook_norms(model, list(positives) + list(negatives), [layer], hook, chat_template)
    return baseline_plan(model, {name: diff}, norms, method="caa",
                         settings={"layer": layer, "hook": hook, "position": position})
