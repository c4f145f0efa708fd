"""Peak memory of capturing 4x more prompts, streamed to sharded safetensors, over the 1x run.

Per-token capture (position "all": every real token, all 30 layers of SmolLM2, float32, about
69 KB per token) of N = 64 SST-2 test prompts (chat template) and of the same 64 prompts
repeated 4 times (4N = 256; repeating keeps the length distribution, so only the count
changes). Each run is a fresh process: load the model, capture one warm-up batch, reset the
kernel's peak-RSS counter (``/proc/self/clear_refs``), then capture; the measure is the peak
resident memory above the RSS just before the capture (VmHWM - VmRSS), so the model's own
weights are not counted. Headline: streamed ``out=folder, shard_size=32`` (4N peak / N peak);
the in-memory capture's ratio is recorded beside it as the contrast. With --fast (tiny model, a
smoke test whose numbers mean nothing) one child process makes the four runs one after the other.

Usage: python benchmarks/bench_capture_memory.py [--fast] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

BATCH, SHARD = 16, 32


def _status(key: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}; this benchmark needs Linux")


def _ratio(a: int, b: int, page: int = 4096) -> float:
    """a / b with peaks below one page counted as one page: a small capture can fit in memory the
    allocator already holds (the tiny --fast model: peak growth 0), which would divide by zero."""
    return max(a, page) / max(b, page)


RUNS = [("stream", 1), ("stream", 4), ("memory", 1), ("memory", 4)]


def child(args, model=None) -> dict:
    """One measurement in this process: peak bytes above the start, seconds, tokens, and the
    bytes of activations captured (tokens x layers x d_model x 4)."""
    C.setup(args)
    from steer_lens.activations import capture
    from steer_lens.data import load_dataset
    from steer_lens.tokens import encode_all

    model = model or C.target_model(args)
    base = [it.prompt() for it in load_dataset("sst2").split("test", limit=args.n)]
    prompts = base * args.times
    layers = list(range(model.cfg.n_layers))
    with tempfile.TemporaryDirectory() as tmp:
        capture(model, prompts[:BATCH], layers=layers, position="all", batch_size=BATCH,
                out=Path(tmp) / "warmup", progress=False)  # imports, allocator, first-call costs
        kw = dict(layers=layers, position="all", batch_size=BATCH, progress=False)
        if args.mode == "stream":
            kw |= dict(out=Path(tmp) / "acts", shard_size=SHARD)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        before = _status("VmRSS")
        t0 = time.perf_counter()
        result = capture(model, prompts, **kw)
        seconds = time.perf_counter() - t0
        peak = _status("VmHWM") - before
        del result
    n_tokens = sum(len(ids) for ids, _ in encode_all(model, prompts))
    return {"peak_bytes": peak, "seconds": seconds, "n_tokens": n_tokens, "n_prompts": len(prompts),
            "captured_bytes": n_tokens * len(layers) * model.cfg.d_model * 4}


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one measurement
    p.add_argument("--mode", choices=["stream", "memory", "all"], default="stream")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--times", type=int, default=1)
    args = p.parse_args(argv)
    n = args.n or (32 if args.fast else 64)
    if args.child and args.mode == "all":  # --fast: the four runs in this one process
        model = C.target_model(args)
        print(json.dumps({f"{mode}_{times}x": child(argparse.Namespace(**{**vars(args), "mode": mode, "times": times}),
                                                    model) for mode, times in RUNS}))
        return 0
    if args.child:
        print(json.dumps(child(args)))
        return 0
    load_before = C.load()
    runs: dict[str, dict] = {}
    common = ["--n", str(n), "--threads", str(args.threads)] + (["--fast"] if args.fast else [])
    children = ([["--mode", "all"]] if args.fast else
                [["--mode", mode, "--times", str(times)] for mode, times in RUNS])
    for extra in children:
        cmd = [sys.executable, __file__, "--child", *extra, *common]
        out = json.loads(subprocess.run(cmd, cwd=C.ROOT, check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1])
        runs |= out if args.fast else {f"{extra[1]}_{extra[3]}x": out}
    for key, run in runs.items():
        print(f"{key}: {run}", flush=True)
    mb = {k: v["peak_bytes"] / 2**20 for k, v in runs.items()}
    C.write(args, "capture_memory", {
        "capture_peak_memory_ratio": _ratio(runs["stream_4x"]["peak_bytes"], runs["stream_1x"]["peak_bytes"]),
        "in_memory_peak_memory_ratio": _ratio(runs["memory_4x"]["peak_bytes"], runs["memory_1x"]["peak_bytes"]),
        "peak_mb": mb, "runs": runs, "n_prompts_1x": n, "batch_size": BATCH, "shard_size": SHARD,
        "position": "all", "layers": "all",
        "note": "peak RSS above the RSS just before the capture (model weights excluded), one fresh "
                f"process per run{' (--fast: one process for all four)' if args.fast else ''}; 4x = the same prompts repeated 4 times; streamed runs write "
                f"shard_size={SHARD} prompts per safetensors file.",
        "load_before": load_before, "load_after": C.load(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
