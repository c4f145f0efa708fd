"""How a validation search scores its points on a model: ``point`` (one validation point from an
``EvalResult``), ``SharedInputs`` (one ``steer_lens.sweep.SweepInputs`` per item list, shared by every
candidate and round), and the scorers ``steer_lens.protocol.choose`` hands to the search rules:
``validation_scorer`` / ``validation_sweep`` (a plan at given strengths, every item) and
``parts_runner`` (some items per strength: the "flips" and "halving" rules); ``points_scorer`` and
``parts_from_items`` adapt a caller's ``score_items`` (tests, other backends). Re-exported by
``steer_lens.protocol``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from . import profiling
from .data import Item
from .evaluate import EvalResult, evaluate


def point(strength: float, result: EvalResult) -> dict:
    """One validation point: the numbers the ranking and the reports need."""
    preds = result.predictions
    shares = [preds.count(k) / len(preds) for k in range(max(preds) + 1)] if preds else []
    return {"strength": float(strength), "accuracy": result.accuracy, "ci_low": result.ci_low,
            "ci_high": result.ci_high, "n": result.n,
            "mean_margin": float(sum(result.margins) / max(1, len(result.margins))),
            "shares": shares, "pred_share": max(shares) if shares else None,
            "behaviour_prob": result.behaviour_prob}



class SharedInputs:
    """One ``steer_lens.sweep.SweepInputs`` per item list, made on first use: every candidate plan,
    round and strength scored on the same items reuses the unsteered residuals kept there."""

    def __init__(self, model, *, batch_size: int = 8, keep: int = 2):
        self.model, self.batch_size, self.keep = model, batch_size, keep
        self._inputs: dict[tuple, object] = {}

    def get(self, items: Sequence[Item]):
        from .sweep import SweepInputs

        key = tuple(it.id for it in items)
        if key not in self._inputs:
            self._inputs[key] = SweepInputs(self.model, items, batch_size=self.batch_size, keep=self.keep)
        return self._inputs[key]


def validation_scorer(model, items: Sequence[Item], plan, *, batch_size: int = 8, seed: int = 0,
                      positions: str = "all", use_sweep: bool = True,
                      inputs: SharedInputs | None = None) -> Callable[[float], dict]:
    """``score(strength) -> point`` on ``items`` steered by ``plan``. With ``use_sweep`` (positions
    "all" only) it also carries ``score.many(strengths) -> points`` (``validation_sweep``) for
    ``search_strength``'s ``score_many``. ``inputs``: shared sweep inputs (``SharedInputs``)."""

    def score(s: float) -> dict:
        profiling.note_points(1, len(items))
        return point(s, evaluate(model, items, plan=plan, strength=s, batch_size=batch_size, seed=seed,
                                 positions=positions))

    if use_sweep and positions == "all":
        score.many = validation_sweep(model, items, plan, batch_size=batch_size, seed=seed, inputs=inputs)
    return score


def validation_sweep(model, items: Sequence[Item], plan, *, batch_size: int = 8,
                     seed: int = 0, inputs: SharedInputs | None = None) -> Callable[[Sequence[float]], list[dict]]:
    """``score_many(strengths) -> points`` on ``items`` steered by ``plan`` at all positions, through
    ``steer_lens.sweep`` (the unsteered lower blocks once per call, or once for all calls sharing
    ``inputs``)."""
    from . import sweep as sweep_module

    def score_many(strengths: Sequence[float]) -> list[dict]:
        profiling.note_points(len(strengths), len(items))
        kw = {"inputs": inputs.get(items)} if inputs is not None else {}
        return [point(s, r) for s, r in zip(strengths, sweep_module.sweep(model, items, plan, strengths,
                                                                          batch_size=batch_size, seed=seed, **kw))]

    return score_many


def keep_levels(candidates: Mapping[object, object]) -> int:
    """How many lower-block residuals a shared SweepInputs keeps: one per distinct lowest steered
    block among the candidates (at most 4)."""
    from .sweep import first_steered_block, sweepable

    blocks = {first_steered_block(p) for p in candidates.values() if hasattr(p, "norms") and sweepable(p)}
    return min(4, max(1, len(blocks)))


def points_scorer(score_items, items, plan) -> Callable[[float], dict]:
    """``score(strength) -> point`` (with ``.many``) from a ``score_items(plan, items, strengths)``."""

    def score(s: float) -> dict:
        return score.many([s])[0]

    def many(strengths: Sequence[float]) -> list[dict]:
        profiling.note_points(len(strengths), len(items))
        return [point(s, r) for s, r in zip(strengths, score_items(plan, items, list(strengths)))]

    score.many = many
    return score


def parts_runner(model, items: Sequence[Item], *, batch_size: int, seed: int, positions: str,
                  use_sweep: bool, shared: SharedInputs | None):
    """``run(plan, [(strength, item indices), ...]) -> results`` on ``model``: one sweep per call
    (every request's items only, the lower blocks shared through ``shared``), or ``evaluate`` on
    each request's items."""
    from . import sweep as sweep_module

    items = list(items)
    own = SharedInputs(model, batch_size=batch_size, keep=1) if shared is None else shared

    def run(plan, requests):
        if use_sweep and positions == "all" and sweep_module.sweepable(plan):
            return sweep_module.sweep(model, items, plan, [s for s, _ in requests], batch_size=batch_size, seed=seed,
                                      inputs=own.get(items), only=[idx for _, idx in requests])
        return [evaluate(model, [items[i] for i in idx], plan=plan, strength=s, batch_size=batch_size, seed=seed,
                         positions=positions) for s, idx in requests]

    return run


def parts_from_items(score_items, items: Sequence[Item]):
    """``run(plan, requests)`` from a ``score_items(plan, items, strengths)`` (one call per request)."""
    items = list(items)

    def run(plan, requests):
        return [score_items(plan, [items[i] for i in idx], [s])[0] for s, idx in requests]

    return run


__all__ = ["SharedInputs", "keep_levels", "parts_from_items", "parts_runner", "point", "points_scorer",
           "validation_scorer", "validation_sweep"]
