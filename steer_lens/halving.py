"""The "halving" strength search (``StrengthSearch(strategy="halving")``; see ``steer_lens.protocol``):
successive halving over validation items and candidate plans. ``choose`` calls ``choose_halving``;
``merge_results`` joins the scores of two disjoint item sets into one result."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from . import profiling
from .data import Item
from .evaluate import EvalResult, bootstrap_ci
from .protocol import Choice, StrengthSearch, _refine_gaps, change, point, rank


def merge_results(a: EvalResult, b: EvalResult, seed: int = 0) -> EvalResult:
    """The result on ``a``'s items followed by ``b``'s, from the two parts' per-item lists (as
    ``evaluate`` on the joined list: accuracy, its bootstrap CI, margins, predictions, the mean
    behaviour probability)."""
    correct = list(a.correct) + list(b.correct)
    lo, hi = bootstrap_ci(correct, seed=seed)
    n = a.n + b.n
    bp = None
    if a.behaviour_prob is not None and b.behaviour_prob is not None:
        bp = (a.behaviour_prob * a.n + b.behaviour_prob * b.n) / n
    return EvalResult(accuracy=float(np.mean(correct)), ci_low=lo, ci_high=hi, n=n,
                      majority_rate=a.majority_rate, accuracy_sum=(a.accuracy_sum * a.n + b.accuracy_sum * b.n) / n,
                      ids=list(a.ids) + list(b.ids), correct=correct, margins=list(a.margins) + list(b.margins),
                      predictions=list(a.predictions) + list(b.predictions), behaviour_prob=bp,
                      meta={**a.meta, "merged": True})


def choose_halving(run: Callable[[object, Sequence[tuple[float, Sequence[int]]]], list[EvalResult]],
                   items: Sequence[Item], candidates: Mapping[object, object], search: StrengthSearch, *,
                   zero: dict | None = None, seed: int = 0) -> Choice:
    """The "halving" rule (module doc) over ``candidates`` on ``items``; ``run(plan, [(strength,
    item indices), ...]) -> results`` (``steer_lens.scorers.parts_runner``, as for the "flips" rule)
    scores a plan on the screening items (the first ``search.screen_fraction``, at least
    ``search.screen_min``) or on the rest. Every point in the returned curves is scored on every
    item; ``Choice.screened`` holds the screening-only points."""
    n = len(items)
    order = list(candidates)
    m = min(n, max(search.screen_min, math.ceil(search.screen_fraction * n)))
    parts = {"screen": list(range(m)), "rest": list(range(m, n))}
    got: dict[object, dict[float, dict[str, EvalResult]]] = {k: {} for k in order}
    zero_parts: dict[str, EvalResult] = {}

    def score_part(key, part: str, strengths) -> None:
        todo = [s for s in dict.fromkeys(round(float(s), 6) for s in strengths)
                if part not in got[key].get(s, {}) and s != 0]
        if todo and parts[part]:
            profiling.note_points(len(todo), len(parts[part]))
            for s, r in zip(todo, run(candidates[key], [(s, parts[part]) for s in todo])):
                got[key].setdefault(s, {})[part] = r

    def zero_part(part: str) -> EvalResult | None:
        if part not in zero_parts and parts[part]:
            profiling.note_points(1, len(parts[part]))
            zero_parts[part] = run(candidates[order[0]], [(0.0, parts[part])])[0]
        return zero_parts.get(part)

    def part_of(key, s, part, score: bool = True):
        if s == 0:
            return zero_part(part) if score else zero_parts.get(part)
        return got[key].get(s, {}).get(part)

    def complete(key, s) -> bool:
        return s == 0 or all(p in got[key].get(s, {}) for p in parts if parts[p])

    def full(key, s) -> dict:
        if s == 0:
            return zero
        r = got[key][s]
        return point(s, merge_results(r["screen"], r["rest"], seed) if "rest" in r else r["screen"])

    def screened(key, s) -> dict:
        return point(s, part_of(key, s, "screen"))

    def best_full(key) -> dict:
        return max((full(key, s) for s in [0.0, *got[key]] if complete(key, s)), key=rank)

    def agree(key, a, b) -> bool:  # same answer on every item scored at both ends
        ends = [(part_of(key, a, p, False), part_of(key, b, p, False)) for p in parts if parts[p]]
        return all(x.predictions == y.predictions for x, y in ends if x is not None and y is not None)

    def finalize(key) -> None:  # complete the screened points among the candidate's best `finalists`
        best = sorted([0.0, *got[key]], key=lambda s: rank(screened(key, s)), reverse=True)
        score_part(key, "rest", best[: search.finalists])

    signs = (1.0, -1.0) if search.signed else (1.0,)
    grid = [sign * s for s in search.grid for sign in signs]
    ladder = sorted(search.extend)
    with profiling.phase("zero"):
        zero_part("screen")
        if zero is None:
            zero = point(0.0, merge_results(zero_part("screen"), zero_part("rest"), seed) if parts["rest"]
                         else zero_part("screen"))
    with profiling.phase("screen"):
        for key in order:
            score_part(key, "screen", grid)
        for key in order:  # extend (both signs if signed) while no strength changed an answer
            while search.extend_flat:
                top = max(abs(s) for s in got[key])
                nxt = [s for s in ladder if s > top]
                if not nxt or not all(agree(key, s, 0.0) for s in got[key]):
                    break
                score_part(key, "screen", [sign * nxt[0] for sign in signs])
    ranked = sorted(order, key=lambda k: (max(rank(screened(k, s)) for s in got[k]), -order.index(k)), reverse=True)
    survivors = [k for k in order if k in ranked[: max(1, math.ceil(search.keep * len(order)))]]
    with profiling.phase("complete"):
        for key in survivors:
            finalize(key)
    with profiling.phase("extend"):
        for key in survivors:  # extend upward while the best point sits on the largest |strength| tried
            while True:
                b = best_full(key)["strength"]
                top = max(abs(s) for s in got[key])
                nxt = [s for s in ladder if s > top]
                if b == 0 or abs(b) < top or not nxt:
                    break
                s = (1.0 if b > 0 else -1.0) * nxt[0]
                score_part(key, "screen", [s])
                score_part(key, "rest", [s])
    key = max(survivors, key=lambda k: (rank(best_full(k)), -order.index(k)))
    for r in range(search.refine_rounds):
        tried = sorted([0.0, *got[key]])
        gaps = _refine_gaps(tried, tried.index(round(best_full(key)["strength"], 6)),
                            lambda g: change(screened(key, g[0]), screened(key, g[1])))
        mids = [round((lo + hi) / 2, 6) for lo, hi in sorted(gaps) if not agree(key, lo, hi)]
        mids = [s for s in mids if s not in got[key]]
        if not mids:
            break
        with profiling.phase(f"refine {r + 1}"):
            score_part(key, "screen", mids)
            finalize(key)
    best_key = max(survivors, key=lambda k: (rank(best_full(k)), -order.index(k)))
    b = best_full(best_key)
    curves = {k: sorted((full(k, s) for s in [0.0, *got[k]] if complete(k, s)), key=lambda p: p["strength"])
              for k in order}
    screens = {k: sorted((screened(k, s) for s in [0.0, *got[k]]), key=lambda p: p["strength"]) for k in order}
    return Choice(key=best_key, strength=b["strength"], best=b, curves=curves, screened=screens)


__all__ = ["choose_halving", "merge_results"]
