"""Execute every notebook top to bottom in a fresh kernel (nbclient), exactly as built by
notebooks/build.py: on tiny random models and on the real models."""

import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
pytestmark = pytest.mark.integration

NAMES = ["01_quickstart", "02_mechanistic_analysis", "03_feature_attribution"]


# Every notebook runs on tiny random models (STEER_LENS_FAST) and on the real models with a few items
# (STEER_LENS_SMALL: every cell, the same code paths as the committed run, on 8 train / 6-8 validation or
# test items; the committed notebooks are the full-size runs of `python notebooks/build.py --execute`).
CASES = [(name, fast) for name in NAMES for fast in (True, False)]


@pytest.mark.parametrize("name, fast", CASES, ids=[f"{n}-{'tiny' if f else 'real'}" for n, f in CASES])
def test_notebook_executes(name, fast):
    import build

    nb = build.build(name)
    build.execute(nb, fast=fast, small=not fast, timeout=3600)  # nbclient's per-cell timeout, not a benchmark
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    setup = "".join(o.get("text", "") for o in next(c for c in nb.cells if c.cell_type == "code").outputs)
    assert ("smollm2-135m-instruct: d_model=576" in setup) is not fast, setup  # SMALL runs the real models


def test_committed_notebooks_match_their_build_script():
    import nbformat

    import build

    for name in NAMES:
        stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        run = stored.metadata.get("steer_lens", {})
        assert not run.get("fast") and not run.get("small"), f"{name} is committed from a tiny or small run: {run}"
        sources = [c.source for c in stored.cells]
        assert sources == [c.source for c in build.build(name).cells], f"re-run notebooks/build.py --execute ({name})"
