"""``steer-lens demo``: ExpertSteer end to end on one dataset per domain, printed as one table.

Default: Gemma-3-270M (expert) steers SmolLM2-135M-Instruct (target) on the compact benchmark
(``steer_lens.data.COMPACT_DATASETS``: medical, finance, math, general, behaviour). Per dataset:
fit on train, save the plan and its MI heatmap, score the expert itself, then the target unsteered,
steered (strength chosen on validation) and with the random-vector control, on test. Then a
side-by-side generation and a report. About 10 minutes on 2 idle CPU cores; ``--fast`` uses tiny
random models from ``steer_lens.testing`` (seconds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..data import COMPACT_DATASETS
from .common import add_command, emit, load_model, positive_int, table
from .fit_cmd import add_fit_args, fit_plan, plan_summary, save_plan
from ..protocol import render_comparison
from .run_cmd import add_search_args, render_generations, search_of, side_by_side

PROMPT = "Write one sentence about a movie you just watched."
COLUMNS = ["dataset", "domain", "n", "majority", "expert", "unsteered", "ExpertSteer", "random",
           "ES - random [95% CI]", "strength"]


def register(sub, parent) -> None:
    p = add_command(sub, "demo", parent, run, "the ExpertSteer demo on one dataset per domain: fit on "
                    "train, MI heatmaps, the expert's own accuracy, unsteered vs steered (strength chosen "
                    "on validation) vs random control on test, side-by-side generation, a report and one table",
                    "steer-lens demo --out results/demo                 # real models, ~10 minutes\n"
                    "  steer-lens demo --datasets sst2 --out /tmp/sst2   # one dataset, ~2 minutes\n"
                    "  steer-lens demo --fast --out /tmp/demo             # tiny random models, seconds")
    p.add_argument("--fast", action="store_true", help="tiny random models (smoke test, seconds)")
    p.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    p.add_argument("--datasets", "--dataset", nargs="+", default=list(COMPACT_DATASETS),
                   help=f"datasets (default, one per domain: {' '.join(COMPACT_DATASETS)})")
    add_fit_args(p, expert="gemma-3-270m", target="smollm2-135m-instruct", limit=50, ae_epochs=100,
                 with_dataset=False)
    p.add_argument("--test-limit", type=positive_int, default=50, help="test items per dataset (default 50)")
    p.add_argument("--val-limit", type=positive_int, default=24, help="validation items (default 24)")
    add_search_args(p)
    p.add_argument("--prompt", default=PROMPT, help="prompt for the side-by-side generation")
    p.add_argument("--max-new-tokens", type=positive_int, default=32)


def _fast_settings(args, out: Path) -> None:
    from ..testing import make_tiny_pair

    # a long context: the tiny tokenizer spends a token per character
    args.target, args.expert = map(str, make_tiny_pair(out / "tiny_models", n_ctx=4096))
    args.limit, args.test_limit, args.val_limit = min(args.limit, 16), min(args.test_limit, 8), min(args.val_limit, 6)
    args.n_pairs, args.ae_epochs, args.max_new_tokens = min(args.n_pairs, 2), min(args.ae_epochs, 30), 8
    args.strengths, args.refine_rounds, args.no_extend = args.strengths[:2], 1, True


def run(args) -> int:
    from ..data import load_dataset

    t_start = time.perf_counter()
    datasets = [load_dataset(name) for name in args.datasets]  # fail fast on a bad name, before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.fast:
        _fast_settings(args, out)
    timings: dict[str, float] = {}
    bar = tqdm(total=2 + 2 * len(datasets) + 1, desc="demo", unit="step", disable=args.json)

    def say(msg: str) -> None:  # results for people: stdout, unless stdout carries --json
        tqdm.write(msg, file=sys.stderr if args.json else sys.stdout)

    def step(name: str) -> None:
        timings[name] = round(time.perf_counter() - t_start - sum(timings.values()), 2)
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        return _run(args, datasets, out, step, say, t_start, timings)
    finally:
        bar.close()  # before any error line, so that line stands alone


def _one_dataset(args, expert, target, dataset, folder: Path, step, say):
    """Fit, save, and evaluate one dataset; returns (its summary, written under ``folder``; the plan)."""
    from ..evaluate import evaluate
    from ..io import write_json
    from ..protocol import compare
    from .report_cmd import render

    items = dataset.split(args.split, limit=args.limit, seed=args.seed)
    plan = fit_plan(args, expert, target, items)
    paths = save_plan(plan, folder / "plan")
    summary, pairs_text = plan_summary(plan)
    step(f"fit {dataset.name}")
    say(f"\n== {dataset.name}: chosen layer pairs (lowest MI)\n{pairs_text}")
    own = evaluate(expert, dataset, split="test", limit=args.test_limit, seed=args.seed).summary()
    evaluation = compare(target, dataset, plan, search=search_of(args), limit=args.test_limit,
                         val_limit=args.val_limit, seed=args.seed)
    evaluation["expert"] = {**own, "model": str(expert.cfg.model_name)}
    write_json(folder / "evaluation.json", evaluation)
    say(render_comparison(evaluation) + f"\nthe expert itself on the same test items: {own['accuracy']:.3f}")
    report = render(folder)
    step(f"evaluate {dataset.name}")
    return {"dataset": dataset.name, "domain": items[0].domain, "n_train_items": len(items), **paths,
            "report": str(report), **summary, "evaluation": evaluation}, plan


def table_rows(results: list[dict]) -> list[list]:
    """One row per dataset in ``COLUMNS`` order (accuracies as text)."""
    rows = []
    for r in results:
        ev = r["evaluation"]
        d = ev["steered_vs_random"]
        rows.append([r["dataset"], r["domain"], ev["n_test"], f"{ev['unsteered']['majority_rate']:.2f}",
                     f"{ev['expert']['accuracy']:.2f}", f"{ev['unsteered']['accuracy']:.2f}",
                     f"{ev['steered']['accuracy']:.2f}", f"{ev['random']['accuracy']:.2f}",
                     f"{d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]", f"{ev['strength']:g}"])
    return rows


def render_report(out: Path, results: list[dict], rows: list[list], gens: list[dict], expert: str,
                  target: str) -> Path:
    """``out/report.md``: the compact table, links to each dataset's report, the generations."""
    import os

    from ..io import write_text
    from .report_cmd import _md_table

    md = [f"# steer-lens demo: {expert} → {target}", "",
          "Test accuracy per dataset (one per domain): the expert itself, the target unsteered, steered by "
          "ExpertSteer (strength chosen on validation) and by a random vector at the same hooks, norms "
          "and strength; the last columns are the paired bootstrap 95% CI of ExpertSteer minus random and "
          "the chosen strength (× median residual norm). On behaviour sets (`caa_*`) accuracy is the rate of "
          "the behaviour-matching answer.", "",
          _md_table(rows, COLUMNS), "", "Per-dataset reports (MI heatmap, pairs, alignment, "
          "validation curve):", ""]
    md += [f"- [{r['dataset']}]({os.path.relpath(r['report'], out)})" for r in results]
    md += ["", "## Generations (greedy)", "", render_generations(gens).replace("\n", "  \n"), ""]
    write_text(out / "report.md", "\n".join(md))
    return out / "report.md"


def _run(args, datasets, out: Path, step, say, t_start: float, timings: dict) -> int:
    from ..io import write_json

    expert, target = load_model(args.expert, args), load_model(args.target, args)
    step("load models")
    results, plans = zip(*(_one_dataset(args, expert, target, ds, out / ds.name, step, say) for ds in datasets))
    del expert  # the expert is not needed to steer
    names = [r["dataset"] for r in results]
    k = names.index("sst2") if "sst2" in names else 0  # the default prompt is about a movie
    plan = plans[k]
    gens = side_by_side(target, plan, [args.prompt], results[k]["evaluation"]["strength"], args.max_new_tokens)
    for g in gens:
        g["plan"] = names[k]
    say("\n" + render_generations(gens))
    step("generate")
    rows = table_rows(results)
    report = render_report(out, results, rows, gens, plan.expert.get("name"), plan.target.get("name"))
    step("report")
    result = {"out": str(out), "report": str(report), "expert": plan.expert, "target": plan.target,
              "datasets": list(results), "columns": COLUMNS, "table": rows, "generations": gens,
              "timings": timings, "seconds": round(time.perf_counter() - t_start, 1), "fast": bool(args.fast)}
    write_json(out / "summary.json", result)
    text = (f"\nExpertSteer demo ({plan.expert.get('name')} -> {plan.target.get('name')}), test accuracy:\n"
            + table(result["table"], COLUMNS)
            + f"\n\ndemo finished in {result['seconds']:.0f}s; report: {report}")
    return emit(args, json.loads(json.dumps(result, default=str)), text)
