"""Layer ablation of a SteeringPlan: which layer pairs carry the effect?

Conditions: "unsteered", "full" plan, "only <hook>" (that pair's vector alone) and
"without <hook>" (every other pair) at the same strength. The metric is any callable
``metric(model) -> float`` evaluated inside the steering context, e.g. `margin_metric`.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence

import torch


def subplan(plan, hooks: Sequence[str]):
    """A copy of ``plan`` keeping only ``hooks`` (norms, pairs filtered to match)."""
    from ..plan import SteeringPlan

    unknown = [h for h in hooks if h not in plan.vectors]
    if unknown:
        raise ValueError(f"hooks {unknown} are not in the plan (it has {list(plan.vectors)})")
    layers = {int(h.split(".")[1]) for h in hooks}
    return SteeringPlan(**{**plan.__dict__, "vectors": {h: plan.vectors[h] for h in hooks},
                           "pairs": [p for p in plan.pairs if p.target_layer in layers]})


def _scores(model, items, chat_template):
    try:
        from ..evaluate import score_items
    except ImportError:  # evaluation module not available: sum log-prob per choice
        from .attribution import answer_logprob

        out = []
        for it in items:
            pairs = [(it.prompt(), c) for c in it.completions()]
            lp = answer_logprob(model, pairs, {}, 0.0, norms={}, chat_template=chat_template)
            out.append((lp.tolist(), [1] * len(pairs)))
        return out
    return score_items(model, items, chat_template=chat_template)


def _margins(model, items, chat_template) -> list[float]:
    margins = []
    for it, (sums, counts) in zip(items, _scores(model, items, chat_template)):
        mean = [s / max(c, 1) for s, c in zip(sums, counts)]
        margins.append(mean[it.answer] - max(m for k, m in enumerate(mean) if k != it.answer))
    return margins


def margin_metric(items, chat_template: bool | None = None) -> Callable[[object], float]:
    """Mean over items of (correct choice − best wrong) mean per-token log-prob (nats)."""
    return lambda model: statistics.fmean(_margins(model, items, chat_template))


def accuracy_metric(items, chat_template: bool | None = None) -> Callable[[object], float]:
    """Share of items whose correct choice has the highest mean per-token log-prob."""
    return lambda model: statistics.fmean(m > 0 for m in _margins(model, items, chat_template))


def answer_metrics(items, chat_template: bool | None = None) -> Callable[[object], dict]:
    """Both ``margin`` (first, the headline) and ``accuracy`` from one scoring pass."""
    def metric(model) -> dict:
        m = _margins(model, items, chat_template)
        return {"margin": statistics.fmean(m), "accuracy": statistics.fmean(x > 0 for x in m)}
    return metric


def layer_ablation(model, plan, metric: Callable[[object], float | dict], strength: float = 1.0) -> list[dict]:
    """Rows ``condition, hooks, target_layers, metric, vs_unsteered, vs_full`` for every condition.

    A metric returning a dict adds one column per key; its first value is ``metric``."""
    hooks = list(plan.vectors)
    conditions: list[tuple[str, list[str] | None]] = [("unsteered", None), ("full", hooks)]
    conditions += [(f"only {h}", [h]) for h in hooks]
    if len(hooks) > 1:
        conditions += [(f"without {h}", [g for g in hooks if g != h]) for h in hooks]
    rows = []
    for name, keep in conditions:
        ctx = contextlib.nullcontext() if keep is None else subplan(plan, keep).apply(model, strength)
        with ctx, torch.no_grad():
            value = metric(model)
        extra = value if isinstance(value, dict) else {}
        rows.append({"condition": name, "hooks": keep or [],
                     "target_layers": [int(h.split(".")[1]) for h in keep or []],
                     "metric": float(next(iter(extra.values()))) if extra else float(value), **extra})
    base, full = rows[0]["metric"], rows[1]["metric"]
    for r in rows:
        r["vs_unsteered"], r["vs_full"] = r["metric"] - base, r["metric"] - full
    return rows
