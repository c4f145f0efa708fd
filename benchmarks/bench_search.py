"""A row's validation choice vs one test pass, and the core benchmark's projected hours.

One CAA row on SST-2 (``steer_lens.methods``' "caa": two shortlisted layers, the rule set's
strength search) with the benchmark's sizes: 100 validation items, 500 test items, two torch
threads. Timed: the row's validation choice (fit excluded; the unsteered validation pass, which
the runner computes once per model and dataset for every method, timed apart) and one unsteered
test pass. ``--rules`` picks the search rules timed (default "halving"; add "reference" for
today's search, which takes minutes to an hour on SmolLM2).

Headline: ``search_vs_test_time_ratio`` = choice seconds / test-pass seconds under the first rule
(target <= 1: choose on validation in the time of one test pass). ``core_benchmark_hours``: the
projection ``core_benchmark_hours()`` of the measured times over 15 datasets and the core methods
(each choosing method: its choice and its test pass, plus its random control's test pass; each
reference row: a test pass) on two cores, one row at a time at two threads.

Usage: python benchmarks/bench_search.py [--fast] [--rules halving reference] [--dataset sst2]
"""

from __future__ import annotations

import dataclasses
import time

import _common as C

CHOOSING = ("label_caa", "expertsteer_label", "caa", "self_rfm", "expertsteer_autoencoder")
REFERENCES = ("unsteered", "expert_unsteered", "calibration")


def core_methods() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(methods that choose on validation, rows that only score test) of the core suite: the
    benchmark CLI's ``CORE`` list when importable, else the list above."""
    try:
        import steer_lens.methods as M
        from steer_lens.bench.cli import CORE

        choosing = tuple(m for m in CORE if M.get(m).control is not None and not M.get(m).reference)
        return choosing, tuple(m for m in CORE if m not in choosing)
    except Exception:  # the CLI or registry changed shape: the list above
        return CHOOSING, REFERENCES


def core_benchmark_hours(choice_seconds: float, test_seconds: float, *, datasets: int = 15,
                         choosing: int | None = None, references: int | None = None, cores: int = 2,
                         threads_per_row: int = 2, val_pass_seconds: float = 0.0) -> float:
    """Projected wall hours of the core benchmark: per dataset, every choosing method's validation
    choice and test pass plus its random control's test pass, every reference row's test pass and
    one unsteered validation pass; rows run ``cores // threads_per_row`` at a time."""
    if choosing is None or references is None:
        c, r = core_methods()
        choosing = len(c) if choosing is None else choosing
        references = len(r) if references is None else references
    per_dataset = choosing * (choice_seconds + 2 * test_seconds) + references * test_seconds + val_pass_seconds
    return datasets * per_dataset / max(1, cores // threads_per_row) / 3600


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--rules", nargs="+", default=["halving"], choices=["halving", "reference"])
    p.add_argument("--dataset", default="sst2")
    p.set_defaults(threads=None)
    args = p.parse_args(argv)
    args.threads = args.threads or (1 if args.fast else 2)  # tiny models: one thread (no OpenMP stalls)
    C.setup(args)
    import steer_lens.methods as M
    from steer_lens.data import load_dataset
    from steer_lens.evaluate import evaluate
    from steer_lens.protocol import choose, point

    model = C.target_model(args)
    rules = M.RuleSet.fast(limit_val=12, limit_test=24) if args.fast else M.RuleSet()
    ds = load_dataset(args.dataset)
    ctx = M.Context(ds, model, None, rules)
    method = M.get("caa")
    candidates = method.candidates(ctx)  # the fit (not timed)
    load_before = C.load()
    t0 = time.perf_counter()
    zero = point(0.0, ctx.val0(model))
    val_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = evaluate(model, ds, split="test", limit=rules.limit_test, batch_size=ctx.batch_size)
    test_seconds = time.perf_counter() - t0
    choices = {}
    for rule in args.rules:
        search = dataclasses.replace(ctx.search(method.signed), strategy=rule)
        t0 = time.perf_counter()
        c = choose(model, ctx.val, candidates, search=search, zero=zero, batch_size=ctx.batch_size)
        choices[rule] = {"seconds": time.perf_counter() - t0, "key": str(c.key), "strength": c.strength,
                         "val_accuracy": c.best["accuracy"], "n_points": sum(len(v) for v in c.curves.values())}
    first = choices[args.rules[0]]
    C.write(args, "search", {
        "search_vs_test_time_ratio": first["seconds"] / test_seconds,
        "core_benchmark_hours": core_benchmark_hours(first["seconds"], test_seconds, val_pass_seconds=val_pass),
        "choice_seconds": first["seconds"], "test_pass_seconds": test_seconds, "val_pass_seconds": val_pass,
        "rule": args.rules[0], "choices": choices, "model": str(model.cfg.model_name), "dataset": ds.name,
        "n_val": len(ctx.val), "n_test": test.n, "candidates": [str(k) for k in candidates],
        "core_methods": [list(x) for x in core_methods()], "load_before": load_before, "load_after": C.load(),
        "note": "wall seconds at --threads torch threads; the choice excludes the fit and the unsteered validation "
                "pass (shared by every method on a dataset); core_benchmark_hours projects the measured times "
                "over 15 datasets, one row at a time on two cores",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
