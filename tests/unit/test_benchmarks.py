"""Every benchmark's --fast mode runs (through run_all.py) and writes its headline keys.
No timing assertions: the numbers of a toy run on a shared machine mean nothing."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["rfm_vs_xrfm_time_ratio", "rfm_vs_xrfm_top_eigvec_cosine", "capture_vs_forward_throughput_ratio",
        "steer_generate_overhead_ratio", "mi_all_pairs_seconds", "warm_vs_cold_load_speedup", "demo_seconds",
        "field_extra_ms_per_token", "capture_peak_memory_ratio", "sweep_vs_separate_time_ratio"]


def test_run_all_fast_writes_every_key(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--fast", "--results-dir",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["fast"] is True
    for key in KEYS:
        assert math.isfinite(summary[key]) and summary[key] > 0, key
        assert "load" in summary[f"{key}__context"] or key.startswith("warm"), key
    for name in ("capture", "steer_generate", "mi", "load", "demo", "rfm", "field", "capture_memory", "sweep"):
        assert (tmp_path / f"{name}.json").is_file(), name
    md = (tmp_path / "results.md").read_text()
    assert all(f"`{key}`" in md for key in KEYS)
    check_search_projection(tmp_path)


def check_search_projection(results: Path) -> None:
    """bench_search's --fast output: its ratio, its rows and the documented projection formula,
    recomputed from the recorded numbers."""
    import importlib.util

    import pytest

    from steer_lens.bench.cli import CORE
    from steer_lens.data import list_datasets

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_search", ROOT / "benchmarks" / "bench_search.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = json.loads((results / "search.json").read_text())
    assert res["search_vs_test_time_ratio"] == res["choice_seconds"] / res["test_pass_seconds"] > 0
    s, datasets = res["seconds"], res["datasets"]
    choosing = [m for m in CORE if m in s["fit"]]
    assert choosing == list(s["fit"]) == res["core_methods"][0] and "expertsteer_label" in choosing
    assert all(s["fit"][m] > 0 for m in choosing) and s["test_expert"] > 0 and s["val_pass"] > 0
    assert res["rule"] == "flips" and set(res["choices"]["flips"]) == {"caa", "expertsteer_label"}
    assert s["choice"]["caa"] == res["choices"]["flips"]["caa"]["seconds"]
    assert s["choice"]["label_caa"] == res["choices"]["flips"]["expertsteer_label"]["seconds"]  # signed
    assert 0 < s["test_pair"] == res["test_pair_seconds"]
    assert sorted(datasets) == list_datasets() and len(datasets) == 15
    assert datasets["sst2"]["factors"] == {"train": 1.0, "validation": 1.0, "test": 1.0}
    assert "calibration" not in datasets["mmlu_medical_4way"]["rows"]  # four-way items: no calibration row
    assert "calibration" in datasets["sst2"]["rows"]
    # the documented formula, recomputed here from the recorded numbers
    total = 0.0
    for d in datasets.values():
        f = d["factors"]
        assert f["test"] == d["tokens"]["test"] / datasets["sst2"]["tokens"]["test"]
        total += s["val_pass"] * f["validation"]
        for m in d["rows"]:
            if m in s["fit"]:
                total += s["fit"][m] * f["train"] + s["choice"][m] * f["validation"] + s["test_pair"] * f["test"]
            elif m == "expert_unsteered":
                total += s["test_expert"] * f["test"]
            elif m != "calibration":
                total += s["test_target"] * f["test"]
    assert res["cores"] // res["threads_per_row"] == 1
    assert res["core_benchmark_hours"] == pytest.approx(total / 3600)
    assert sum(res["per_dataset_seconds"].values()) == pytest.approx(total)
    assert bench.core_benchmark_hours(s, datasets, threads_per_row=1) == pytest.approx(total / 3600 / 2)


def test_readme_benchmark_table_matches_results_json():
    """Every headline number in the README's benchmark table is the one in results.json."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    results = json.loads((root / "benchmarks" / "results.json").read_text())
    readme = (root / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `")}
    keys = [k for k, v in results.items() if isinstance(v, float) and not k.startswith("__")]
    assert len(keys) == 13
    for key in keys:
        cells = [c.strip() for c in rows[key].split("|")]
        assert cells[4] == f"{results[key]:.4g}", (key, cells[4], results[key])


def test_readme_demo_table_is_the_recorded_one():
    """The table the README shows for `make demo` is the one the recorded demo run printed."""
    from steer_lens.cli.common import table

    demo = json.loads((ROOT / "benchmarks" / "results" / "demo.json").read_text())
    assert {r[0] for r in demo["table"]} == set(demo["datasets"]) and not demo["fast"]  # the real models' run
    assert table(demo["table"], demo["columns"]) in (ROOT / "README.md").read_text()
