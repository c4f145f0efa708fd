"""Cold vs warm model loading for both registry models.

Cold: a fresh subprocess with an empty temporary STEER_LENS_CACHE (GGUF de-quantisation, cache
write, TransformerLens boot). Warm: fresh subprocesses on the now-filled cache (best of N).
Only the ``load_model`` call is timed (imports happen before the clock starts).

Usage: python benchmarks/bench_load.py [--fast] [--repeats N] [--threads T]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as C

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(int(sys.argv[2]))
import transformers, transformer_lens  # imported before the clock starts
from steer_lens.models import load_model
t0 = time.perf_counter()
model = load_model(sys.argv[1])
t1 = time.perf_counter()
load_model(sys.argv[1])
print(json.dumps({"first": t1 - t0, "second_in_process": time.perf_counter() - t1}))
"""


def timed_load(name: str, cache: str, threads: int) -> dict:
    env = {**os.environ, "STEER_LENS_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", CHILD, name, str(threads)], env=env, cwd=C.ROOT,
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"loading {name} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = C.parser(__doc__).parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    if args.fast:
        names = [C.tiny_models(Path(tmp.name))[1]]
    else:
        names = ["smollm2-135m-instruct", "gemma-3-270m"]
    repeats = args.repeats or (1 if args.fast else 2)  # --fast checks that it runs: one warm load
    per_model = {}
    for name in names:
        cache = tempfile.mkdtemp(dir=tmp.name, prefix="cache-")
        load_before = C.load()
        cold = timed_load(name, cache, args.threads)
        warm = [timed_load(name, cache, args.threads) for _ in range(repeats)]
        best_warm = min(w["first"] for w in warm)
        per_model[Path(name).name if args.fast else name] = {
            "cold_seconds": cold["first"], "warm_seconds_best": best_warm,
            "warm_seconds_all": [w["first"] for w in warm],
            "second_load_in_process_seconds": min(w["second_in_process"] for w in warm),
            "speedup": cold["first"] / best_warm, "load_before": load_before, "load_after": C.load(),
        }
    speedups = [m["speedup"] for m in per_model.values()]
    C.write(args, "load", {
        "warm_vs_cold_load_speedup": min(speedups), "per_model": per_model,
        "note": "headline = the smaller of the models' speedups; cold = empty temporary cache in a fresh "
                "process, warm = fresh process on the filled cache (best of N)",
        "repeats": repeats,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
