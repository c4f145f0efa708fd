"""Extra time per generated token of field steering (per-token RFM gradient) on SmolLM2.

A self-RFM plan with one hook (resid_post of the layer at 47% depth, layer 14 of 30) is fitted
in field mode on 64 SST-2 train items (64 positive and 64 negative contrast prompts). Three
prompts are then generated one at a time (batch 1, greedy, 32 new tokens each, KV cache, EOS
does not stop them) unsteered, with the plan's fixed vector (``mode="fixed"``) and with its
field (``mode="field"``), strength 0.1 at all positions; interleaved best-of-N of this process's
CPU time (the machine is shared; wall time swings by more than the effect under load).

Headline: CPU ms per generated token spent computing the field (every ``field_directions``
call of the field runs is timed, the prompt forwards included, divided by the generated
tokens). That is the whole difference between the two modes' hooks (masking and the add are
shared); the end-to-end difference (field - fixed run CPU time per generated token) is recorded
beside it. Also recorded: how much the field's direction varies over the prompts' tokens at the
hook (|cos| with the fixed vector, share of tokens where the gradient vanished).

Usage: python benchmarks/bench_field.py [--fast] [--repeats N] [--threads T]
"""

from __future__ import annotations

import time

import _common as C

PROMPTS = ["Write a one-line review of a film about a chess player who travels to Iceland.",
           "Describe the last meal you enjoyed in two sentences.",
           "Is this review positive or negative? 'The plot drags, but the acting is superb.'"]


def main(argv=None) -> int:
    args = C.parser(__doc__).parse_args(argv)
    C.setup(args)
    import torch

    import steer_lens.field as F
    from steer_lens.baselines import fit_self_rfm
    from steer_lens.data import contrast_prompts, load_dataset
    from steer_lens.field import field_directions
    from steer_lens.tokens import encode_all, pad

    model = C.target_model(args)
    n_items, new_tokens, repeats = (16, 4, args.repeats or 1) if args.fast else (64, 32, args.repeats or 3)
    layer = min(model.cfg.n_layers - 1, round(0.47 * model.cfg.n_layers))
    pos, neg = contrast_prompts(load_dataset("sst2").split("train", limit=n_items))
    t0 = time.perf_counter()
    plan = fit_self_rfm(model, pos, neg, layer, mode="field")
    fit_seconds = time.perf_counter() - t0
    (hook, rfms), = plan.rfms.items()
    batches = [pad(model, encode_all(model, [p]), padding_side="left") for p in PROMPTS]

    def run(mode: str | None):
        steer = (lambda: plan.apply(model, 0.1, mode=mode)) if mode else None
        return C.greedy_generation(model, batches, new_tokens, steer)

    spent, inner = [], F.field_directions

    def timed(rfms_, x):  # the field hook looks field_directions up at call time
        t = time.process_time()
        out = inner(rfms_, x)
        spent.append(time.process_time() - t)
        return out

    load_before = C.load()
    F.field_directions = timed
    try:
        times = C.interleaved({"unsteered": run(None), "fixed": run("fixed"), "field": run("field")}, repeats,
                              clock=time.process_time)
    finally:
        F.field_directions = inner
    best = {k: min(v) for k, v in times.items()}
    n_generated = len(PROMPTS) * new_tokens
    field_runs = repeats + 1  # + the warm-up round
    with torch.no_grad():  # how context-dependent the field is on these prompts' own tokens
        xs = [model.run_with_cache(b.tokens, names_filter=[hook])[1][hook][0, 1:] for b in batches]  # no BOS/sink
        dirs = field_directions(rfms, torch.cat(xs))
    norms = dirs.norm(dim=-1)
    cos = (dirs[norms > 0] @ plan.vectors[hook].to(dirs)).abs()
    C.write(args, "field", {
        "field_extra_ms_per_token": 1000 * sum(spent) / field_runs / n_generated,
        "field_minus_fixed_cpu_ms_per_token": 1000 * (best["field"] - best["fixed"]) / n_generated,
        "fixed_minus_unsteered_cpu_ms_per_token": 1000 * (best["fixed"] - best["unsteered"]) / n_generated,
        "unsteered_cpu_ms_per_token": 1000 * best["unsteered"] / n_generated,
        "field_vs_unsteered_cpu_ratio": best["field"] / best["unsteered"],
        "field_calls_per_run": len(spent) / field_runs,
        "cpu_seconds_best": best, "cpu_seconds_all": times, "fit_seconds": fit_seconds,
        "model": str(model.cfg.model_name), "hook": hook, "n_items": n_items,
        "n_training_points": int(rfms[0].centers.shape[0]), "prompts": len(PROMPTS), "new_tokens": new_tokens,
        "strength": 0.1, "positions": "all", "kv_cache": True, "repeats": repeats,
        "field_abs_cos_with_fixed_vector": {"mean": float(cos.mean()), "min": float(cos.min()),
                                            "max": float(cos.max()), "n_tokens": int(len(norms))},
        "field_vanished_share": float((norms == 0).float().mean()),
        "load_before": load_before, "load_after": C.load(),
        "note": "CPU time of this process (1 torch thread), batch 1; headline = CPU time inside the field's "
                "gradient computation per generated token (3 prompts x new_tokens; the prompt forwards "
                "amortised in); end-to-end best-of-N CPU differences beside it; the field computes one "
                "closed-form RFM gradient per token at the hook (O(n d^2) for n training points)",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
