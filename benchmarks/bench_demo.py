"""Wall-clock time of ``steer-lens demo`` (default: real models, warm model cache, a fresh row cache)
in a subprocess, end to end after set-up; also records the demo's printed table. With --fast (tiny
models, a smoke test) the demo runs in this process.

Usage: python benchmarks/bench_demo.py [--fast] [--threads T]   (--threads 0: torch's default, the default
without --fast; --fast: tiny models, one thread unless given: no OpenMP stalls beside other jobs)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time

import _common as C


def _child_cpu() -> float:
    """User + system CPU seconds of finished child processes (a load-independent cost figure)."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.set_defaults(threads=None)
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.fast else 0
    if args.fast:
        C.scratch_ledger()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "steer_lens.cli", "demo", "--out", tmp, "--json"]
        if args.fast:
            cmd.append("--fast")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        load_before = C.load()
        if args.fast:  # a smoke test: the demo's main in this process (no interpreter start to time)
            t0, cpu0 = time.perf_counter(), time.process_time()
            from steer_lens.cli import run_captured

            code, stdout, stderr = run_captured(cmd[3:])
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        else:
            t0, cpu0 = time.perf_counter(), _child_cpu()
            res = subprocess.run(cmd, cwd=C.ROOT, capture_output=True, text=True, check=False)
            seconds, cpu = time.perf_counter() - t0, _child_cpu() - cpu0
            code, stdout, stderr = res.returncode, res.stdout, res.stderr
        if code != 0:
            raise RuntimeError(f"demo failed ({code}):\n{stderr[-3000:]}")
        summary = json.loads(stdout)
        if summary["rows_from_cache"]:
            raise RuntimeError("the demo read rows from a cache: the timing would not be end to end")
    C.write(args, "demo", {
        "demo_seconds": seconds, "demo_cpu_seconds": cpu, "internal_seconds": summary["seconds"], "step_seconds": summary["timings"],
        "datasets": [r["dataset"] for r in summary["datasets"]], "header": summary["header"],
        "columns": summary["columns"], "table": summary["table"], "rules": summary["rules"],
        "n_test": {r["dataset"]: r["n_test"] for r in summary["datasets"]},
        "dose_response": {k: summary["dose_response"][k] for k in ("strengths", "curves", "n", "monotone", "spearman")},
        "generations": summary["generations"], "unsteered_generation": summary["unsteered"],
        "command": " ".join(cmd[1:]), "load_before": load_before, "load_after": C.load(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
