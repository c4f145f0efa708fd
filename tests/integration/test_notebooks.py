"""Execute every notebook top to bottom in a fresh kernel (nbclient), exactly as built by
notebooks/build.py: with the real models, and as a smoke run on tiny random models."""

import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
pytestmark = pytest.mark.integration

NAMES = ["01_quickstart", "02_mechanistic_analysis", "03_feature_attribution"]


@pytest.mark.parametrize("fast", [True, False], ids=["tiny", "real"])
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, fast):
    import build

    nb = build.build(name)
    seconds = build.execute(nb, fast=fast, timeout=1800)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert seconds < 1800


def test_committed_notebooks_match_their_build_script():
    import nbformat

    import build

    for name in NAMES:
        stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        sources = [c.source for c in stored.cells]
        assert sources == [c.source for c in build.build(name).cells], f"re-run notebooks/build.py --execute ({name})"
