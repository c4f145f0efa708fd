"""Run every benchmark (each in its own process) and write benchmarks/results.json + results.md.

The RFM figures come from benchmarks/results/rfm.json (bench_rfm.py takes minutes; pass
--rerun-rfm to refresh it). With --fast every bench runs at toy size and the summary goes to
the results folder (benchmarks/results/fast by default), never over the committed summary.
A full run gives each bench a fresh process; --fast (a smoke test) calls each bench's ``main``
in this process, on one stand-in model pair (the benches that measure fresh processes, load and
capture_memory, still start theirs).

Usage: python benchmarks/run_all.py [--fast] [--only NAME ...] [--rerun-rfm] [--results-dir DIR] [--summarize]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

# name -> (script, headline keys with their targets: (key, comparison, target))
BENCHES = {
    "rfm": ("bench_rfm.py", [("rfm_vs_xrfm_time_ratio", "<=", 1.0), ("rfm_vs_xrfm_top_eigvec_cosine", ">=", 0.99)]),
    "capture": ("bench_capture.py", [("capture_vs_forward_throughput_ratio", ">=", 0.9)]),
    "steer_generate": ("bench_steer_generate.py", [("steer_generate_overhead_ratio", "<=", 1.03)]),
    "mi": ("bench_mi.py", [("mi_all_pairs_seconds", "<=", 10.0)]),
    "load": ("bench_load.py", [("warm_vs_cold_load_speedup", ">=", 6.0)]),
    "demo": ("bench_demo.py", [("demo_seconds", "<=", 600.0)]),
    "field": ("bench_field.py", [("field_extra_ms_per_token", "<=", 10.0)]),
    "capture_memory": ("bench_capture_memory.py", [("capture_peak_memory_ratio", "<=", 1.2)]),
    "sweep": ("bench_sweep.py", [("sweep_vs_separate_time_ratio", "<=", 0.7)]),
    "prefix": ("bench_prefix.py", [("prefix_vs_full_time_ratio", "<=", 0.5)]),
    "search": ("bench_search.py", [("search_vs_test_time_ratio", "<=", 1.5), ("core_benchmark_hours", "<=", 6.0)]),
}


def run_one(name: str, args, results: Path) -> dict:
    script = HERE / BENCHES[name][0]
    out = results / f"{name}.json"
    if name == "rfm":
        if not args.fast and not args.rerun_rfm:
            if not out.exists():
                raise FileNotFoundError(f"{out} is missing: run `python benchmarks/bench_rfm.py` or pass --rerun-rfm")
            return json.loads(out.read_text())
        cmd = [sys.executable, str(script), "--out", str(out)] + (["--fast", "--threads", "1"] if args.fast else [])
    else:
        cmd = [sys.executable, str(script), "--results-dir", str(results)] + (["--fast"] if args.fast else [])
    print(f"[run_all] {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    if args.fast:
        code = in_process(script, cmd[2:], quiet=name == "rfm")
    else:
        code = subprocess.run(cmd, cwd=C.ROOT, check=False,
                              stdout=subprocess.DEVNULL if name == "rfm" else None).returncode
    if code != 0:
        raise SystemExit(f"[run_all] {name} failed with exit code {code}")
    data = json.loads(out.read_text())
    data.setdefault("wall_seconds", round(time.perf_counter() - t0, 1))
    return data


def in_process(script: Path, argv: list[str], quiet: bool = False) -> int:
    """``script``'s ``main(argv)`` in this process (its exit code; stdout dropped when ``quiet``)."""
    import contextlib
    import importlib.util
    import io

    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        return int(module.main(argv) or 0)


def context(name: str, r: dict) -> str:
    """One line of context printed beside the headline number."""
    load = r.get("load_before") or {"loadavg_1m": r.get("load_average_1min")}
    la = f"load {load.get('loadavg_1m')}"
    if name == "rfm":
        return f"ours {r['rfm_seconds_best']:.2f}s vs xrfm {r['xrfm_seconds_best']:.2f}s (n={r['n']}, d={r['d']}, {r['torch_threads']} threads); {la}"
    if name == "capture":
        tps = r["tokens_per_second"]
        return (f"forward {tps['forward']:.0f} tok/s, capture all layers {tps['capture_all']:.0f} tok/s, "
                f"layers 0-4 {tps['capture_early']:.0f} tok/s (x{r['capture_early_layers_vs_forward_throughput_ratio']:.2f}); "
                f"{r['n_tokens']} tokens; {la}")
    if name == "steer_generate":
        s = r["seconds_best"]
        return f"unsteered {s['unsteered']:.2f}s vs steered {s['steered']:.2f}s for {r['new_tokens']} tokens; {la}"
    if name == "mi":
        return (f"18x30 layers, n=2000, power-law spectra; flat-spectrum worst case "
                f"{r.get('flat_spectrum_worst_case_seconds', float('nan')):.1f}s; {la}" if not r["fast"] else la)
    if name == "load":
        return "; ".join(f"{m}: cold {v['cold_seconds']:.1f}s, warm {v['warm_seconds_best']:.1f}s (x{v['speedup']:.1f}, load {v['load_before']['loadavg_1m']})"
                         for m, v in r["per_model"].items())
    if name == "demo":
        cpu = f"CPU {r['demo_cpu_seconds']:.0f}s; " if "demo_cpu_seconds" in r else ""
        threads = f"{r['torch_threads']} torch thread(s)" if r.get("torch_threads") else "torch default threads"
        return (f"{cpu}{threads}; {len(r.get('datasets', []))} datasets "
                f"({', '.join(r.get('datasets', []))}); step seconds {r.get('step_seconds')}; {la}")
    if name == "field":
        cos = r["field_abs_cos_with_fixed_vector"]
        return (f"CPU ms per token: unsteered {r['unsteered_cpu_ms_per_token']:.1f}, end to end field - fixed "
                f"{r['field_minus_fixed_cpu_ms_per_token']:+.1f}, fixed - unsteered "
                f"{r['fixed_minus_unsteered_cpu_ms_per_token']:+.1f}; {r['prompts']} prompts x {r['new_tokens']} "
                f"tokens, batch 1, n={r['n_training_points']} RFM points; field |cos| with the fixed vector "
                f"mean {cos['mean']:.2f} (min {cos['min']:.2f}); {la}")
    if name == "capture_memory":
        mb = r["peak_mb"]
        return (f"peak RSS above the start, position 'all', all layers: streamed (shards of {r['shard_size']} prompts) "
                f"{mb['stream_1x']:.0f} MB for {r['n_prompts_1x']} prompts, {mb['stream_4x']:.0f} MB for 4x; in memory "
                f"{mb['memory_1x']:.0f} -> {mb['memory_4x']:.0f} MB (x{r['in_memory_peak_memory_ratio']:.2f}); {la}")
    if name == "sweep":
        return (f"CPU {r['sweep_cpu_seconds_best']:.1f}s (sweep) vs {r['separate_cpu_seconds_best']:.1f}s (5 evaluate "
                f"calls); {r['n_items']} SST-2 items, strengths {r['strengths']}, {r['hook']}, "
                + (f"lower blocks 0-{r['first_steered_block'] - 1} once" if r["fast_path"] else "fell back to evaluate")
                + f"; max |margin diff| {r['max_abs_margin_difference']:.1e}, "
                f"predictions identical: {r['predictions_identical']}; {la}")
    if name == "prefix":
        return (f"CPU {r['prefix_cpu_seconds_best']:.1f}s (prefix once) vs {r['full_cpu_seconds_best']:.1f}s (every "
                f"prompt whole); {r['n_items']} 4-shot SST-2 items, shared prefix {r['prefix_tokens']} tokens, "
                f"strengths {r['strengths']}, {r['hook']}; max |margin diff| {r['max_abs_margin_difference']:.1e}, "
                f"predictions identical: {r['predictions_identical']}; {la}")
    return la


def verdict(value: float, op: str, target: float) -> str:
    ok = value <= target if op == "<=" else value >= target
    return "met" if ok else "MISSED"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--fast", action="store_true")
    p.add_argument("--only", nargs="+", choices=list(BENCHES), default=None)
    p.add_argument("--rerun-rfm", action="store_true")
    p.add_argument("--results-dir", default=None)
    p.add_argument("--summarize", action="store_true", help="run nothing: rebuild the summary from <name>.json")
    args = p.parse_args(argv)
    results = Path(args.results_dir) if args.results_dir else (C.RESULTS / "fast" if args.fast else C.RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    summary_dir = results if (args.fast or args.results_dir) else HERE
    names = args.only or list(BENCHES)
    previous = {}
    if (summary_dir / "results.json").exists():
        previous = json.loads((summary_dir / "results.json").read_text()).get("details", {})
    if args.summarize:
        # keep what run_one added to the previous summary (wall_seconds)
        details = {n: {**previous.get(n, {}), **json.loads((results / f"{n}.json").read_text())} for n in BENCHES
                   if (results / f"{n}.json").exists()}
    else:
        details = {**previous, **{n: run_one(n, args, results) for n in names}}
    flat, rows = {}, []
    for name, (_, keys) in BENCHES.items():
        if name not in details:
            continue
        for key, op, target in keys:
            value = float(details[name][key])
            flat[key] = value
            flat[f"{key}__context"] = context(name, details[name])
            rows.append(f"| `{key}` | {value:.4g} | {op} {target:g} | {verdict(value, op, target)} | "
                        f"{context(name, details[name])} |")
    from steer_lens.io import write_json, write_text

    write_json(summary_dir / "results.json", {**flat, "fast": args.fast, "machine": C.load(),
                                              "torch_threads": 1, "details": details})
    md = ["# steer-lens benchmarks", "",
          f"{'FAST (toy sizes, numbers meaningless) ' if args.fast else ''}run of `python benchmarks/run_all.py`; "
          "2 shared CPU cores, 1 torch thread unless stated; ratios are interleaved best-of-N, side by side "
          "in one process. Load average is recorded beside each number (the machine is shared).", "",
          "| key | value | target | verdict | context |", "|---|---|---|---|---|", *rows, ""]
    notes = [f"- **{n}**: {details[n]['note']}" for n in BENCHES if n in details and details[n].get("note")]
    if notes:
        md += ["Notes:", "", *notes, ""]
    write_text(summary_dir / "results.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
