"""Do steering vectors transfer across tasks? Fit a plan per dataset, apply each plan to every
dataset's test items, and report the accuracy change vs the unsteered target with paired
bootstrap 95% CIs (rows: plan fitted on, columns: evaluated on).

    python analyses/vector_reuse.py [--fast] [--out DIR] [--datasets A B C]
Writes vector_reuse.png (transfer matrix of Δ accuracy) and vector_reuse.csv / .md.
"""

from __future__ import annotations

import sys

import numpy as np

from lens_common import figure, finish_args, fit_plan, items, load_models, markdown, parser, save_figure, write_csv
from steer_lens.io import write_text


def _delta(steered, base) -> dict:
    try:
        from steer_lens.evaluate import paired_bootstrap

        return paired_bootstrap(steered, base)
    except ImportError:  # paired bootstrap inline
        d = np.asarray(steered, float) - np.asarray(base, float)
        means = d[np.random.default_rng(0).integers(0, d.size, (2000, d.size))].mean(1)
        return {"diff": float(d.mean()), "ci_low": float(np.quantile(means, 0.025)),
                "ci_high": float(np.quantile(means, 0.975))}


def _correct(target, test, plan, strength) -> list[bool]:
    from steer_lens.evaluate import evaluate

    return evaluate(target, test, plan=plan, strength=strength).correct


def main(argv=None) -> dict:
    p = parser("vector_reuse", __doc__)
    p.add_argument("--datasets", nargs="+", default=None)
    p.add_argument("--n-test", type=int, default=None)
    args = finish_args(p.parse_args(argv), "vector_reuse")
    names = args.datasets or (["arithmetic_2way", "sst2"] if args.fast else ["sst2", "financial_phrasebank",
                                                                             "arithmetic_2way"])
    n_test = args.n_test or (6 if args.fast else 60)
    target, _ = load_models(args.fast)
    tests = {d: items(d, "test", n_test, args.fast) for d in names}
    base = {d: _correct(target, t, None, 0.0) for d, t in tests.items()}
    rows = []
    for src in names:
        plan = fit_plan(args, src)[0]
        for dst in names:
            r = _delta(_correct(target, tests[dst], plan, args.strength), base[dst])
            rows.append({"fitted_on": src, "evaluated_on": dst, "base_acc": float(np.mean(base[dst])),
                         "delta_acc": r["diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": len(tests[dst])})
    write_csv(args.out / "vector_reuse.csv", rows)
    write_text(args.out / "vector_reuse.md", f"# Vector reuse across tasks (strength {args.strength}, "
               f"{n_test} test items each; Δ accuracy vs unsteered, paired bootstrap 95% CI)\n\n" + markdown(rows))
    m = np.array([[next(r["delta_acc"] for r in rows if r["fitted_on"] == s and r["evaluated_on"] == d)
                   for d in names] for s in names])
    fig, axes = figure(1.6 + 1.5 * len(names), 1.2 + 1.2 * len(names))
    ax = axes[0, 0]
    lim = max(0.05, float(np.abs(m).max()))
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim)
    for r in rows:
        i, j = names.index(r["fitted_on"]), names.index(r["evaluated_on"])
        ax.text(j, i, f"{r['delta_acc']:+.2f}\n[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]", ha="center",
                va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="evaluated on", ylabel="plan fitted on")
    ax.set_title(f"Δ accuracy vs unsteered (strength {args.strength}, n={n_test})", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    png = save_figure(fig, args.out / "vector_reuse.png")
    return {"png": png, "csv": args.out / "vector_reuse.csv"}


if __name__ == "__main__":
    print(main(sys.argv[1:]))
