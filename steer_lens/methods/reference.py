"""Reference rows: the models as they are, and the calibration baseline (no steering)."""

from __future__ import annotations

from .. import ledger
from ..data import origin
from ..evaluate import EvalResult
from ..protocol import point
from .base import Context, Reference
from .registry import register


@register
class Unsteered(Reference):
    """The target model as it is, scored once on TEST."""

    name = "unsteered"
    scope = "test"

    def run(self, ctx: Context) -> dict:
        return {**ctx.test(ctx.target), "strength": 0.0, "layers": []}


@register
class ExpertUnsteered(Reference):
    """The expert model itself on the same TEST items (what a user could run instead of steering)."""

    name = "expert_unsteered"
    needs_expert = True
    alternative = True
    scope = "test"
    steered_model = "expert"

    def run(self, ctx: Context) -> dict:
        return {**ctx.test(ctx.expert), "strength": 0.0, "layers": []}


@register
class Calibration(Reference):
    """No steering: the target's unsteered TEST margins plus one bias, the bias best on the unsteered
    VALIDATION margins (two-way sets only; ``baselines.calibration``). A steering gain it does not beat
    is a shift of the answer margins that needs no model internals."""

    name = "calibration"

    def applies(self, dataset) -> bool:
        return all(len(it.choices) == 2 for it in dataset.split("validation"))

    def run(self, ctx: Context) -> dict:
        from ..baselines import calibrated, fit_bias, signed_margins

        if not all(len(it.choices) == 2 for it in ctx.val):
            raise ValueError(f"calibration needs two-way items; {ctx.dataset.name!r} has more choices")
        u = ctx.row("unsteered")
        r = ctx.val0(ctx.target)
        bias = fit_bias(signed_margins(r, ctx.val), [it.answer for it in ctx.val])
        # the test answers are implied by the unsteered row (two-way): no model runs on TEST, but the
        # row is a scoring of it, so the ledger gets its line (and a confirm split needs a locked run)
        cal = calibrated(EvalResult.from_dict(u), None, bias)
        scored = origin(ctx.test_items())
        if scored:
            ledger.check_allowed(*scored[:2])
            ledger.record(*scored, n=len(u["ids"]), model=u["model"], source="calibration")
        return {**cal.to_dict(), "domain": ctx.domain, "model": u["model"], "strength": 0.0, "layers": [],
                "bias": bias, "val_curve": [{**point(0.0, calibrated(r, ctx.val, bias)), "strength": 0.0}],
                "n_val": len(ctx.val)}
