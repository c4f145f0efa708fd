"""Timing of steer-lens on a random-weight model, each operation against the plain forward pass.

``--shape paper``: a Llama-3.1-8B-shaped model cut to 2 blocks (d_model 4096, 32 heads, 8 key/value
heads, d_mlp 14336, vocab 128256, Llama-3.1 RoPE scaling; 1.5e9 parameters, 3 GB in bf16), for a
GPU. ``small`` and ``tiny``: the same code at widths 256 and 64, for the CPU. The model is
initialised on ``--device`` in ``--dtype`` (bf16 on a GPU), saved as a Hugging Face folder with the tiny byte-level
tokenizer of ``steer_lens.testing`` and loaded back with ``steer_lens.load_model``.

Operations (best of ``--repeats`` after one warm-up, CUDA synchronised):
- ``forward``: the plain forward pass over a batch of prompts; ``capture``: layers 0 and 1, last
  token, of the same prompts;
- ``forward_items``: the plain forward pass over every (prompt, choice) row of the items;
  ``evaluate``: those items steered by a CAA plan; ``sweep``: the same at 5 strengths;
  ``evaluate_x5``: five separate evaluate calls;
- ``generate`` / ``generate_steered``: greedy generation without / with the plan applied.

Ratios: capture / forward, evaluate / forward_items, sweep / forward_items, sweep / evaluate_x5,
generate per new token / forward, generate_steered / generate. Checks: finite logits, and the
largest |margin| difference between sweep and separate evaluate calls.

Usage: python scripts/gpu_timing.py --device cuda --shape paper --out timing.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# d_model, heads, key/value heads, d_mlp, vocab, blocks; batch, new tokens, items, repeats
SHAPES = {
    "paper": dict(d_model=4096, n_heads=32, n_kv=8, d_mlp=14336, vocab=128256, n_layers=2,
                  batch=8, new_tokens=32, n_items=16, repeats=3),
    "small": dict(d_model=256, n_heads=8, n_kv=2, d_mlp=896, vocab=8192, n_layers=2,
                  batch=8, new_tokens=16, n_items=16, repeats=3),
    "tiny": dict(d_model=64, n_heads=4, n_kv=2, d_mlp=224, vocab=512, n_layers=2,
                 batch=4, new_tokens=4, n_items=4, repeats=1),
}
STRENGTHS = (0.25, 0.5, 1.0, 2.0, 4.0)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (a GPU if there is one)")
    p.add_argument("--shape", default=None, choices=list(SHAPES),
                   help="model size (default: paper on a GPU, small on the CPU)")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                   help="default: bfloat16 on a GPU, float32 on the CPU (where bf16 kernels are slow)")
    p.add_argument("--repeats", type=int, default=None, help="best-of-N (default: by shape)")
    p.add_argument("--out", default=None, help="write the JSON here (default: print only)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


def build(folder: Path, shape: dict, device, dtype):
    """A random-weight Llama-3.1-style model on ``device`` in ``dtype``, saved to ``folder``."""
    import torch
    import transformers as tf

    from steer_lens.testing import tiny_tokenizer

    tok = tiny_tokenizer(folder, bos=True, chat=True)
    if len(tok) > shape["vocab"]:
        raise ValueError(f"vocab {shape['vocab']} is smaller than the tokenizer's {len(tok)} tokens")
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    config = tf.LlamaConfig(
        vocab_size=shape["vocab"], hidden_size=shape["d_model"], intermediate_size=shape["d_mlp"],
        num_hidden_layers=shape["n_layers"], num_attention_heads=shape["n_heads"],
        num_key_value_heads=shape["n_kv"], head_dim=shape["d_model"] // shape["n_heads"],
        max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False, rope_parameters=rope,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: no 6 GB float32 detour through the CPU
        hf = tf.AutoModelForCausalLM.from_config(config, dtype=dtype)
    n_params = sum(p.numel() for p in hf.parameters())
    hf.save_pretrained(folder)
    del hf
    return n_params


def best_of(fns: dict, repeats: int, sync) -> dict[str, list[float]]:
    """Each function once untimed, then ``repeats`` timed rounds (order alternating per round)."""
    for fn in fns.values():
        fn()
        sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name, fn in (list(fns.items()) if r % 2 == 0 else list(reversed(fns.items()))):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def run(args) -> dict:
    import torch

    import steer_lens as sl
    from steer_lens.baselines import fit_caa
    from steer_lens.models import resolve_device
    from steer_lens.sweep import sweep
    from steer_lens.tokens import batch_encode

    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars would fill the log
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    shape = SHAPES[args.shape or ("paper" if on_gpu else "small")]
    repeats = args.repeats or shape["repeats"]
    args.dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    dtype = getattr(torch, args.dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if on_gpu else (lambda: None)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)

    tmp = tempfile.TemporaryDirectory(prefix="steer_lens_timing_")
    folder = Path(tmp.name)
    t0 = time.perf_counter()
    n_params = build(folder, shape, device, dtype)
    sync()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = sl.load_model(folder, device=device, dtype=dtype)
    sync()
    load_s = time.perf_counter() - t0

    b = shape["batch"]
    prompts = [f"Question {i}: what is {37 * i + 5} plus {11 * i + 3}? Steering vectors move a model's "
               f"residual stream along one direction; think it through." for i in range(b)]
    batch = batch_encode(model, prompts)
    tokens, mask = batch.tokens.to(device), batch.attention_mask.to(device)
    arith = sl.load_dataset("arithmetic_2way")
    pos, neg = sl.contrast_prompts(arith.split("train", limit=2 * b))
    # one-character choices: the byte-level tokenizer then differs only in the last token,
    # which is the sweep's fast path (as real tokenizers give for " positive" / " negative")
    items = [dataclasses.replace(it, choices=("1", "2")) for it in arith.split("test", limit=shape["n_items"])]
    layer = shape["n_layers"] - 1
    plan = fit_caa(model, pos, neg, layer)
    hook = next(iter(plan.vectors))
    rows = batch_encode(model, [(it.prompt(), c) for it in items for c in it.completions()])
    rows_t, rows_m = rows.tokens.to(device), rows.attention_mask.to(device)
    out: dict = {}

    def forward():
        with torch.no_grad():
            out["logits"] = model(tokens, attention_mask=mask)

    def forward_items():
        with torch.no_grad():
            for i in range(0, rows_t.shape[0], 8):
                model(rows_t[i:i + 8], attention_mask=rows_m[i:i + 8])

    def capture():
        sl.capture(model, prompts, layers=list(range(shape["n_layers"])), position="last", batch_size=b,
                   progress=False)

    def evaluate():
        out["evaluate"] = sl.evaluate(model, items, plan=plan, strength=1.0, batch_size=8)

    def evaluate_x5():
        out["separate"] = [sl.evaluate(model, items, plan=plan, strength=s, batch_size=8) for s in STRENGTHS]

    def swept():
        out["sweep"] = sweep(model, items, plan, STRENGTHS, batch_size=8)

    def generate():
        out["generate"] = sl.generate(model, prompts, max_new_tokens=shape["new_tokens"])

    def generate_steered():
        with plan.apply(model, 1.0):
            out["generate_steered"] = sl.generate(model, prompts, max_new_tokens=shape["new_tokens"])

    t0 = time.perf_counter()
    times = best_of({"forward": forward, "capture": capture, "forward_items": forward_items, "evaluate": evaluate,
                     "sweep": swept, "evaluate_x5": evaluate_x5, "generate": generate,
                     "generate_steered": generate_steered}, repeats, sync)
    timed_s = time.perf_counter() - t0
    best = {k: min(v) for k, v in times.items()}
    diffs = [abs(a - c) for x, y in zip(out["sweep"], out["separate"]) for a, c in zip(x.margins, y.margins)]
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_gpu else "cpu",
        "dtype": args.dtype,
        "shape": {"name": args.shape or ("paper" if on_gpu else "small"), **shape, "repeats": repeats},
        "params": n_params,
        "prompt_batch": list(tokens.shape),
        "item_rows": list(rows_t.shape),
        "steering_hook": hook,
        "build_s": round(build_s, 3),
        "load_s": round(load_s, 3),
        "timed_s": round(timed_s, 3),
        "best_s": {k: round(v, 5) for k, v in best.items()},
        "all_s": {k: [round(x, 5) for x in v] for k, v in times.items()},
        "ratios": {
            "capture_vs_forward": best["capture"] / best["forward"],
            "evaluate_vs_forward_items": best["evaluate"] / best["forward_items"],
            "sweep_vs_forward_items": best["sweep"] / best["forward_items"],
            "sweep_vs_evaluate_x5": best["sweep"] / best["evaluate_x5"],
            "generate_per_token_vs_forward": best["generate"] / shape["new_tokens"] / best["forward"],
            "generate_steered_vs_generate": best["generate_steered"] / best["generate"],
        },
        "checks": {
            "logits_finite": bool(torch.isfinite(out["logits"]).all()),
            "sweep_vs_evaluate_max_margin_diff": max(diffs) if diffs else None,
            "sweep_predictions_equal_evaluate": all(x.predictions == y.predictions
                                                    for x, y in zip(out["sweep"], out["separate"])),
            "steering_changed_generation": out["generate"] != out["generate_steered"],
        },
    }
    result["ratios"] = {k: round(v, 4) for k, v in result["ratios"].items()}
    if on_gpu:
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    del model
    tmp.cleanup()
    return result


def main(argv=None) -> int:
    args = parse(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if result["checks"]["logits_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
