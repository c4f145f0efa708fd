"""Every analysis script runs end to end in --fast mode (in-process: main(argv)) and writes its files."""

import importlib
import sys
from pathlib import Path

import pytest

ANALYSES = Path(__file__).resolve().parents[2] / "analyses"
SCRIPTS = ["mi_heatmap", "agop_spectra", "method_cosine", "logit_lens", "token_attribution", "layer_ablation",
           "probe_accuracy", "vector_reuse"]


@pytest.fixture(scope="module")
def analyses_path():
    sys.path.insert(0, str(ANALYSES))
    yield
    sys.path.remove(str(ANALYSES))


@pytest.mark.parametrize("name", SCRIPTS)
def test_analysis_runs_fast(name, tmp_path, analyses_path):
    module = importlib.import_module(name)
    out = module.main(["--fast", "--out", str(tmp_path)])
    pngs = sorted(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert list(tmp_path.glob("*.csv")) and not list(tmp_path.glob(".*tmp"))
    assert isinstance(out, dict) and "png" in out
