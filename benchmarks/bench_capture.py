"""Capture throughput vs a plain forward pass of the same batch on SmolLM2.

capture(all 30 layers, position "mean") tokens/s divided by model(tokens) tokens/s (same
pre-tokenised prompts, same batch size); also capture of layers 0-4 (which stops the forward
after block 4) vs the full forward. Interleaved best-of-N.

Usage: python benchmarks/bench_capture.py [--fast] [--repeats N] [--threads T]
"""

from __future__ import annotations

import _common as C


def main(argv=None) -> int:
    args = C.parser(__doc__).parse_args(argv)
    C.setup(args)
    import torch

    from steer_lens.activations import capture
    from steer_lens.tokens import encode_all, pad

    model = C.target_model(args)
    n, words, repeats = (8, 10, args.repeats or 2) if args.fast else (16, 48, args.repeats or 5)
    base = "The quarterly report shows revenue growth while costs stayed flat across regions"
    prompts = [" ".join((base + f" item {i}").split()[: words - i % 5]) for i in range(n)]
    encoded = encode_all(model, prompts)
    batch = pad(model, encoded)
    n_tokens = int(batch.attention_mask.sum())
    all_layers = list(range(model.cfg.n_layers))
    early = list(range(min(5, model.cfg.n_layers)))

    def forward():
        with torch.no_grad():
            model(batch.tokens, attention_mask=batch.attention_mask)
        if hasattr(model, "_last_hf_cache"):
            del model._last_hf_cache

    fns = {
        "forward": forward,
        "capture_all": lambda: capture(model, prompts, layers=all_layers, position="mean", batch_size=n,
                                       progress=False),
        "capture_early": lambda: capture(model, prompts, layers=early, position="mean", batch_size=n,
                                         progress=False),
    }
    load_before = C.load()
    times = C.interleaved(fns, repeats)
    best = {k: min(v) for k, v in times.items()}
    tps = {k: n_tokens / v for k, v in best.items()}
    C.write(args, "capture", {
        "capture_vs_forward_throughput_ratio": tps["capture_all"] / tps["forward"],
        "capture_early_layers_vs_forward_throughput_ratio": tps["capture_early"] / tps["forward"],
        "tokens_per_second": tps, "seconds_best": best, "seconds_all": times,
        "model": str(model.cfg.model_name), "n_prompts": n, "n_tokens": n_tokens, "batch_size": n, "repeats": repeats,
        "early_layers": early, "position": "mean",
        "note": "capture includes tokenisation, padding, pooling and hooks; it stops the forward after "
                "the last requested block (so it skips the final norm and the unembedding).",
        "load_before": load_before, "load_after": C.load(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
