"""A 5-strength sweep (steer_lens.sweep) vs 5 separate evaluate() calls on SmolLM2.

A CAA plan (one unit vector at blocks.15.hook_resid_post, the middle of SmolLM2's 30 blocks) is
fitted on 32 SST-2 train items; 40 SST-2 validation items (" negative"/" positive": one token
each after the chat template) are then scored at strengths 0.025, 0.05, 0.1, 0.2, 0.4 (x the
median residual norm) either by ``sweep`` (blocks 0-14 once per batch, blocks 15-29 per
strength) or by five ``evaluate`` calls (every block per strength, prompt pass only since the
continuations are one token). Interleaved best-of-N of this process's CPU time (the machine is
shared), batch 8, 1 torch thread.

Headline: ``sweep_vs_separate_time_ratio`` = best sweep CPU time / best CPU time of the five
evaluate calls (target <= 0.7). Also recorded: the largest |margin| difference between the two
paths over all items and strengths, and whether every prediction matched.

Usage: python benchmarks/bench_sweep.py [--fast] [--repeats N] [--threads T]
"""

from __future__ import annotations

import time

import _common as C

STRENGTHS = (0.025, 0.05, 0.1, 0.2, 0.4)


def main(argv=None) -> int:
    args = C.parser(__doc__).parse_args(argv)
    C.setup(args)
    from steer_lens.data import load_dataset
    from steer_lens.evaluate import evaluate
    from steer_lens.sweep import first_steered_block, sweep

    model, plan, items, n_train, repeats = C.caa_sweep_case(args, load_dataset("sst2"))
    out: dict[str, list] = {}

    def swept():
        out["sweep"] = sweep(model, items, plan, STRENGTHS, batch_size=8)

    def separate():
        out["separate"] = [evaluate(model, items, plan=plan, strength=s, batch_size=8) for s in STRENGTHS]

    load_before = C.load()
    t0 = time.perf_counter()
    times = C.interleaved({"sweep": swept, "separate": separate}, repeats, clock=time.process_time)
    wall = time.perf_counter() - t0
    best = {k: min(v) for k, v in times.items()}
    diffs = [abs(a - b) for x, y in zip(out["sweep"], out["separate"]) for a, b in zip(x.margins, y.margins)]
    same = all(x.predictions == y.predictions for x, y in zip(out["sweep"], out["separate"]))
    C.write(args, "sweep", {
        "sweep_vs_separate_time_ratio": best["sweep"] / best["separate"],
        "sweep_cpu_seconds_best": best["sweep"], "separate_cpu_seconds_best": best["separate"],
        "cpu_seconds_all": times, "wall_seconds_timed": wall,
        "max_abs_margin_difference": max(diffs), "predictions_identical": same,
        "fast_path": "sweep_from_block" in out["sweep"][0].meta,  # False: fell back to evaluate
        "accuracy_by_strength": {str(s): r.accuracy for s, r in zip(STRENGTHS, out["sweep"])},
        "model": str(model.cfg.model_name), "hook": next(iter(plan.vectors)),
        "first_steered_block": first_steered_block(plan), "n_layers": model.cfg.n_layers,
        "n_items": len(items), "n_train": n_train, "strengths": list(STRENGTHS), "batch_size": 8,
        "repeats": repeats, "load_before": load_before, "load_after": C.load(),
        "note": "CPU time of this process (1 torch thread), interleaved best-of-N after one warm-up round; "
                "sweep = blocks below the steered one once per batch + the blocks from it on per strength; "
                "separate = one evaluate() per strength (full forward each); same items, plan and strengths",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
