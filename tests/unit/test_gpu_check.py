"""scripts/gpu_check.sh in its CPU mode at tiny sizes, so the prepared GPU check cannot rot.

The check is meant for an accelerator machine without network or transformer-lens; here it runs
with ``--cpu --tiny`` (one family test in both dtypes, a width-64 timing), the import-only
stand-ins forced on (the path a bare GPU image takes) and no wheels folder (the install step is
skipped and says so). Needs no network and no downloaded wheels.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run_check(tmp_path, *args, **env):
    full = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
            "GPU_WHEELS": str(tmp_path / "no_wheels"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    proc = run_check(tmp, "--cpu", "--tiny", GPU_CHECK_STUBS="all")
    report = tmp / "out" / "gpu_check.json"
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(report.read_text()), tmp / "out"


def test_cpu_mode_passes_and_says_it_is_cpu(cpu_run):
    proc, report, _ = cpu_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert report["ok"] is True and report["problems"] == []
    assert report["mode"] == "cpu" and report["tiny"] is True
    assert "not a GPU check" in report["note"]
    assert "CPU MODE" in proc.stdout


def test_install_is_skipped_without_wheels_and_the_stand_ins_load(cpu_run):
    _, report, _ = cpu_run
    install = report["install"]
    assert "no wheels in" in install["skipped"] and install["installed"] == []
    # forced on here: steer_lens and transformer_lens import with datasets, pandas, matplotlib stand-ins
    assert install["stubs"] == ["datasets", "pandas", "matplotlib"]


def test_tests_counted_per_dtype(cpu_run):
    _, report, out = cpu_run
    tests = report["tests"]
    assert tests["failed"] == tests["errors"] == 0
    assert tests["passed"] >= 2 and tests["passed_by_dtype"] == {"float32": 1, "bfloat16": 1}
    assert tests["skipped_no_gpu"] >= 1  # test_cuda.py collected, skipped without a GPU
    assert (out / "junit.xml").exists() and (out / "gpu_check.log").exists()


def test_timing_recorded(cpu_run):
    _, report, _ = cpu_run
    timing = report["timing"]
    assert timing["device"] == "cpu" and timing["shape"]["name"] == "tiny"
    assert set(timing["best_s"]) == {"forward", "capture", "forward_items", "evaluate", "sweep", "evaluate_x5",
                                     "generate", "generate_steered"}
    assert all(v > 0 for v in timing["ratios"].values())
    assert timing["checks"]["logits_finite"] is True
    assert timing["checks"]["sweep_predictions_equal_evaluate"] is True
    assert set(report["versions"]) >= {"python", "torch", "transformers", "transformer-lens"}
    assert set(report["seconds"]) == {"install", "tests", "timing", "total"}


def test_a_skip_on_the_gpu_counts_as_a_failure(cpu_run, tmp_path):
    """The report of a GPU run whose CUDA tests were skipped fails (replayed on this run's pieces)."""
    _, _, out = cpu_run
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite><testcase classname="tests.unit.test_cuda" '
                     'name="test_logits_equal_hf[float32-llama3]"/><testcase classname="tests.unit.test_cuda" '
                     'name="test_logits_equal_hf[bfloat16-llama3]"><skipped message="no GPU"/></testcase>'
                     '</testsuite></testsuites>')
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "report", "--mode", "gpu",
                           "--install", str(out / "install.json"), "--junit", str(junit), "--pytest-rc", "0",
                           "--timing", str(out / "timing.json"), "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=120)
    report = json.loads((tmp_path / "r.json").read_text())
    assert proc.returncode == 1 and report["ok"] is False
    assert any("skipped on the GPU" in p for p in report["problems"])
    assert any("no family test passed in bfloat16" in p for p in report["problems"])


def test_bad_input_is_named(tmp_path):
    proc = run_check(tmp_path, "--fast")
    assert proc.returncode == 2 and "unknown option '--fast'" in proc.stderr
    proc = run_check(tmp_path, "--cpu", GPU_CHECK_STUBS="some")
    assert proc.returncode == 2 and "GPU_CHECK_STUBS must be auto, all or none" in proc.stderr
    proc = run_check(tmp_path, "--cpu", PYTHON="/nonexistent/python")
    assert proc.returncode == 2 and "set PYTHON to an interpreter that has torch" in proc.stderr


def test_wheel_script_places_every_transformer_lens_requirement():
    """gpu_wheels.sh --check (offline): each Requires-Dist of the installed transformer-lens is in
    the image, carried, a stand-in or unused; a new one after an upgrade fails here first."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_wheels.sh"), "--check"], cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "every requirement placed" in proc.stdout
