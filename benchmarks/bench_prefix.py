"""A strength sweep on k-shot prompts with the shared prefix run once vs on every item, on SmolLM2.

4-shot SST-2 validation items (the 4 examples, drawn from train, are the same for every item: about 200 of
each prompt's 240 tokens) are scored at strengths 0.025, 0.05, 0.1, 0.2, 0.4 (x the median residual norm)
along a CAA vector at blocks.15.hook_resid_post (fitted on 32 4-shot train contrasts) by ``sweep``, once with
``SweepInputs(share_prefix=True)`` (the prefix through the blocks once, as one row; the items continue from
its KV cache) and once with ``share_prefix=False`` (every item's whole prompt). Interleaved best-of-N of this
process's CPU time (the machine is shared), batch 8, 1 torch thread; each round builds its inputs afresh, so
both lower and upper passes are timed.

Headline: ``prefix_vs_full_time_ratio`` = best CPU time with the shared prefix / without (target <= 0.5).
Also recorded: the prefix length, the largest |margin| difference between the two paths and whether every
prediction matched.

Usage: python benchmarks/bench_prefix.py [--fast] [--repeats N] [--threads T]
"""

from __future__ import annotations

import time

import _common as C

STRENGTHS = (0.025, 0.05, 0.1, 0.2, 0.4)


def main(argv=None) -> int:
    args = C.parser(__doc__).parse_args(argv)
    C.setup(args)
    from steer_lens.data import load_dataset
    from steer_lens.prompting import prompted_dataset
    from steer_lens.sweep import SweepInputs, sweep

    # fast: the tiny models' byte tokens and 512-token context fit one arithmetic example, not four reviews
    name, k = ("arithmetic_2way", 1) if args.fast else ("sst2", 4)
    model, plan, items, n_train, repeats = C.caa_sweep_case(args, prompted_dataset(load_dataset(name), k))
    min_prefix = 8 if args.fast else 64
    out: dict[str, object] = {}

    def run(share: bool):
        def go():
            inputs = SweepInputs(model, items, batch_size=8, keep=1, share_prefix=share, min_prefix=min_prefix)
            out[share] = (inputs.prefix, sweep(model, items, plan, STRENGTHS, batch_size=8, inputs=inputs))
        return go

    load_before = C.load()
    t0 = time.perf_counter()
    times = C.interleaved({"prefix": run(True), "full": run(False)}, repeats, clock=time.process_time)
    wall = time.perf_counter() - t0
    best = {k: min(v) for k, v in times.items()}
    (prefix, shared), (_, full) = out[True], out[False]
    diffs = [abs(a - b) for x, y in zip(shared, full) for a, b in zip(x.margins, y.margins)]
    lengths = [len(it.prompt()) for it in items]
    C.write(args, "prefix", {
        "prefix_vs_full_time_ratio": best["prefix"] / best["full"],
        "prefix_cpu_seconds_best": best["prefix"], "full_cpu_seconds_best": best["full"],
        "cpu_seconds_all": times, "wall_seconds_timed": wall, "prefix_tokens": prefix,
        "max_abs_margin_difference": max(diffs),
        "predictions_identical": all(x.predictions == y.predictions for x, y in zip(shared, full)),
        "accuracy_by_strength": {str(s): r.accuracy for s, r in zip(STRENGTHS, shared)},
        "prompt_chars_mean": sum(lengths) / len(lengths), "model": str(model.cfg.model_name),
        "hook": next(iter(plan.vectors)), "n_items": len(items), "n_train": n_train, "dataset": name, "k": k,
        "strengths": list(STRENGTHS), "batch_size": 8, "repeats": repeats, "load_before": load_before,
        "load_after": C.load(),
        "note": "CPU time of this process (1 torch thread), interleaved best-of-N after one warm-up round; "
                "each round: SweepInputs built afresh (lower pass) + 5 strengths (upper passes); same items, plan, "
                "strengths; share_prefix=True runs the k-shot prefix once as one row",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
