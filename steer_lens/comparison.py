"""Score TEST once: the unsteered model, a plan at its validation-chosen strength, and the random-vector
control at the same hooks, norms and strength, with paired tests (``compare``; part of
``steer_lens.protocol``, which re-exports it)."""

from __future__ import annotations

import time
from collections.abc import Callable

from .data import MCDataset
from .evaluate import EvalResult, evaluate, mcnemar, paired_bootstrap
from .protocol import StrengthSearch, choose


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


__all__ = ["compare", "paired", "render_comparison", "val_split"]
