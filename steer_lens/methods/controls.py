"""Matched random controls: what a method's gain is judged against.

A control selects nothing of its own. It reads its matched method's TEST row (strength and
layers), refits that method's plan (fits are seeded), and replaces the direction by a random one
at the same hooks, norms and strength (``baselines.random_plan``, seed 0). A field method's
control is its shuffled-label field (``field.shuffled_field_plan``: the same RFMs refitted to
shuffled labels), not a random vector.
"""

from __future__ import annotations

from .base import Context, Method


class RandomControl(Method):
    """Random unit vectors at the matched method's hooks, norms and selected strength."""

    control = None
    reference = True

    def __init__(self, matched: Method, name: str):
        self.matched_method = matched
        self.matched = matched.name
        self.name = name
        self.needs_expert = matched.needs_expert
        self.steered_model = matched.steered_model
        self.base_method = matched.base_method

    @property
    def doc(self) -> str:
        return (f"Matched random control of {self.matched}: random unit vectors (seed 0) at its hooks, norms "
                "and validation-chosen strength; shuffled-label RFMs for a field method. Selects nothing.")

    def run(self, ctx: Context) -> dict:
        from ..baselines import random_plan
        from ..field import shuffled_field_plan

        matched_row = ctx.row(self.matched)
        plan = self.matched_method.plan_of(ctx, matched_row)
        rnd = shuffled_field_plan(plan, seed=0) if plan.mode == "field" else random_plan(plan, seed=0)
        return ctx.finish(self.model(ctx), rnd, matched_row["strength"], self.base_method, val_curve=[],
                          matched_to=self.matched)

    def plan_of(self, ctx, row):
        from ..baselines import random_plan
        from ..field import shuffled_field_plan

        plan = self.matched_method.plan_of(ctx, ctx.row(self.matched))
        return shuffled_field_plan(plan, seed=0) if plan.mode == "field" else random_plan(plan, seed=0)


def control_for(method: Method) -> RandomControl:
    """The control registered with ``method``: named ``method.control`` or ``random_<name>``."""
    name = method.control if method.control not in (None, "auto") else f"random_{method.name}"
    return RandomControl(method, name)


__all__ = ["RandomControl", "control_for"]
