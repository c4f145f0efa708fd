"""The "flips" strength search (``StrengthSearch(strategy="flips")``; see ``steer_lens.protocol``):
the reference search's points, each run only on the items whose answer is not yet known.

The reference search scores every point (strength) on every validation item. Most items keep their
answer (predicted choice) over long stretches of strength; the search's decisions (the best point,
where to extend, which intervals to bisect) turn on the few that flip. So:

* a point outside the strengths scored so far (the largest grid step of each sign, an extension)
  runs every item;
* a point inside an interval whose ends are scored runs only the items whose answers differ at the
  two ends. An item with the same answer at both ends is taken to keep it inside, and its margin is
  interpolated linearly between the ends (a first-order margin model); the point records how many
  items it inferred (``"inferred"``);
* the coarse grid is scored from the outside in: the largest |strength| of each sign first, then
  the middle grid step of each interval, so most grid steps sit inside an interval;
* refinement midpoints always sit inside an interval;
* the chosen point is completed: its inferred items are run, and the choice is made again, until
  the best point over all candidates was run on every item. The reported validation accuracy is
  therefore measured, never inferred.

The points visited are the reference search's, with the same accuracies, whenever no item changes
its answer twice inside one interval; otherwise an inferred point can differ from the reference's
(``analyses/selection_equivalence.py`` measures how often on real rows). ``choose`` calls
``choose_flips``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from . import profiling
from .data import Item
from .evaluate import EvalResult, bootstrap_ci
from .protocol import Choice, StrengthSearch, point, rank, search_strength

# run(plan, [(strength, item indices), ...]) -> one result per request, over those items in that order
PartsRunner = Callable[[object, Sequence[tuple[float, list[int]]]], list[EvalResult]]


class FlipScorer:
    """``score(strength) -> point`` and ``score.many(strengths) -> points`` for ``search_strength``
    on one plan, keeping every item's answer at every strength scored (module doc).

    ``run(requests) -> results``: each request (strength, item indices) run on those items;
    ``zero``: the unsteered result on every item."""

    def __init__(self, run: Callable[[Sequence[tuple[float, list[int]]]], list[EvalResult]],
                 items: Sequence[Item], zero: EvalResult, seed: int = 0):
        if len(zero.predictions) != len(items):
            raise ValueError(f"the flips search needs the unsteered result on the same {len(items)} items, "
                             f"got one on {len(zero.predictions)}")
        self.run, self.items, self.seed = run, list(items), seed
        self.known: dict[float, EvalResult] = {0.0: zero}
        self.inferred: dict[float, list[int]] = {0.0: []}

    def __call__(self, s: float) -> dict:
        return self.many([s])[0]

    def many(self, strengths: Sequence[float]) -> list[dict]:
        todo = sorted({round(float(s), 6) for s in strengths} - set(self.known))
        while todo:
            level = self._next_level(todo)
            requests = []
            for s in level:
                lo, hi = self._bracket(s)
                if lo is None or hi is None:
                    idx = list(range(len(self.items)))
                else:
                    a, b = self.known[lo].predictions, self.known[hi].predictions
                    idx = [i for i in range(len(self.items)) if a[i] != b[i]]
                requests.append((s, idx, lo, hi))
            asked = [(s, idx) for s, idx, _, _ in requests if idx]
            for s, idx in asked:
                profiling.note_points(1, len(idx))
            results = iter(self.run(asked) if asked else [])
            for s, idx, lo, hi in requests:
                self._store(s, idx, next(results) if idx else None, lo, hi)
            todo = [s for s in todo if s not in self.known]
        return [self.point(s) for s in strengths]

    def point(self, s: float) -> dict:
        s = round(float(s), 6)
        return {**point(s, self.known[s]), "inferred": len(self.inferred[s])}

    def complete(self, s: float) -> dict:
        """Run the items inferred at ``s``; returns the point measured on every item."""
        s = round(float(s), 6)
        idx = self.inferred[s]
        if idx:
            profiling.note_points(1, len(idx))
            part = self.run([(s, idx)])[0]
            self._replace(s, idx, part)
        return self.point(s)

    def _bracket(self, s: float) -> tuple[float | None, float | None]:
        below = [k for k in self.known if k < s]
        above = [k for k in self.known if k > s]
        return (max(below) if below else None), (min(above) if above else None)

    def _next_level(self, todo: Sequence[float]) -> list[float]:
        """One point per interval of the known strengths that holds points to score: the outermost
        one in an open interval, the middle one in a closed interval."""
        groups: dict[tuple, list[float]] = {}
        for s in todo:
            groups.setdefault(self._bracket(s), []).append(s)
        level = []
        for (lo, hi), group in groups.items():
            group = sorted(group)
            if lo is None:
                level.append(group[0])
            elif hi is None:
                level.append(group[-1])
            else:
                level.append(group[len(group) // 2])
        return level

    def _store(self, s: float, idx: list[int], part: EvalResult | None, lo, hi) -> None:
        n = len(self.items)
        if lo is None or hi is None:  # run on every item
            self.known[s], self.inferred[s] = part, []
            return
        a, b = self.known[lo], self.known[hi]
        t = (s - lo) / (hi - lo)
        measured = set(idx)
        inferred = [i for i in range(n) if i not in measured]
        correct = [bool(a.correct[i]) for i in range(n)]
        margins = [(1 - t) * a.margins[i] + t * b.margins[i] for i in range(n)]
        preds = list(a.predictions)
        self.known[s] = self._result(s, correct, margins, preds, a)
        self.inferred[s] = inferred
        if part is not None:
            self._replace(s, idx, part)

    def _replace(self, s: float, idx: list[int], part: EvalResult) -> None:
        old = self.known[s]
        correct, margins, preds = list(old.correct), list(old.margins), list(old.predictions)
        for j, i in enumerate(idx):
            correct[i], margins[i], preds[i] = bool(part.correct[j]), float(part.margins[j]), int(part.predictions[j])
        done = set(idx)
        self.inferred[s] = [i for i in self.inferred.get(s, []) if i not in done]
        full = not self.inferred[s]
        self.known[s] = self._result(s, correct, margins, preds, old,
                                     behaviour_prob=part.behaviour_prob if full and len(idx) == len(self.items) else None)

    def _result(self, s, correct, margins, preds, like: EvalResult, behaviour_prob=None) -> EvalResult:
        lo, hi = bootstrap_ci(correct, seed=self.seed)
        return EvalResult(accuracy=float(np.mean(correct)), ci_low=lo, ci_high=hi, n=len(correct),
                          majority_rate=like.majority_rate, accuracy_sum=float("nan"),
                          ids=[it.id for it in self.items], correct=correct, margins=[float(m) for m in margins],
                          predictions=preds, behaviour_prob=behaviour_prob, meta={"strength": s})


def choose_flips(run: PartsRunner, items: Sequence[Item], candidates: Mapping[object, object],
                 search: StrengthSearch, *, zero: EvalResult, seed: int = 0) -> Choice:
    """The "flips" rule (module doc) over ``candidates`` on ``items``: each candidate's reference
    search through a ``FlipScorer``; then the best point over all candidates (ties: the earlier
    candidate) is completed on every item until the best is a measured point."""
    order = list(candidates)
    scorers = {k: FlipScorer(lambda requests, plan=candidates[k]: run(plan, requests), items, zero, seed)
               for k in order}
    zp = scorers[order[0]].point(0.0)
    with profiling.phase("search"):
        found = {k: search_strength(scorers[k], search, zero=zp, score_many=scorers[k].many) for k in order}

    def winner():
        return max(order, key=lambda k: (rank(found[k][0]), -order.index(k)))

    with profiling.phase("complete"):
        while True:
            key = winner()
            best = found[key][0]
            if not best.get("inferred"):
                break
            done = scorers[key].complete(best["strength"])
            curve = [done if p["strength"] == best["strength"] else p for p in found[key][1]]
            found[key] = (max(curve, key=rank), curve)
    key = winner()
    b = found[key][0]
    return Choice(key=key, strength=b["strength"], best=b, curves={k: found[k][1] for k in order})


__all__ = ["FlipScorer", "choose_flips"]
