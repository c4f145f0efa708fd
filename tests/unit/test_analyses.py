"""Every analysis script runs end to end in --fast mode (in-process: main(argv)) and writes its files."""

import importlib
import sys
from pathlib import Path

import pytest

ANALYSES = Path(__file__).resolve().parents[2] / "analyses"
SCRIPTS = ["mi_heatmap", "agop_spectra", "method_cosine", "logit_lens", "token_attribution", "layer_ablation",
           "probe_accuracy", "vector_reuse", "transfer_audit"]


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


def test_transfer_audit_rows_and_cache(tmp_path, analyses_path):
    """AUROCs are probabilities, every aligned pair is listed, and --report-only rebuilds the
    same table from the per-dataset cache without models."""
    import transfer_audit

    out = transfer_audit.main(["--fast", "--out", str(tmp_path), "--datasets", "arithmetic_2way"])
    (row,) = out["rows"]
    for key in ("expert_probe", "target_probe", "autoencoder_in_expert", "autoencoder_in_target",
                "ridge_in_expert", "ridge_in_target"):
        assert 0.0 <= row[key] <= 1.0, key
    assert len(row["ridge_pairs"].split()) == 2 and (tmp_path / "cache" / "arithmetic_2way.json").is_file()
    md = (tmp_path / "transfer_audit.md").read_text()
    transfer_audit.main(["--fast", "--out", str(tmp_path), "--report-only"])
    assert (tmp_path / "transfer_audit.md").read_text() == md and "| arithmetic_2way |" in md
