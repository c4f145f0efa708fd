"""``steer-lens demo``: ExpertSteer end to end (fit, MI heatmap, evaluation, generation, report).

Default: Gemma-3-270M (expert) steers SmolLM2-135M-Instruct (target) on SST-2; a few minutes
on 2 CPU cores. ``--fast`` uses tiny random models from ``steer_lens.testing`` (seconds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from .common import add_command, emit, load_model, positive_int, strengths
from .fit_cmd import add_fit_args, fit_plan, plan_summary, save_plan
from .run_cmd import DEFAULT_STRENGTHS, compare, render_comparison, render_generations, side_by_side

STEPS = ["load models", "load data", "fit ExpertSteer", "save plan + MI heatmap", "evaluate", "generate",
         "report"]
PROMPT = "Write one sentence about a movie you just watched."


def register(sub, parent) -> None:
    p = add_command(sub, "demo", parent, run, "the full ExpertSteer demo: fit on a dataset's train split, "
                    "print layer pairs/MI/alignment, save the plan and MI heatmap, evaluate (unsteered vs "
                    "steered vs random control), generate side by side, write a report",
                    "steer-lens demo --out results/demo        # real models, a few minutes\n"
                    "  steer-lens demo --fast --out /tmp/demo    # tiny random models, seconds")
    p.add_argument("--fast", action="store_true", help="tiny random models (smoke test, seconds)")
    p.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    add_fit_args(p, expert="gemma-3-270m", target="smollm2-135m-instruct", dataset="sst2", limit=50,
                 ae_epochs=100)
    p.add_argument("--test-limit", type=positive_int, default=60, help="test items (default 60)")
    p.add_argument("--val-limit", type=positive_int, default=30, help="validation items (default 30)")
    p.add_argument("--strengths", type=strengths, default=DEFAULT_STRENGTHS)
    p.add_argument("--prompt", default=PROMPT, help="prompt for the side-by-side generation")
    p.add_argument("--max-new-tokens", type=positive_int, default=32)


def _fast_settings(args, out: Path) -> None:
    from ..testing import make_tiny_model

    tiny = out / "tiny_models"
    args.expert = str(make_tiny_model(tiny / "expert", "gemma3", d_model=48, n_layers=3, seed=1))
    args.target = str(make_tiny_model(tiny / "target", "llama", d_model=64, n_layers=4))
    args.limit, args.test_limit, args.val_limit = min(args.limit, 16), min(args.test_limit, 8), min(args.val_limit, 6)
    args.n_pairs, args.ae_epochs, args.max_new_tokens = min(args.n_pairs, 2), min(args.ae_epochs, 30), 8
    args.strengths = args.strengths[:2]


def run(args) -> int:
    from ..data import load_dataset

    t_start = time.perf_counter()
    dataset = load_dataset(args.dataset)  # fail fast on a bad name, before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.fast:
        _fast_settings(args, out)
    timings: dict[str, float] = {}
    bar = tqdm(total=len(STEPS), desc="demo", unit="step", disable=args.json)

    def say(msg: str) -> None:  # results for people: stdout, unless stdout carries --json
        tqdm.write(msg, file=sys.stderr if args.json else sys.stdout)

    def step(name: str) -> None:
        timings[name] = round(time.perf_counter() - t_start - sum(timings.values()), 2)
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        return _run(args, dataset, out, step, say, t_start, timings)
    finally:
        bar.close()  # before any error line, so that line stands alone


def _run(args, dataset, out: Path, step, say, t_start: float, timings: dict) -> int:
    from ..io import write_json

    expert, target = load_model(args.expert), load_model(args.target)
    step("load models")
    items = dataset.split(args.split, limit=args.limit, seed=args.seed)
    step("load data")
    plan = fit_plan(args, expert, target, items)
    step("fit ExpertSteer")
    del expert  # the expert is not needed to steer
    paths = save_plan(plan, out / "plan")
    summary, pairs_text = plan_summary(plan)
    step("save plan + MI heatmap")
    say("\nchosen layer pairs (lowest MI):\n" + pairs_text)
    say(f"MI heatmap: {paths.get('mi_heatmap')}\nplan: {paths['plan']}")
    evaluation = compare(target, dataset, plan, grid=args.strengths, limit=args.test_limit,
                         val_limit=args.val_limit, seed=args.seed)
    write_json(out / "evaluation.json", evaluation)
    say("\n" + render_comparison(evaluation))
    step("evaluate")
    s = evaluation["strength"]
    gens = side_by_side(target, plan, [args.prompt], s, args.max_new_tokens)
    write_json(out / "generation.json", {"generations": gens})
    say("\n" + render_generations(gens))
    step("generate")
    from .report_cmd import render

    report = render(out)
    step("report")
    result = {"out": str(out), **paths, "report": str(report), "expert": plan.expert, "target": plan.target,
              "dataset": dataset.name, "n_train_items": len(items), **summary, "evaluation": evaluation,
              "generations": gens, "timings": timings, "seconds": round(time.perf_counter() - t_start, 1),
              "fast": bool(args.fast)}
    write_json(out / "summary.json", result)
    text = f"\ndemo finished in {result['seconds']:.0f}s; report: {report}"
    if "steered" in evaluation:
        text = (f"\nExpertSteer on {dataset.name}: accuracy {evaluation['unsteered']['accuracy']:.3f} -> "
                f"{evaluation['steered']['accuracy']:.3f} (random control {evaluation['random']['accuracy']:.3f}, "
                f"strength {evaluation['strength']:g})") + text
    return emit(args, json.loads(json.dumps(result, default=str)), text)
