"""``steer-lens evaluate`` (accuracy with/without a plan) and ``steer-lens generate`` (side by side)."""

from __future__ import annotations

from ..protocol import render_comparison
from .common import (CLIError, add_command, add_model_args, emit, load_model, load_plan, log, positive_int,
                     strength, strengths)

DEFAULT_STRENGTHS = "0.025,0.05,0.1,0.2,0.4"  # x median residual norm; = steer_lens.protocol.StrengthSearch().grid


def register(sub, parent) -> None:
    p = add_command(sub, "evaluate", parent, run_evaluate, "multiple-choice accuracy of a model on a "
                    "dataset unsteered vs steered by a plan (strength chosen on validation) vs a random-"
                    "vector control at the same hooks/norms/strength, with bootstrap CIs",
                    "steer-lens evaluate --model smollm2-135m-instruct --dataset sst2 --plan plans/sst2 "
                    "--limit 100 --out results/sst2_eval.json")
    p.add_argument("--model", required=True, help="the target model the plan was fitted for")
    add_model_args(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--plan", default=None, help="plan folder (omit: unsteered accuracy only)")
    p.add_argument("--method", default=None,
                   help="a registered method (`steer-lens bench --list`) instead of --plan: fitted on train, chosen "
                        "on validation, scored on test beside its random control, the unsteered model and "
                        "calibration (rows cached under --cache)")
    p.add_argument("--expert", default=None, help="--method: the expert model, for the expert's methods")
    p.add_argument("--limit-train", type=positive_int, default=None, help="--method: train items (default 64)")
    p.add_argument("--cache", default=None, help="--method: row cache (default $STEER_LENS_CACHE/bench)")
    add_search_args(p)
    p.add_argument("--strength", type=strength, default=None, help="fixed strength (skips validation)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="test items (default 100; with --method the rule set's 500)")
    p.add_argument("--val-limit", type=positive_int, default=100, help="validation items (default 100)")
    p.add_argument("--no-random", action="store_true", help="skip the random-vector control")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the full results JSON here")

    p = add_command(sub, "generate", parent, run_generate, "greedy generation from a prompt, unsteered "
                    "and (with --plan) steered, side by side",
                    "steer-lens generate --model smollm2-135m-instruct --plan plans/sst2 --strength 0.3 "
                    "--prompt \"Write a review of the movie.\"")
    p.add_argument("--model", required=True)
    add_model_args(p)
    p.add_argument("--prompt", required=True, action="append", help="prompt text (repeatable)")
    p.add_argument("--plan", default=None, help="plan folder")
    p.add_argument("--strength", type=strength, default=0.3, help="steering strength (default 0.3)")
    p.add_argument("--max-new-tokens", type=positive_int, default=48)
    p.add_argument("--no-chat-template", action="store_true", help="feed the raw prompt")


def add_search_args(p) -> None:
    """The validation strength search of steer_lens.protocol.StrengthSearch, as flags."""
    p.add_argument("--strengths", type=strengths, default=DEFAULT_STRENGTHS,
                   help=f"coarse grid of strengths tried on validation, 0 always included (default {DEFAULT_STRENGTHS})")
    p.add_argument("--refine-rounds", type=int, default=3,
                   help="bisection rounds around the best strength and where answers change (default 3)")
    p.add_argument("--no-extend", action="store_true",
                   help="do not try larger strengths when the best is the largest tried")
    p.add_argument("--signed", action="store_true",
                   help="also try negative strengths (label directions, whose useful sign depends on the model)")
    p.add_argument("--extend-flat", action="store_true",
                   help="also try larger strengths while no strength has changed the answers (a flat curve)")


def search_of(args):
    """The StrengthSearch the command's flags describe."""
    from ..protocol import StrengthSearch

    default = StrengthSearch()
    return StrengthSearch(grid=tuple(abs(s) for s in args.strengths if s != 0) or default.grid,
                          extend=() if args.no_extend else default.extend, refine_rounds=args.refine_rounds,
                          signed=args.signed, extend_flat=args.extend_flat)


def run_evaluate_method(args) -> int:
    """``evaluate --method NAME``: one benchmark row beside its random control, unsteered and calibration."""
    from .. import methods as M
    from ..bench import Bench, compare_method, model_id, render_compare
    from ..io import write_json
    from ..models import cache_dir

    if args.plan:
        raise CLIError("give --plan or --method, not both")
    method = M.get(args.method)
    if method.needs_expert and not args.expert:
        raise CLIError(f"method {args.method!r} needs --expert")
    rules = M.RuleSet()
    rules = rules.replace(limit_test=args.limit or rules.limit_test, limit_val=args.val_limit or rules.limit_val,
                          limit_train=args.limit_train or rules.limit_train)
    target = load_model(args.model, args)
    expert = load_model(args.expert, args) if args.expert else None
    bench = Bench(target, expert, cache=args.cache or cache_dir() / "bench", rules=rules,
                  target_id=model_id(args.model), expert_id=model_id(args.expert) if args.expert else None,
                  batch_size=args.batch_size, dtype=args.dtype)
    log(f"{args.method} on {args.dataset}: fit on train, choose on validation, score test (cached in {bench.cache.root}) ...")
    res = compare_method(bench, args.dataset, args.method)
    if args.out:
        write_json(args.out, res)
    return emit(args, res, render_compare(res) + (f"\nresults written to {args.out}" if args.out else ""))


def run_evaluate(args) -> int:
    from ..data import load_dataset
    from ..io import write_json
    from ..protocol import compare

    if args.method:
        return run_evaluate_method(args)
    args.limit = args.limit or 100
    dataset = load_dataset(args.dataset)
    if "test" not in dataset.splits:
        raise ValueError(f"dataset {dataset.name!r} has no test split; available: {sorted(dataset.splits)}")
    plan = load_plan(args.plan) if args.plan else None
    model = load_model(args.model, args)
    if plan is not None:
        plan.check_compatible(model)
    res = compare(model, dataset, plan, search=search_of(args), fixed=args.strength, limit=args.limit,
                  val_limit=args.val_limit, random_control=not args.no_random, batch_size=args.batch_size,
                  seed=args.seed, log=log)
    if args.out:
        write_json(args.out, res)
    text = render_comparison(res) + (f"\nresults written to {args.out}" if args.out else "")
    return emit(args, res, text)


def side_by_side(model, plan, prompts, strength_value, max_new_tokens, chat_template=None) -> list[dict]:
    """Greedy generations per prompt: unsteered and (with a plan) steered."""
    from ..generate import generate

    rows = []
    base = generate(model, prompts, max_new_tokens=max_new_tokens, chat_template=chat_template)
    steered = [None] * len(prompts)
    if plan is not None:
        with plan.apply(model, strength_value):
            steered = generate(model, prompts, max_new_tokens=max_new_tokens, chat_template=chat_template)
    for prompt, b, s in zip(prompts, base, steered):
        rows.append({"prompt": prompt, "unsteered": b, "steered": s,
                     "strength": strength_value if plan is not None else None})
    return rows


def render_generations(rows: list[dict]) -> str:
    parts = []
    for r in rows:
        parts.append(f"prompt: {r['prompt']}\n  unsteered: {r['unsteered']!r}")
        if r["steered"] is not None:
            parts.append(f"  steered (strength {r['strength']:g}): {r['steered']!r}")
    return "\n".join(parts)


def run_generate(args) -> int:
    plan = load_plan(args.plan) if args.plan else None
    model = load_model(args.model, args)
    if plan is not None:
        plan.check_compatible(model)
    rows = side_by_side(model, plan, args.prompt, args.strength, args.max_new_tokens,
                        chat_template=False if args.no_chat_template else None)
    return emit(args, {"generations": rows}, render_generations(rows))
