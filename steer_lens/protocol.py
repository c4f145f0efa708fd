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
* ``compare`` scores TEST once for the unsteered model, the chosen plan and strength, and the
  random-vector control at the same hooks, norms and strength, with paired tests.

Strengths are on the relative scale: × the median residual norm at each steered hook. The coarse
grid and each refinement round are scored in one ``steer_lens.sweep`` call (blocks below the
steered one once; same points as one ``evaluate`` per strength); ``choose(use_sweep=False)``
scores them one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from .data import Item, MCDataset
from .evaluate import EvalResult, evaluate, mcnemar, paired_bootstrap


@dataclass(frozen=True)
class StrengthSearch:
    """How strengths are searched on validation (all × median residual norm)."""

    grid: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2, 0.4)
    extend: tuple[float, ...] = (0.5, 1.0, 2.0)  # tried in turn while the best is the largest tried
    refine_rounds: int = 3
    signed: bool = False
    # also extend while the curve is flat (no point's answers differ from strength 0's by more than
    # FLAT): a direction too weak for the grid otherwise has an interior "best" point and is never
    # tried stronger. Off by default: the rows cached before it was added used the rule without it.
    extend_flat: bool = False

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

    @classmethod
    def fixed(cls, strengths: Sequence[float], signed: bool = False) -> "StrengthSearch":
        """Exactly ``strengths`` (and 0), no extension, no refinement: the old protocol."""
        return cls(grid=tuple(abs(s) for s in strengths if s != 0) or (1.0,), extend=(), refine_rounds=0,
                   signed=signed)


def point(strength: float, result: EvalResult) -> dict:
    """One validation point: the numbers the ranking and the reports need."""
    preds = result.predictions
    shares = [preds.count(k) / len(preds) for k in range(max(preds) + 1)] if preds else []
    return {"strength": float(strength), "accuracy": result.accuracy, "ci_low": result.ci_low,
            "ci_high": result.ci_high, "n": result.n,
            "mean_margin": float(sum(result.margins) / max(1, len(result.margins))),
            "shares": shares, "pred_share": max(shares) if shares else None,
            "behaviour_prob": result.behaviour_prob}


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
    (e.g. ``validation_sweep``); the points tried are the same as without it."""
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
    visit_all([0.0] + [sign * s for s in search.grid for sign in signs])

    def best() -> dict:
        return max(tried.values(), key=rank)

    ladder = sorted(search.extend)
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
    for _ in range(search.refine_rounds):
        # bisect towards both neighbours of the best point, and the interval where the answers
        # change most (a narrow window sits where predictions flip, next to a plateau)
        order = sorted(tried)
        i = order.index(round(best()["strength"], 6))
        gaps = {(order[j], order[j + 1]) for j in (i - 1, i) if 0 <= j < len(order) - 1}
        if len(order) > 1:
            gaps.add(max(zip(order, order[1:]), key=lambda g: (change(tried[g[0]], tried[g[1]]), -abs(g[0]))))
        visit_all([(lo + hi) / 2 for lo, hi in sorted(gaps)])
    return best(), sorted(tried.values(), key=lambda p: p["strength"])


@dataclass
class Choice:
    """What validation chose among candidate plans: the key, the strength, and every curve."""

    key: object
    strength: float
    best: dict
    curves: dict = field(default_factory=dict)  # key -> validation curve (list of points)

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key, "curves": {str(k): v for k, v in self.curves.items()}}


def validation_scorer(model, items: Sequence[Item], plan, *, batch_size: int = 8, seed: int = 0,
                      positions: str = "all", use_sweep: bool = True) -> Callable[[float], dict]:
    """``score(strength) -> point`` on ``items`` steered by ``plan``. With ``use_sweep`` (positions
    "all" only) it also carries ``score.many(strengths) -> points`` (``validation_sweep``) for
    ``search_strength``'s ``score_many``."""

    def score(s: float) -> dict:
        return point(s, evaluate(model, items, plan=plan, strength=s, batch_size=batch_size, seed=seed,
                                 positions=positions))

    if use_sweep and positions == "all":
        score.many = validation_sweep(model, items, plan, batch_size=batch_size, seed=seed)
    return score


def validation_sweep(model, items: Sequence[Item], plan, *, batch_size: int = 8,
                     seed: int = 0) -> Callable[[Sequence[float]], list[dict]]:
    """``score_many(strengths) -> points`` on ``items`` steered by ``plan`` at all positions, through
    ``steer_lens.sweep`` (the unsteered lower blocks run once per call)."""
    from .sweep import sweep

    def score_many(strengths: Sequence[float]) -> list[dict]:
        return [point(s, r) for s, r in zip(strengths, sweep(model, items, plan, strengths,
                                                                  batch_size=batch_size, seed=seed))]

    return score_many


def choose(model, items: Sequence[Item], candidates: Mapping[object, object], *,
           search: StrengthSearch = StrengthSearch(), screen: StrengthSearch | None = None,
           zero: dict | None = None, batch_size: int = 8, seed: int = 0, positions: str = "all",
           use_sweep: bool = True) -> Choice:
    """Search the strength of each candidate plan on validation ``items``; keep the best point over
    all candidates (ties: the earlier candidate). ``zero``: the unsteered validation point.

    ``screen``: a cheaper search (e.g. the coarse grid, ``refine_rounds=0``) run for every candidate
    first; only the best candidate then gets the full ``search`` (its screened points reused).

    ``use_sweep`` (positions "all" only): score several strengths per call with
    ``validation_sweep`` (same points, less compute); False scores them one ``evaluate`` at a time."""
    if not candidates:
        raise ValueError("no candidate plans to choose from")
    if zero is None:
        zero = point(0.0, evaluate(model, items, batch_size=batch_size, seed=seed))
    scorers = {key: validation_scorer(model, items, plan, batch_size=batch_size, seed=seed, positions=positions,
                                      use_sweep=use_sweep) for key, plan in candidates.items()}
    many = {key: getattr(scorer, "many", None) for key, scorer in scorers.items()}
    first = screen if (screen is not None and len(candidates) > 1) else search
    found = {key: search_strength(scorers[key], first, zero=zero, score_many=many[key]) for key in candidates}
    order = list(candidates)

    def winner():
        return max(order, key=lambda k: (rank(found[k][0]), -order.index(k)))

    if first is not search:
        key = winner()
        found[key] = search_strength(scorers[key], search, zero=zero, known=found[key][1], score_many=many[key])
    key = winner()
    b = found[key][0]
    return Choice(key=key, strength=b["strength"], best=b, curves={k: found[k][1] for k in order})


def paired(a: EvalResult, b: EvalResult, seed: int = 0) -> dict:
    """a - b on the same items: bootstrap mean difference, its 95% CI and p, and McNemar's p."""
    return {**paired_bootstrap(a.correct, b.correct, seed=seed), "mcnemar_p": mcnemar(a.correct, b.correct)["p"]}


def val_split(dataset: MCDataset) -> str:
    """Where strengths are chosen: "validation", or "train" when a dataset has none (say so)."""
    return "validation" if "validation" in dataset.splits else "train"


def compare(model, dataset: MCDataset, plan=None, *, search: StrengthSearch = StrengthSearch(),
            fixed: float | None = None, limit: int | None = 100, val_limit: int | None = 100,
            random_control: bool = True, batch_size: int = 8, seed: int = 0, positions: str = "all",
            log: Callable[[str], None] | None = None) -> dict:
    """Unsteered vs ``plan`` (strength chosen on validation unless ``fixed``) vs the random-vector
    control at the plan's hooks, norms and strength, each scored once on TEST, with paired tests.

    Returns a JSON-able dict: ``unsteered``/``steered``/``random`` summaries, ``strength``, ``n_val``,
    ``val_curve``, ``steered_vs_unsteered`` and ``steered_vs_random`` (diff, CI, bootstrap p,
    McNemar p), ``seconds``."""
    def run(split, lim, p=None, s=0.0):
        return evaluate(model, dataset, split=split, limit=lim, plan=p, strength=s, batch_size=batch_size,
                        seed=seed, positions=positions)

    out: dict = {"dataset": dataset.name, "model": str(model.cfg.model_name), "n_test": None, "val_curve": []}
    t0 = time.perf_counter()
    base = run("test", limit)
    out["unsteered"], out["n_test"] = base.summary(), base.n
    if plan is not None:
        if fixed is None:
            split = val_split(dataset)
            items = dataset.split(split, limit=val_limit, seed=seed)
            if log:
                log(f"choosing the strength on {split} ({len(items)} items) ...")
            choice = choose(model, items, {"plan": plan}, search=search, batch_size=batch_size, seed=seed,
                            positions=positions)
            out.update(strength=choice.strength, val_curve=choice.curves["plan"], n_val=len(items),
                       val_split=split)
        else:
            out.update(strength=float(fixed), n_val=0)
        s = out["strength"]
        steered = base if s == 0 else run("test", limit, plan, s)
        out["steered"] = steered.summary()
        out["steered_vs_unsteered"] = paired(steered, base, seed)
        if random_control:
            from .baselines import random_plan

            rnd = base if s == 0 else run("test", limit, random_plan(plan, seed=seed), s)
            out["random"] = rnd.summary()
            out["steered_vs_random"] = paired(steered, rnd, seed)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def render_comparison(res: dict) -> str:
    """``compare``'s result as text: one line per condition, then the paired differences."""
    lines = [f"{res['dataset']} test accuracy ({res['model']}, majority rate {res['unsteered']['majority_rate']:.3f}):",
             f"{'condition':<28} {'accuracy':>8}  {'95% CI':<16} {'n':>4}"]
    for key in ("unsteered", "steered", "random"):
        if key in res:
            r = res[key]
            label = key if key == "unsteered" else f"{key} (strength {res['strength']:g})"
            lines.append(f"{label:<28} {r['accuracy']:>8.3f}  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]   {r['n']:>4}")
    for key in ("steered_vs_unsteered", "steered_vs_random"):
        if key in res:
            d = res[key]
            lines.append(f"{key.replace('_', ' ')}: {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], "
                         f"McNemar p = {d['mcnemar_p']:.3g}")
    return "\n".join(lines)
