"""PCA of paired differences (repeng's ``pca_diff`` recipe), written against the method registry
alone: one function for the direction, one registered class for the recipe."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .registry import register
from .target import LayerMethod


def pca_direction(pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"]) -> Float[Tensor, " d"]:
    """The first principal component of the paired differences ``pos[i] - neg[i]`` (centred, as
    repeng's PCA does), a unit vector oriented so that positives project above their negatives on
    average."""
    if pos.shape != neg.shape or pos.ndim != 2 or pos.shape[0] < 2:
        raise ValueError(f"pca_direction needs paired (n, d) activations with n >= 2, got {tuple(pos.shape)} "
                         f"and {tuple(neg.shape)}")
    diff = (pos - neg).double()
    centred = diff - diff.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    v = vh[0]
    if float((diff @ v).mean()) < 0:
        v = -v
    return (v / v.norm()).float()


@register
class PCADiff(LayerMethod):
    """PCA direction (repeng's recipe): the first principal component of the paired differences
    (right minus wrong completion of the same TRAIN item, span-mean activations), oriented towards the
    right answers, at one target layer; layer shortlisted on TRAIN and chosen with the strength on
    VALIDATION, as for CAA."""

    name = "pca"

    def fit(self, ctx, layer, acts, layers):
        from ..baselines.common import baseline_plan, hook_norms, resid_hook

        pos, neg = ctx.contrast(self.contrast_kind)
        i = list(layers).index(layer)
        vec = pca_direction(acts[0][:, i], acts[1][:, i])
        hook = resid_hook(ctx.target, layer)
        norms = hook_norms(ctx.target, list(pos) + list(neg), [layer], "resid_post", None)
        return baseline_plan(ctx.target, {hook: vec}, norms, method="pca", settings={"layer": layer})
