"""The top-level API: ``import steer_lens as sl`` gives ``sl.evaluate`` (the function, not the
module it lives in), the ``sl.baselines`` and ``sl.probes`` subpackages, and the module
``steer_lens.evaluate`` stays importable the ways the repo imports it."""

import importlib
import inspect
import json
import os
import subprocess
import sys

import steer_lens as sl
from steer_lens.data import load_dataset


def test_evaluate_is_the_function_and_scores_user_items(tiny_llama, tmp_path, one_thread):
    module = importlib.import_module("steer_lens.evaluate")
    assert inspect.isfunction(sl.evaluate) and sl.evaluate is module.evaluate
    path = tmp_path / "own.jsonl"  # a user's JSONL with only the four required fields
    rows = [{"id": f"q{i}", "question": f"Is {i} even?", "choices": ["yes", "no"], "answer": i % 2}
            for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = sl.load_dataset(path).split("test")
    res = sl.evaluate(tiny_llama, items)
    ref = module.evaluate(tiny_llama, load_dataset(path), split="test")
    assert isinstance(res, sl.EvalResult) and res.n == 4 and res.ids == [r["id"] for r in rows]
    assert res.correct == ref.correct and res.margins == ref.margins


def test_baselines_and_probes_are_subpackages():
    assert sl.baselines is importlib.import_module("steer_lens.baselines")
    assert sl.probes is importlib.import_module("steer_lens.probes")
    assert callable(sl.baselines.fit_caa) and callable(sl.baselines.random_plan)
    assert callable(sl.probes.logit_lens) and callable(sl.probes.layer_ablation)
    assert {"evaluate", "baselines", "probes"} <= set(sl.__all__)
    assert all(hasattr(sl, name) for name in sl.__all__)


def test_evaluate_module_still_importable_in_a_fresh_interpreter():
    """Fresh process: the import order inside the package decides what ``sl.evaluate`` is."""
    code = (
        "import steer_lens.evaluate\n"
        "from steer_lens.evaluate import bootstrap_ci, EvalResult\n"
        "from steer_lens import evaluate\n"
        "import steer_lens as sl, inspect, importlib\n"
        "assert inspect.isfunction(evaluate) and evaluate is sl.evaluate\n"
        "assert importlib.import_module('steer_lens.evaluate').bootstrap_ci is bootstrap_ci\n"
        "assert bootstrap_ci([1, 0, 1, 1])[0] <= 0.75\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
