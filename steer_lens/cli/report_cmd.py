"""``steer-lens report``: a Markdown report (with figures) for a plan folder or a results folder.

A results folder (e.g. ``steer-lens demo``'s output) holds ``plan/`` and optionally
``evaluation.json`` and ``generation.json``; a plan folder holds ``plan.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .common import add_command, emit, load_plan


def register(sub, parent) -> None:
    p = add_command(sub, "report", parent, run, "render a Markdown report (MI heatmap, chosen pairs, "
                    "alignment quality, accuracy chart, generations) for a plan or results folder",
                    "steer-lens report results/demo   # writes results/demo/report.md")
    p.add_argument("folder", help="plan folder, or results folder containing plan/")
    p.add_argument("--out", default=None, help="Markdown file (default: FOLDER/report.md)")


def _md_table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


def accuracy_chart(res: dict, path: Path) -> Path:
    """Bar chart of test accuracy with 95% CIs per condition (Agg, atomic write)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io import atomic_path

    keys = [k for k in ("unsteered", "steered", "random") if k in res]
    acc = [res[k]["accuracy"] for k in keys]
    err = [[a - res[k]["ci_low"] for k, a in zip(keys, acc)], [res[k]["ci_high"] - a for k, a in zip(keys, acc)]]
    fig = Figure(figsize=(4, 3), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(keys, acc, yerr=err, capsize=4, color=["#888", "#2a7", "#c55"][: len(keys)])
    ax.axhline(res["unsteered"]["majority_rate"], ls="--", lw=1, color="k", label="majority")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{res['dataset']} (n={res['n_test']})", fontsize=9)
    ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def render(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the report and return its path."""
    from ..io import write_text
    from .fit_cmd import plan_summary, save_plan

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    plan_dir = folder if (folder / "plan.json").exists() else folder / "plan"
    if not (plan_dir / "plan.json").exists():
        raise FileNotFoundError(f"{folder} holds no plan (expected {folder}/plan.json or {folder}/plan/plan.json)")
    out = Path(out) if out else folder / "report.md"
    base = out.parent
    plan = load_plan(str(plan_dir))
    if plan.mi is not None and not (plan_dir / "mi.png").exists():
        save_plan(plan, plan_dir)
    summary, _ = plan_summary(plan)
    md = [f"# steer-lens report: {plan.expert.get('name')} → {plan.target.get('name')}", ""]
    s = plan.settings
    md += [f"ExpertSteer plan `{_rel(plan_dir, base)}`: alignment **{s.get('alignment', '?')}**, "
           f"{len(plan.pairs)} layer pair(s) by the **{s.get('rule', '?')}**-MI rule, "
           f"target window {s.get('target_window')}, data hash `{plan.data_hash}`.", ""]
    md += ["## Chosen layer pairs", "", _md_table(
        [[p["expert_layer"], p["target_layer"], f"{p['mi']:.4f}", p["norm"]] for p in summary["pairs"]],
        ["expert layer", "target layer", "MI (nats)", "median resid norm"]), ""]
    if (plan_dir / "mi.png").exists():
        md += ["## Mutual information between layers", "",
               f"![MI heatmap (chosen pairs boxed)]({_rel(plan_dir / 'mi.png', base)})", ""]
    reports = summary["alignment_reports"]
    keys = sorted({k for v in reports.values() for k, x in v.items() if isinstance(x, (int, float))})
    if keys:
        md += ["## Alignment quality (held-out prompts)", "", _md_table(
            [[n] + [f"{r.get(k, float('nan')):.3f}" for k in keys] for n, r in reports.items()], ["aligner"] + keys), ""]
    ev_path = folder / "evaluation.json"
    if ev_path.exists():
        from ..protocol import render_comparison

        res = json.loads(ev_path.read_text())
        md += ["## Evaluation", "", "```", render_comparison(res), "```", ""]
        if "steered" in res:
            chart = accuracy_chart(res, folder / "accuracy.png")
            md += [f"![test accuracy]({_rel(chart, base)})", ""]
        if res.get("val_curve"):
            md += ["Validation accuracy by strength (the best one is used on test):", "", _md_table(
                [[c["strength"], f"{c['accuracy']:.3f}"] for c in res["val_curve"]], ["strength", "accuracy"]), ""]
    gen_path = folder / "generation.json"
    if gen_path.exists():
        md += ["## Generations (greedy)", ""]
        for r in json.loads(gen_path.read_text()).get("generations", []):
            md += [f"**Prompt:** {r['prompt']}", "", f"- unsteered: {r['unsteered']!r}"]
            if r.get("steered") is not None:
                md += [f"- steered (strength {r['strength']:g}): {r['steered']!r}"]
            md += [""]
    write_text(out, "\n".join(md))
    return out


def run(args) -> int:
    path = render(args.folder, args.out)
    return emit(args, {"report": str(path)}, f"report written to {path}")
