"""The target's own directions: CAA, the label direction, self-RFM and ITI (no expert)."""

from __future__ import annotations

from .base import Context, Method
from .registry import register


class LayerMethod(Method):
    """A direction of the target's own activations at one layer. TRAIN shortlists
    ``rules.layer_shortlist`` layers of the middle half by a split-half separation score (ties at
    the cut-off spread over depth); VALIDATION then chooses the layer and the strength together."""

    contrast_kind = "correct"

    def fit(self, ctx: Context, layer: int, acts, layers):
        raise NotImplementedError

    def scores(self, ctx: Context) -> dict[int, float]:
        from ..baselines import choose_layer

        def compute():
            acts, layers = ctx.target_acts(self.contrast_kind)
            L = ctx.target.cfg.n_layers
            return choose_layer(*acts, layers, candidates=range(L // 4, 3 * L // 4 + 1))[1]
        return ctx.memo(("layer_scores", self.contrast_kind), compute)

    def candidates(self, ctx: Context) -> dict:
        from ..baselines import shortlist_layers

        def compute():
            acts, layers = ctx.target_acts(self.contrast_kind)
            short = shortlist_layers(self.scores(ctx), ctx.rules.layer_shortlist, "spread")
            return {layer: self.fit(ctx, layer, acts, layers) for layer in short}
        return ctx.memo(("candidates", self.name), compute)

    def plan_at(self, ctx: Context, row):
        acts, layers = ctx.target_acts(self.contrast_kind)
        (layer,) = row["layers"]
        return self.fit(ctx, layer, acts, layers)

    def run(self, ctx: Context) -> dict:
        row = super().run(ctx)
        first = next(iter(self.candidates(ctx)))
        row["layer_val"] = row.pop("candidate_val", {str(first): row["val_curve"]})
        row["layer_scores"] = self.scores(ctx)
        return row


@register
class CAA(LayerMethod):
    """Contrastive Activation Addition (Rimsky et al. 2024): the mean difference of the target's span-mean
    activations, right minus wrong completion of each TRAIN item, at one layer chosen on VALIDATION."""

    name = "caa"

    def fit(self, ctx, layer, acts, layers):
        from ..baselines import fit_caa

        return fit_caa(ctx.target, *ctx.contrast(self.contrast_kind), layer, acts=acts, acts_layers=layers)


@register
class LabelCAA(CAA):
    """The target's own label direction: CAA on the label contrast (choice 1 minus choice 0 on every TRAIN
    item); signed strengths searched on VALIDATION, since the useful sign depends on the model's bias."""

    name = "label_caa"
    contrast_kind = "label"
    signed = True


@register
class SelfRFM(LayerMethod):
    """Self-RFM: the Recursive Feature Machine's top AGOP eigenvector on the target's own activations
    (right vs wrong completion, TRAIN), at one layer chosen on VALIDATION. ExpertSteer without the expert."""

    name = "self_rfm"

    def fit(self, ctx, layer, acts, layers):
        from ..baselines import fit_self_rfm

        return fit_self_rfm(ctx.target, *ctx.contrast(self.contrast_kind), layer, acts=acts, acts_layers=layers)


@register
class ITI(Method):
    """Inference-Time Intervention (Li et al. 2023): the ``rules.iti_heads`` attention heads whose TRAIN
    probe separates right from wrong completions best, each shifted along its probe's mass-mean
    direction; the strength chosen on VALIDATION."""

    name = "iti"

    def candidates(self, ctx: Context) -> dict:
        from ..baselines import fit_iti

        return ctx.memo(("candidates", self.name),
                        lambda: {"iti": fit_iti(ctx.target, *ctx.contrast("correct"), k=ctx.rules.iti_heads)})
