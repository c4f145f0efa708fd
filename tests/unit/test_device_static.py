"""Static check: library code says where every new tensor goes.

Parses steer_lens/**/*.py and flags calls of torch factory functions (``torch.zeros(...)``,
``torch.arange(...)``, ...) without a ``device=`` keyword: on a GPU model such a tensor lands
on the CPU and the next operation with an activation fails or copies. ``*_like`` functions and
``x.new_zeros(...)`` inherit the device of their argument and are not flagged. A function in
ALLOWED may create such tensors; each entry says why that is right there.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "steer_lens"
FACTORIES = {"arange", "zeros", "ones", "full", "empty", "tensor", "randn", "rand", "randint", "randperm",
             "linspace", "eye"}

# (file relative to the repo, qualified function name): why it may create tensors without device=
ALLOWED = {
    ("steer_lens/align/autoencoder.py", "AutoEncoderAligner._adam"):
        "seeded CPU generator for the shuffles (same order on any device); indices moved to the data's device",
    ("steer_lens/align/autoencoder.py", "_init"):
        "seeded CPU generator for the initial weights (same on any device); moved with .to(device)",
    ("steer_lens/align/procrustes.py", "ProcrustesAligner._cv_rank"):
        "seeded CPU generator for the CV folds; the permutation is moved to the data's device",
    ("steer_lens/align/ridge.py", "RidgeAligner._ridge_cv"):
        "seeded CPU generator for the CV folds; the permutation is moved to the data's device",
    ("steer_lens/mi.py", "_top_eigh"):
        "seeded CPU generator for the subspace-iteration start; moved to the Gram's device",
    ("steer_lens/probes/probing.py", "_folds"):
        "seeded CPU generator for the fold assignment; the caller moves it to the data's device",
    ("steer_lens/baselines/common.py", "choose_layer"):
        "seeded CPU generator for the half split; moved to the activations' device",
    ("steer_lens/baselines/random_vector.py", "random_plan"):
        "seeded CPU generator (same vectors on any device); moved to the plan vector's device",
    ("steer_lens/baselines/random_vector.py", "_haar_rotation"):
        "seeded CPU generator (same rotation on any device); random_plan moves the rotated vectors to the plan's device",
    ("steer_lens/pipeline.py", "ExpertSteer._split"):
        "seeded CPU generator for the held-out split; fit moves the indices to the activations' device",
    ("steer_lens/rfm.py", "steering_vector"):
        "seeded CPU generator for the validation split; moved to the data's device",
    ("steer_lens/field.py", "shuffled_field_plan"):
        "seeded CPU generator shuffles labels of the RFM's targets, which it copies to the CPU first",
    ("steer_lens/finetune.py", "training_items"):
        "seeded CPU generator picks which dataset items to train on (Python list indices, no model yet)",
    ("steer_lens/experts.py", "evaluate_splits"):
        "seeded CPU generator picks which train items to score (Python list indices)",
    ("steer_lens/finetune.py", "finetune"):
        "per-item sampling weights for a seeded CPU generator (indices into a Python list)",
}


def _calls(path: Path):
    """(qualified function name, factory name, line) of every torch factory call without device=."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, scope + [child.name])
                continue
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                    and isinstance(child.func.value, ast.Name) and child.func.value.id == "torch"
                    and child.func.attr in FACTORIES
                    and not any(k.arg == "device" for k in child.keywords)):
                out.append((".".join(scope) or "<module>", child.func.attr, child.lineno))
            visit(child, scope)

    visit(tree, [])
    return out


def _all_calls():
    return {(str(p.relative_to(ROOT)), fn, name, line)
            for p in sorted(PACKAGE.rglob("*.py")) for fn, name, line in _calls(p)}


def test_every_tensor_factory_call_names_its_device():
    bad = [f"{path}:{line} {fn}: torch.{name}(...) without device=" for path, fn, name, line in sorted(_all_calls())
           if not any(path == a and (fn == f or fn.startswith(f + ".")) for a, f in ALLOWED)]
    assert not bad, ("create tensors on the model's or the input's device (device=x.device), or add the "
                     "function to ALLOWED with a reason:\n" + "\n".join(bad))


def test_every_allow_list_entry_is_still_needed():
    used = {(path, fn) for path, fn, _, _ in _all_calls()}
    stale = [entry for entry in ALLOWED
             if not any(entry[0] == p and (f == entry[1] or f.startswith(entry[1] + ".")) for p, f in used)]
    assert not stale, f"remove these ALLOWED entries, their functions no longer need them: {stale}"


def test_the_checker_flags_a_call_without_device(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import torch\n\nclass A:\n    def f(self, x):\n        a = torch.zeros(3, device=x.device)\n"
                   "        b = torch.zeros_like(x)\n        return torch.arange(\n            5)\n")
    assert _calls(src) == [("A.f", "arange", 7)]
