"""``steer-lens demo``: the paper's ExpertSteer beside the recipe that works, with its controls.

Default: Gemma-3-270M (expert) steers SmolLM2-135M-Instruct (target). Every row goes through the
benchmark runner (``steer_lens.bench.Bench``: fit on TRAIN, candidate and strength chosen on
VALIDATION, TEST scored once) under a small rule set (``DEMO_RULES``: 48 train, 32 validation and
100 test items per dataset), cached under ``OUT/cache`` (a second run reads its rows back):

1. the paper's specification (``expertsteer_autoencoder``: auto-encoder alignment, the lowest-MI
   layer pairs) with its random control and the unsteered target, on ``PAPER_DATASETS``
   (arithmetic_2way, sst2); each plan is saved with its MI heatmap;
2. on SST-2 the recipe that works there, ``expertsteer_label`` (the expert's label direction),
   with its random control ``random_label``, the calibration baseline, the unsteered target and
   the expert itself;
3. the positive control: the share of "positive" answers on the validation items against the
   signed strength along that label direction and along its random control (a text table and
   ``dose_response.png``);
4. a side-by-side generation at the strength validation chose; when it chose 0 the demo says
   "no steering chosen" and shows the generation at the best nonzero strength, labelled as such;
5. ``report.md`` and one table.

About 5 minutes on 2 idle CPU cores (``benchmarks/bench_demo.py`` times it); ``--fast`` uses tiny random
models (seconds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from .. import methods as M
from .common import add_command, add_model_args, emit, load_model, positive_int, strengths, table
from .demo_dose import dose_response, plot_dose, render_dose

PROMPT = "Write one sentence about a movie you just watched."
PAPER = M.PAPER  # expertsteer_autoencoder
LABEL = "expertsteer_label"
LABEL_DATASET = "sst2"  # every item offers the same two labels: choice 1 minus choice 0 is one direction
# math and general; the MMLU sets' long prompts would double the run time (--datasets adds them)
PAPER_DATASETS = ("arithmetic_2way", "sst2")
DEMO_RULES = M.RuleSet.reference(limit_train=48, limit_val=32, limit_test=100, refine_rounds=2, pair_shortlist=1)
FAST_RULES = M.RuleSet.fast(limit_train=16, pair_shortlist=1)
DOSE = (-0.4, -0.2, 0.0, 0.1, 0.2, 0.3, 0.4)  # signed strengths of the positive control (x median resid norm)
FAST_DOSE = (-2.0, -1.0, 0.0, 1.0, 2.0)
COLUMNS = ["dataset", "method", "n", "accuracy", "95% CI", "strength", "layers", "- unsteered [95% CI]",
           "- its control [95% CI]"]
ROLES = {
    PAPER: "the paper's specification (auto-encoder alignment, lowest-MI layer pairs, right-vs-wrong contrast)",
    "random": f"random unit vectors at {PAPER}'s hooks, norms and strength",
    LABEL: "the expert's label direction (ridge alignment, choice 1 minus choice 0, train-shortlisted pair, "
           "signed strength chosen on validation)",
    "random_label": f"random unit vectors at {LABEL}'s hook, norm and strength",
    "calibration": "no steering: the unsteered answer margins plus one bias fitted on validation",
    "unsteered": "the target as it is",
    "expert_unsteered": "the expert model itself on the same test items",
}


def register(sub, parent) -> None:
    p = add_command(sub, "demo", parent, run, "the demo: the paper's ExpertSteer with its random control on a few "
                    "compact datasets, and on SST-2 the recipe that works there (the expert's label direction) "
                    "beside its random control, calibration, the unsteered target and the expert; a dose-response "
                    "positive control, a side-by-side generation, a report and one table",
                    "steer-lens demo --out results/demo                       # real models, ~5 minutes\n"
                    "  steer-lens demo --datasets sst2 --out /tmp/sst2         # the paper's method on SST-2 only\n"
                    "  steer-lens demo --fast --out /tmp/demo                   # tiny random models, seconds")
    p.add_argument("--fast", action="store_true", help="tiny random models (smoke test, seconds)")
    p.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    p.add_argument("--cache", default=None, help="row cache (default OUT/cache; a rerun reads its rows back)")
    p.add_argument("--datasets", "--dataset", nargs="+", default=list(PAPER_DATASETS),
                   help=f"datasets of the paper's specification (default {' '.join(PAPER_DATASETS)}); the label "
                        f"recipe always runs on {LABEL_DATASET}")
    p.add_argument("--expert", default="gemma-3-270m", help="expert model (default gemma-3-270m)")
    p.add_argument("--target", default="smollm2-135m-instruct", help="target model (default smollm2-135m-instruct)")
    p.add_argument("--limit-train", type=positive_int, default=None,
                   help=f"train items per dataset (default {DEMO_RULES.limit_train})")
    p.add_argument("--val-limit", type=positive_int, default=None,
                   help=f"validation items (default {DEMO_RULES.limit_val})")
    p.add_argument("--test-limit", type=positive_int, default=None,
                   help=f"test items per dataset (default {DEMO_RULES.limit_test})")
    p.add_argument("--strengths", type=strengths, default=None,
                   help=f"coarse grid of the validation search (default {','.join(map(str, DEMO_RULES.grid))}); "
                        "0 = no steering is always a candidate")
    p.add_argument("--refine-rounds", type=int, default=None,
                   help=f"refinement rounds of the search (default {DEMO_RULES.refine_rounds})")
    p.add_argument("--prompt", default=PROMPT, help="prompt for the side-by-side generation")
    p.add_argument("--max-new-tokens", type=positive_int, default=32)
    p.add_argument("--batch-size", type=positive_int, default=8)
    add_model_args(p)


def rules_of(args) -> M.RuleSet:
    """The demo's rule set with the command's overrides (hashed into every cached row)."""
    base = FAST_RULES if args.fast else DEMO_RULES
    changes = {k: v for k, v in {"limit_train": args.limit_train, "limit_val": args.val_limit,
                                 "limit_test": args.test_limit, "refine_rounds": args.refine_rounds,
                                 "grid": tuple(abs(s) for s in args.strengths if s != 0) if args.strengths else None
                                 }.items() if v is not None}
    if args.fast:  # the tiny models run a few items whatever is asked
        changes = {k: min(v, getattr(base, k)) if k.startswith("limit") else v for k, v in changes.items()}
    return base.replace(**changes)


def run(args) -> int:
    from ..data import load_dataset

    t_start = time.perf_counter()
    for name in dict.fromkeys([*args.datasets, LABEL_DATASET]):
        load_dataset(name)  # fail fast on a bad name, before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    bar = tqdm(total=len(args.datasets) + 5, desc="demo", unit="step", disable=args.json)

    def say(msg: str) -> None:  # results for people: stdout, unless stdout carries --json
        tqdm.write(msg, file=sys.stderr if args.json else sys.stdout)

    def step(name: str) -> None:
        timings[name] = round(time.perf_counter() - t_start - sum(timings.values()), 2)
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        return _run(args, out, step, say, t_start, timings)
    finally:
        bar.close()  # before any error line, so that line stands alone


# ---- rows and the table -------------------------------------------------------------------------
def _diff(d: dict | None) -> str:
    return "" if d is None else f"{d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def _strength(name: str, row: dict) -> str:
    """A method's chosen strength ("0 (none chosen)": validation chose not to steer), the strength a
    control copies, or "-" for a reference (nothing steered)."""
    s = row.get("strength", 0.0)
    if isinstance(M.get(name), M.RandomControl):
        return f"{s:g}"
    if M.get(name).reference:
        return "-"
    return "0 (none chosen)" if s == 0 else f"{s:g}"


def table_rows(blocks: list[dict]) -> list[list]:
    """One row per (dataset, method) in ``COLUMNS`` order: every row of every ``compare_method`` result,
    with its paired difference to the unsteered target and (methods) to its random control."""
    from ..evaluate import EvalResult
    from ..protocol import paired

    out = []
    for block in blocks:
        rows = block["rows"]
        base = rows.get("unsteered")
        for name, r in rows.items():
            vs_base = None
            if base is not None and name != "unsteered" and r["ids"] == base["ids"]:
                vs_base = paired(EvalResult.from_dict(r), EvalResult.from_dict(base))
            ctrl = M.control_of(name)
            vs_ctrl = None
            if ctrl in rows and rows[ctrl]["ids"] == r["ids"]:
                vs_ctrl = paired(EvalResult.from_dict(r), EvalResult.from_dict(rows[ctrl]))
            out.append([block["dataset"], name, r["n"], f"{r['accuracy']:.2f}",
                        f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]", _strength(name, r),
                        " ".join(map(str, r.get("layers") or [])) or "-", _diff(vs_base), _diff(vs_ctrl)])
    return out


def _merge(blocks: list[dict]) -> list[dict]:
    """One block per dataset (the paper's rows and the label recipe's rows of SST-2 together), methods
    before the references (calibration, unsteered, the expert)."""
    by: dict[str, dict] = {}
    for b in blocks:
        by.setdefault(b["dataset"], {"dataset": b["dataset"], "rows": {}})["rows"].update(b["rows"])
    refs = ["calibration", "unsteered", "expert_unsteered"]
    for b in by.values():
        names = [n for n in b["rows"] if n not in refs] + [n for n in refs if n in b["rows"]]
        b["rows"] = {n: b["rows"][n] for n in names}
    return list(by.values())


def _brief(row: dict) -> dict:
    """A row without its per-item lists (for the summary)."""
    keep = ("dataset", "method", "accuracy", "ci_low", "ci_high", "n", "majority_rate", "strength", "layers",
            "pairs", "n_val", "val_curve", "bias", "model", "seconds", "rule_set")
    return {k: row[k] for k in keep if k in row}


def header(rules: M.RuleSet, blocks: list[dict], expert: str, target: str) -> str:
    """What the table holds: which datasets and how many items (the demo is a compact run)."""
    ns = sorted({r["n"] for b in blocks for r in b["rows"].values()})
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    return (f"ExpertSteer demo ({expert} -> {target}): test accuracy on {n} test items per dataset "
            f"({', '.join(b['dataset'] for b in blocks)}); fitted on {rules.limit_train} train items, candidate and "
            f"strength chosen on {rules.limit_val} validation items (rule set {rules.hash}). A compact run: the full "
            "benchmark (`make results`) scores every dataset on up to 500 test items.")


def legend(blocks: list[dict]) -> list[str]:
    names = list(dict.fromkeys(n for b in blocks for n in b["rows"]))
    return [f"{n}: {ROLES.get(n) or M.get(n).doc}" for n in names]


# ---- generations -------------------------------------------------------------------------------
def best_nonzero(row: dict) -> float | None:
    """The best nonzero strength of a row's validation curve (``protocol.rank``), None if none was tried."""
    from ..protocol import rank

    pts = [p for p in row.get("val_curve") or [] if p["strength"] != 0]
    return max(pts, key=rank)["strength"] if pts else None


def generation(target, name: str, row: dict, plan, prompt: str, unsteered: str, max_new_tokens: int) -> dict:
    """The steered generation of one method: at the chosen strength, or, when validation chose 0, at the
    best nonzero strength of its validation curve, labelled as not chosen."""
    from ..generate import generate

    chosen = row["strength"]
    s = chosen if chosen != 0 else best_nonzero(row)
    g = {"method": name, "chosen_strength": chosen, "strength": s, "chosen": chosen != 0}
    g["label"] = (f"{name} (strength {s:g}, chosen on validation)" if chosen != 0 else
                  f"{name} (best nonzero strength {s:g}, not chosen)" if s is not None else None)
    g["text"] = None
    if s is not None:
        with plan.apply(target, s):
            g["text"] = generate(target, [prompt], max_new_tokens=max_new_tokens)[0]
    g["same_as_unsteered"] = g["text"] == unsteered
    return g


def render_generations(prompt: str, unsteered: str, gens: list[dict]) -> str:
    lines = [f"prompt: {prompt}", f"  unsteered: {unsteered!r}"]
    for g in gens:
        if not g["chosen"]:
            lines.append(f"  {g['method']}: validation chose strength 0: no steering chosen")
        if g["text"] is not None:
            text = "(the same text as unsteered)" if g["same_as_unsteered"] else repr(g["text"])
            lines.append(f"  {g['label']}: {text}")
    return "\n".join(lines)


# ---- the run -----------------------------------------------------------------------------------
def render_report(out: Path, head: str, rows: list[list], legend_lines: list[str], comparisons: list[str],
                  dose_text: str, gen_text: str, plans: dict[str, str]) -> Path:
    """``out/report.md``: the table, the comparisons, the positive control and the generations."""
    import os

    from ..io import write_text
    from .report_cmd import _md_table

    md = ["# steer-lens demo", "", head, "", _md_table(rows, COLUMNS), "",
          "Strength: × the median residual norm at each steered hook, chosen on validation (0 = no steering "
          "chosen: the row equals the unsteered target); a random control copies its method's hooks, norms and "
          "strength. Differences are paired on the same test items (bootstrap 95% CI).", "",
          *[f"- `{line.split(':', 1)[0]}`:{line.split(':', 1)[1]}" for line in legend_lines], "",
          "## Each method beside its control and the baselines", ""]
    md += [f"```\n{c}\n```\n" for c in comparisons]
    md += ["## Positive control: a label direction flips answers", "", f"```\n{dose_text}\n```", "",
           "![dose-response](dose_response.png)", "", "## Generations (greedy)", "", f"```\n{gen_text}\n```", "",
           "## Plans (with MI heatmaps)", ""]
    md += [f"- {k}: [{os.path.relpath(v, out)}]({os.path.relpath(v, out)}/plan.json)" for k, v in plans.items()]
    write_text(out / "report.md", "\n".join(md) + "\n")
    return out / "report.md"


def _models(args, out: Path):
    """(target, expert, target id, expert id); ``--fast``: the tiny random pair."""
    if args.fast:
        from ..testing import make_tiny_pair

        # a long context: the tiny tokenizer spends a token per character
        t, e = map(str, make_tiny_pair(out / "tiny_models", n_ctx=4096))
        return load_model(t, args), load_model(e, args), "tiny-target", "tiny-expert"
    from ..bench import model_id

    return (load_model(args.target, args), load_model(args.expert, args), model_id(args.target),
            model_id(args.expert))


def _run(args, out: Path, step, say, t_start: float, timings: dict) -> int:
    from ..bench import Bench, compare_method, render_compare
    from ..io import write_json
    from .fit_cmd import save_plan

    rules = rules_of(args)
    target, expert, target_id, expert_id = _models(args, out)
    step("load models")
    bench = Bench(target, expert, cache=args.cache or out / "cache", rules=rules, target_id=target_id,
                  expert_id=expert_id, batch_size=args.batch_size, dtype=args.dtype)
    jobs = [(ds, PAPER, ("unsteered",)) for ds in args.datasets]
    jobs.append((LABEL_DATASET, LABEL, ("unsteered", "calibration", "expert_unsteered")))
    planned = [(ds, m) for ds, method, base in jobs for m in [method, M.control_of(method), *base] if m]
    cached = sum(bench.row_path(ds, m).exists() for ds, m in dict.fromkeys(planned))
    blocks, comparisons, plans, plan_objs = [], [], {}, {}
    for ds, method, base in jobs:
        res = compare_method(bench, ds, method, baselines=base)
        ctx = bench.context(ds)
        plan = M.get(method).plan_of(ctx, res["rows"][method])
        plan_objs[(ds, method)] = plan
        plans[f"{ds} / {method}"] = save_plan(plan, out / ds / method)["plan"]
        text = render_compare(res)
        comparisons.append(text)
        blocks.append(res)
        say("\n" + text)
        step(f"{method} on {ds}")

    # the positive control: the label direction against its random control on the validation items
    label_rows = blocks[-1]["rows"]
    ctx = bench.context(LABEL_DATASET)
    label_plan = plan_objs[(LABEL_DATASET, LABEL)]
    control = M.control_of(LABEL)
    control_plan = M.get(control).plan_of(ctx, label_rows[control])
    chosen = label_rows[LABEL]["strength"]
    grid = FAST_DOSE if args.fast else DOSE
    strengths_ = sorted(set(grid) | ({chosen} - {0.0}))
    dose = dose_response(target, ctx.val, label_plan, control_plan, strengths_, args.batch_size, LABEL_DATASET)
    dose_text = render_dose(dose, LABEL, control, chosen)
    plot_dose(dose, LABEL, control, chosen, out / "dose_response.png")
    say("\n" + dose_text + f"\nfigure: {out / 'dose_response.png'}")
    step("dose-response")

    del expert  # the expert is not needed to steer
    from ..generate import generate

    unsteered = generate(target, [args.prompt], max_new_tokens=args.max_new_tokens)[0]
    gens = [generation(target, LABEL, label_rows[LABEL], label_plan, args.prompt, unsteered, args.max_new_tokens)]
    if (LABEL_DATASET, PAPER) in plan_objs:  # the paper's plan on the same (movie) data
        paper_row = next(b for b in blocks if b["dataset"] == LABEL_DATASET and b["method"] == PAPER)["rows"][PAPER]
        gens.insert(0, generation(target, PAPER, paper_row, plan_objs[(LABEL_DATASET, PAPER)], args.prompt,
                                  unsteered, args.max_new_tokens))
    gen_text = render_generations(args.prompt, unsteered, gens)
    say("\n" + gen_text)
    step("generate")

    merged = _merge(blocks)
    rows = table_rows(merged)
    head = header(rules, merged, plan_objs[(LABEL_DATASET, LABEL)].expert.get("name"),
                  plan_objs[(LABEL_DATASET, LABEL)].target.get("name"))
    legend_lines = legend(merged)
    report = render_report(out, head, rows, legend_lines, comparisons, dose_text, gen_text, plans)
    step("report")
    result = {"out": str(out), "report": str(report), "rules": rules.to_dict(), "rule_set": rules.hash,
              "expert": label_plan.expert, "target": label_plan.target, "header": head,
              "datasets": [{"dataset": b["dataset"], "methods": list(b["rows"]),
                            "n_test": max(r["n"] for r in b["rows"].values())} for b in merged],
              "columns": COLUMNS, "table": rows,
              "comparisons": [{**{k: v for k, v in b.items() if k != "rows"},
                               "rows": {m: _brief(r) for m, r in b["rows"].items()}} for b in blocks],
              "dose_response": dose, "dose_response_png": str(out / "dose_response.png"),
              "prompt": args.prompt, "unsteered": unsteered, "generations": gens, "plans": plans,
              "rows_from_cache": cached, "rows_total": len(dict.fromkeys(planned)),
              "timings": timings, "seconds": round(time.perf_counter() - t_start, 1), "fast": bool(args.fast)}
    write_json(out / "summary.json", result)
    reused = f" ({cached} of {result['rows_total']} rows read from {bench.cache.root})" if cached else ""
    text = ("\n" + head + "\n" + table(rows, COLUMNS) + "\n" + "\n".join(f"  {x}" for x in legend_lines)
            + f"\n\ndemo finished in {result['seconds']:.0f}s{reused}; report: {report}")
    return emit(args, json.loads(json.dumps(result, default=str)), text)
