"""Steered vs unsteered greedy generation on SmolLM2: 64 new tokens, KV cache, same prompt.

The steered run adds three relative-scale vectors (strength 0.1, random unit directions at
target layers 8, 14, 20 with the model's median residual norms) through ``SteeringPlan.apply``.
Both runs generate exactly ``new_tokens`` tokens (EOS does not stop them). Interleaved best-of-N.

Usage: python benchmarks/bench_steer_generate.py [--fast] [--repeats N] [--threads T]
"""

from __future__ import annotations

import _common as C


def main(argv=None) -> int:
    args = C.parser(__doc__).parse_args(argv)
    C.setup(args)
    import torch

    from steer_lens.pipeline import target_norms
    from steer_lens.plan import SteeringPlan, model_card
    from steer_lens.tokens import encode_all, pad

    model = C.target_model(args)
    new_tokens, repeats = (8, args.repeats or 2) if args.fast else (64, args.repeats or 5)
    n = model.cfg.n_layers
    layers = sorted({min(n - 1, round(f * n)) for f in (0.27, 0.47, 0.67)})
    prompt = "Write a short review of a film about a chess player who travels to Iceland."
    gen = torch.Generator().manual_seed(0)
    vectors = {f"blocks.{layer}.hook_resid_post": torch.randn(model.cfg.d_model, generator=gen) for layer in layers}
    vectors = {k: v / v.norm() for k, v in vectors.items()}
    norms = target_norms(model, [prompt], layers, "resid_post", None)
    plan = SteeringPlan(vectors=vectors, pairs=[], mi=None, expert={"name": "bench"}, target=model_card(model),
                        norms=norms)
    batch = pad(model, encode_all(model, [prompt]), padding_side="left")

    def run(steered: bool):
        return C.greedy_generation(model, [batch], new_tokens, (lambda: plan.apply(model, 0.1)) if steered else None)

    load_before = C.load()
    times = C.interleaved({"unsteered": run(False), "steered": run(True)}, repeats)
    best = {k: min(v) for k, v in times.items()}
    C.write(args, "steer_generate", {
        "steer_generate_overhead_ratio": best["steered"] / best["unsteered"],
        "seconds_best": best, "seconds_all": times, "tokens_per_second_unsteered": new_tokens / best["unsteered"],
        "model": str(model.cfg.model_name), "new_tokens": new_tokens, "prompt_tokens": int(batch.tokens.shape[1]),
        "steered_layers": layers, "strength": 0.1, "kv_cache": True, "repeats": repeats,
        "load_before": load_before, "load_after": C.load(),
        "note": "best-of-N wall times, interleaved; steering adds one vector add per steered layer per "
                "decode step, so the ratio is noise around 1 (below 1 = faster by chance on a shared machine)",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
