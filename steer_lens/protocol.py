"""The evaluation protocol, in one place: fit on TRAIN, choose on VALIDATION, score TEST once.

Every comparison in steer-lens (the CLI's ``evaluate``, the demo, ``analyses/main_results.py``,
the dose-response and tuned-expert studies, notebooks) goes through these functions, so one
rule changes in one place:

* ``rank`` orders validation points: accuracy, then the mean margin (mean log-prob per token of
  the right choice minus the best wrong one), then the smaller |strength|.
* ``search_strength`` explores strengths on validation only: strength 0 (= do not steer) is
  always a candidate; a coarse log grid; while the best point is the largest strength tried the
  search extends upward (``extend``; with ``extend_flat`` also while no point has changed the
  model's answers, see ``FLAT``); then each of ``refine_rounds`` rounds bisects the intervals
  next to the best point and the interval where the answers change most (``change``: predicted-
  choice distribution and accuracy), so a narrow window between two grid steps, where a shift
  flips the model's answers, is found. ``signed=True`` also searches negative strengths (label
  directions, whose useful sign depends on the model's bias).
* ``choose`` runs the search for several candidate plans (layers, layer pairs) and keeps the best
  point over all of them (ties: the earlier candidate).
* ``compare`` (``steer_lens.comparison``, re-exported here) scores TEST once for the unsteered model,
  the chosen plan and strength, and the random-vector control at the same hooks, norms and strength,
  with paired tests.

Two search rules, named by ``StrengthSearch.strategy`` (``STRATEGIES``):

* ``"reference"`` (the default): the search above, every point on every validation item.
* ``"halving"``: the same grid, extension and refinement, with successive halving over items and
  candidates (``steer_lens.halving.choose_halving``): every candidate's grid is scored on the first
  ``screen_fraction`` of the items; only the best ``keep`` share of the candidates continues;
  a point is completed on the remaining items only while it is among its candidate's
  ``finalists`` best screened points; refinement midpoints are screened first the same way; an
  interval whose two ends give the same answer on every item scored at both is not bisected, and
  refinement stops when no interval is left. The chosen point is always scored on every item.
  For a single ``score`` callable (``search_strength``) only the interval rule applies.
* ``"flips"``: the reference search's points, each run only on the items whose answer is not yet
  known (``steer_lens.flips.choose_flips``): a point inside an interval whose two ends are scored
  runs only the items whose answers differ at the ends (the others keep their answer, their margin
  interpolated); the grid is scored from the outside in; the chosen point is completed on every
  item. Same points as the reference unless an item flips twice inside one interval.

Strengths are on the relative scale: × the median residual norm at each steered hook. The coarse
grid and each refinement round are scored in one ``steer_lens.sweep`` call per candidate (the
unsteered blocks below the steered one run once per choice, shared by every candidate, round and
strength through one ``SweepInputs``; same points as one ``evaluate`` per strength within float
tolerance); ``choose(use_sweep=False)`` scores them one ``evaluate`` at a time.
``steer_lens.profiling.ForwardCounter`` counts the blocks each stage runs (the stages are marked
with ``profiling.phase``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from . import profiling
from .data import Item
from .evaluate import EvalResult, evaluate
from .scorers import (SharedInputs, keep_levels, parts_from_items, parts_runner, point,
                      points_scorer, validation_scorer, validation_sweep)
from .search_store import SearchStore

STRATEGIES = ("reference", "halving", "flips")


@dataclass(frozen=True)
class StrengthSearch:
    """How strengths are searched on validation (all × median residual norm).

    ``strategy``: "reference" (every point on every item), "halving" (see the module doc;
    ``screen_fraction``, ``screen_min``, ``keep`` and ``finalists`` apply to it only) or "flips"
    (the reference's points, run only on the items whose answer is not yet known)."""

    grid: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2, 0.4)
    extend: tuple[float, ...] = (0.5, 1.0, 2.0)  # tried in turn while the best is the largest tried
    refine_rounds: int = 3
    signed: bool = False
    # also extend while the curve is flat (no point's answers differ from strength 0's by more than
    # FLAT): a direction too weak for the grid otherwise has an interior "best" point and is never
    # tried stronger. Off by default, so a row chosen without it is reproduced unchanged.
    extend_flat: bool = False
    strategy: str = "reference"
    screen_fraction: float = 0.25  # halving: share of the items every point is scored on first
    keep: float = 0.5  # halving: share of the candidates (at least one) that continue after the screen
    finalists: int = 2  # halving: a candidate's best screened points completed on every item
    screen_min: int = 20  # halving: at least this many screening items (all of them if fewer)

    def __post_init__(self) -> None:
        for name in ("grid", "extend"):
            values = getattr(self, name)
            if any(not isinstance(s, (int, float)) or s <= 0 for s in values):
                raise ValueError(f"StrengthSearch.{name} must hold positive strengths (the sign is "
                                 f"searched with signed=True), got {values!r}")
        if not self.grid:
            raise ValueError("StrengthSearch.grid is empty; give at least one positive strength")
        if self.refine_rounds < 0:
            raise ValueError(f"refine_rounds must be >= 0, got {self.refine_rounds}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"StrengthSearch.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not 0 < self.screen_fraction <= 1 or not 0 < self.keep <= 1:
            raise ValueError(f"screen_fraction and keep must be in (0, 1], got {self.screen_fraction}, {self.keep}")
        if self.finalists < 1 or self.screen_min < 1:
            raise ValueError(f"finalists and screen_min must be >= 1, got {self.finalists}, {self.screen_min}")

    @classmethod
    def fixed(cls, strengths: Sequence[float], signed: bool = False) -> "StrengthSearch":
        """Exactly ``strengths`` (and 0), no extension, no refinement: a fixed grid."""
        return cls(grid=tuple(abs(s) for s in strengths if s != 0) or (1.0,), extend=(), refine_rounds=0,
                   signed=signed)

    @classmethod
    def halving(cls, **changes) -> "StrengthSearch":
        """The "halving" rule with the default grid, extension and refinement (``changes`` override)."""
        return cls(**{"strategy": "halving", **changes})


def change(a: Mapping, b: Mapping) -> float:
    """How much the model's answers differ between two points: the total-variation distance of
    their predicted-choice distributions plus the accuracy difference."""
    sa, sb = list(a.get("shares") or []), list(b.get("shares") or [])
    k = max(len(sa), len(sb))
    sa, sb = sa + [0.0] * (k - len(sa)), sb + [0.0] * (k - len(sb))
    return 0.5 * sum(abs(x - y) for x, y in zip(sa, sb)) + abs(a["accuracy"] - b["accuracy"])


# A curve is flat while no point's ``change`` from the strength-0 point exceeds FLAT. On 100 items
# one changed answer adds 0.01 (share) and, if it also changes correctness, 0.01 (accuracy): the
# float sum of both lands a hair above 0.02, so that single answer already counts as movement.
FLAT = 0.02


def rank(p: Mapping) -> tuple:
    """Validation order (higher is better): accuracy, mean margin, then the smaller |strength|."""
    return p["accuracy"], p["mean_margin"], -abs(p["strength"])


def search_strength(score: Callable[[float], dict], search: StrengthSearch = StrengthSearch(), *,
                    zero: dict | None = None, known: Sequence[dict] = (),
                    score_many: Callable[[Sequence[float]], list[dict]] | None = None) -> tuple[dict, list[dict]]:
    """Search strengths with ``score(strength) -> point`` (validation only); returns the best point
    and every point tried, sorted by strength. ``zero``: the strength-0 point if already known;
    ``known``: points scored earlier (not scored again). ``score_many(strengths) -> points``, if
    given, scores the coarse grid (both signs) and each refinement round's midpoints in one call
    (e.g. ``validation_sweep``); the points tried are the same as without it.

    With ``search.strategy == "halving"`` an interval whose ends have the same answers (``change``
    0: same predicted-choice distribution and accuracy) is not bisected, and refinement stops when
    every interval it would bisect is such."""
    tried: dict[float, dict] = {round(float(p["strength"]), 6): p for p in known}

    def visit_all(strengths) -> None:
        todo = []
        for s in strengths:
            s = round(float(s), 6)
            if s in tried or s in todo:
                continue
            if s == 0 and zero is not None:
                tried[s] = zero
            else:
                todo.append(s)
        if todo and score_many is not None and len(todo) > 1:
            tried.update(zip(todo, score_many(todo)))
        else:
            tried.update((s, score(s)) for s in todo)

    def visit(s: float) -> None:
        visit_all([s])

    signs = (1.0, -1.0) if search.signed else (1.0,)
    with profiling.phase("grid"):
        visit_all([0.0] + [sign * s for s in search.grid for sign in signs])

    def best() -> dict:
        return max(tried.values(), key=rank)

    ladder = sorted(search.extend)
    with profiling.phase("extend"):
        while search.extend_flat:  # extend (both signs if signed) while no strength changed the answers
            base = tried[0.0]
            top = max(abs(s) for s in tried)
            nxt = [s for s in ladder if s > top]
            if not nxt or max(change(p, base) for p in tried.values()) > FLAT:
                break
            visit_all([sign * nxt[0] for sign in signs])
        while True:  # extend upward while the best point sits on the largest |strength| tried
            b = best()
            top = max(abs(s) for s in tried)
            nxt = [s for s in ladder if s > top]
            if b["strength"] == 0 or abs(b["strength"]) < top or not nxt:
                break
            visit((1.0 if b["strength"] > 0 else -1.0) * nxt[0])
    for r in range(search.refine_rounds):
        # bisect towards both neighbours of the best point, and the interval where the answers
        # change most (a narrow window sits where predictions flip, next to a plateau)
        order = sorted(tried)
        gaps = _refine_gaps(order, order.index(round(best()["strength"], 6)),
                            lambda g: change(tried[g[0]], tried[g[1]]))
        if search.strategy == "halving":
            gaps = {g for g in gaps if change(tried[g[0]], tried[g[1]]) > 0}
            if not gaps:
                break
        with profiling.phase(f"refine {r + 1}"):
            visit_all([(lo + hi) / 2 for lo, hi in sorted(gaps)])
    return best(), sorted(tried.values(), key=lambda p: p["strength"])


def _refine_gaps(order: Sequence[float], i: int, moved: Callable[[tuple], float]) -> set[tuple[float, float]]:
    """The intervals a refinement round bisects: both neighbours of ``order[i]`` (the best point)
    and the interval where the answers move most (``moved``; ties: the one nearer 0)."""
    gaps = {(order[j], order[j + 1]) for j in (i - 1, i) if 0 <= j < len(order) - 1}
    if len(order) > 1:
        gaps.add(max(zip(order, order[1:]), key=lambda g: (moved(g), -abs(g[0]))))
    return gaps


@dataclass
class Choice:
    """What validation chose among candidate plans: the key, the strength, and every curve.

    ``screened`` (the "halving" rule): per candidate, the points scored on the screening items
    only (their ``n`` says how many)."""

    key: object
    strength: float
    best: dict
    curves: dict = field(default_factory=dict)  # key -> validation curve (list of points)
    screened: dict = field(default_factory=dict)  # key -> points on the screening items

    def to_dict(self) -> dict:
        out = {**asdict(self), "key": self.key, "curves": {str(k): v for k, v in self.curves.items()}}
        out["screened"] = {str(k): v for k, v in self.screened.items()}
        if not out["screened"]:
            del out["screened"]
        return out


def choose(model, items: Sequence[Item], candidates: Mapping[object, object], *,
           search: StrengthSearch = StrengthSearch(), screen: StrengthSearch | None = None,
           zero: dict | EvalResult | None = None, batch_size: int = 8, seed: int = 0, positions: str = "all",
           use_sweep: bool = True, share: bool = True,
           score_items: Callable[[object, Sequence[Item], Sequence[float]], list[EvalResult]] | None = None,
           store: SearchStore | None = None) -> Choice:
    """Search the strength of each candidate plan on validation ``items``; keep the best point over
    all candidates (ties: the earlier candidate). ``zero``: the unsteered validation point, or the
    unsteered ``EvalResult`` on ``items`` (the "flips" rule needs its per-item answers; given a
    point, it scores the unsteered items itself).

    ``screen``: a cheaper search (e.g. the coarse grid, ``refine_rounds=0``) run for every candidate
    first; only the best candidate then gets the full ``search`` (its screened points reused).

    ``use_sweep`` (positions "all" only): score several strengths per call with
    ``validation_sweep`` (same points, less compute); False scores them one ``evaluate`` at a time.
    ``share`` (with ``use_sweep``): every candidate and round reuses one set of unsteered
    lower-block residuals (``SharedInputs``) instead of recomputing them per call.

    ``search.strategy == "halving"`` runs ``choose_halving``, ``"flips"`` ``choose_flips``
    (``screen`` is used by neither).
    ``score_items(plan, items, strengths) -> results`` replaces the model's scoring (tests, other
    backends); by default ``steer_lens.sweep`` or ``evaluate``.

    ``store``: a ``steer_lens.search_store.SearchStore`` that keeps every scored point on disk, so the same
    search run again after an interruption replays them (same points, same choice)."""
    if not candidates:
        raise ValueError("no candidate plans to choose from")
    ctx_key = (store.context(model, items, batch_size=batch_size, seed=seed, positions=positions)
               if store is not None else None)
    shared = (SharedInputs(model, batch_size=batch_size, keep=keep_levels(candidates))
              if share and use_sweep and positions == "all" and score_items is None else None)
    if search.strategy in ("flips", "halving"):
        run = (parts_runner(model, items, batch_size=batch_size, seed=seed, positions=positions,
                             use_sweep=use_sweep, shared=shared) if score_items is None
               else parts_from_items(score_items, items))
        if store is not None:
            run = store.runner(run, ctx_key)
        if search.strategy == "halving":
            from .halving import choose_halving

            return choose_halving(run, items, candidates, search, zero=point(0.0, zero) if isinstance(zero, EvalResult)
                                  else zero, seed=seed)
        from .flips import choose_flips

        if not isinstance(zero, EvalResult):
            with profiling.phase("zero"):
                profiling.note_points(1, len(items))
                zero = run(next(iter(candidates.values())), [(0.0, list(range(len(items))))])[0]
        return choose_flips(run, items, candidates, search, zero=zero, seed=seed)
    if isinstance(zero, EvalResult):
        zero = point(0.0, zero)
    if zero is None:
        with profiling.phase("zero"):
            profiling.note_points(1, len(items))
            if score_items is not None:
                zero = point(0.0, score_items(next(iter(candidates.values())), items, [0.0])[0])
            else:
                zero = point(0.0, evaluate(model, items, batch_size=batch_size, seed=seed))
    if score_items is not None:
        scorers = {key: points_scorer(score_items, items, plan) for key, plan in candidates.items()}
    else:
        scorers = {key: validation_scorer(model, items, plan, batch_size=batch_size, seed=seed, positions=positions,
                                          use_sweep=use_sweep, inputs=shared) for key, plan in candidates.items()}
    if store is not None:
        scorers = {key: store.scorer(scorers[key], candidates[key], ctx_key) for key in candidates}
    many = {key: getattr(scorer, "many", None) for key, scorer in scorers.items()}
    first = screen if (screen is not None and len(candidates) > 1) else search
    with profiling.phase("screen" if first is not search else "search"):
        found = {key: search_strength(scorers[key], first, zero=zero, score_many=many[key]) for key in candidates}
    order = list(candidates)

    def winner():
        return max(order, key=lambda k: (rank(found[k][0]), -order.index(k)))

    if first is not search:
        key = winner()
        with profiling.phase("search"):
            found[key] = search_strength(scorers[key], search, zero=zero, known=found[key][1], score_many=many[key])
    key = winner()
    b = found[key][0]
    return Choice(key=key, strength=b["strength"], best=b, curves={k: found[k][1] for k in order})


# scoring TEST once beside the random control lives in its own module; re-exported as part of the protocol
from .comparison import compare, paired, render_comparison, val_split  # noqa: E402,F401

__all__ = ["FLAT", "STRATEGIES", "Choice", "SharedInputs", "StrengthSearch", "change", "choose", "compare", "paired",
           "point", "rank", "render_comparison", "search_strength", "val_split", "validation_scorer",
           "validation_sweep"]
