"""Reliability: every bad input gets a clear error, hooks never leak, writes are atomic.

``BAD_INPUTS`` is the catalogue the README's reliability section counts: each entry feeds one
bad input through the public API and checks the error names the problem (and the fix).
The CLI's one-line errors for bad input are tested in test_cli.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import steer_lens as sl
from steer_lens.align import make_aligner
from steer_lens.plan import SteeringPlan
from steer_lens.rfm import steering_vector

HOOK = "blocks.1.hook_resid_post"
POS = [(f"q{i}: is it good?", " yes") for i in range(12)]
NEG = [(f"q{i}: is it good?", " no") for i in range(12)]


@pytest.fixture(scope="module")
def plan(tiny_gemma, tiny_llama):
    return sl.ExpertSteer(n_pairs=1, alignment="ridge", mi_dim=3).fit(tiny_gemma, tiny_llama, POS, NEG)


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD_ROW = {"id": "a", "question": "2+2?", "choices": ["4", "5"], "answer": 0,
            "domain": "math", "source": "test"}


def _plan_folder(plan, tmp: Path, damage: str) -> Path:
    folder = plan.save(tmp / "plan")
    meta = folder / "plan.json"
    tensors = folder / "tensors.safetensors"
    if damage == "truncated":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "corrupted":
        meta.write_text("{not json")
    elif damage == "future":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": 999}))
    elif damage == "missing":
        tensors.unlink()
    return folder


# (case id, callable(ctx) raising, exception type, regex the message must match)
BAD_INPUTS = [
    ("unknown model name", lambda c: sl.load_model("gpt-17"), FileNotFoundError, "not a registry name"),
    ("path neither HF folder nor GGUF", lambda c: sl.load_model(c.tmp), FileNotFoundError, "config.json"),
    ("layer out of range", lambda c: sl.capture(c.llama, ["a"], layers=[4]), ValueError, "out of range"),
    ("unknown hook name", lambda c: sl.capture(c.llama, ["a"], layers=[0], hook="resid_x"), ValueError,
     "unknown hook"),
    ("empty prompt list", lambda c: sl.capture(c.llama, [], layers=[0]), ValueError, "no prompts"),
    ("prompt longer than context", lambda c: sl.capture(c.llama, ["x" * 999], layers=[0]), ValueError,
     "context"),
    ("empty negatives", lambda c: sl.ExpertSteer().fit(c.gemma, c.llama, POS, []), ValueError, "non-empty"),
    ("one class only", lambda c: steering_vector(torch.randn(5, 8), torch.randn(0, 8)), ValueError, "empty"),
    ("NaN activations", lambda c: steering_vector(torch.full((4, 8), float("nan")), torch.randn(4, 8)),
     ValueError, "NaN|finite"),
    ("mismatched expert/target prompt counts",
     lambda c: make_aligner("ridge", 8, 6).fit(torch.randn(20, 8), torch.randn(19, 6)), ValueError, "rows"),
    ("aligner applied to the wrong width",
     lambda c: make_aligner("ridge", 8, 6).fit(torch.randn(30, 8), torch.randn(30, 6)).transform(torch.randn(3, 6)),
     ValueError, "8|width"),
    ("plan applied to a model of another width", lambda c: c.plan.apply(c.gemma, 1.0).__enter__(), ValueError,
     "d_model"),
    ("saved plan truncated", lambda c: SteeringPlan.load(_plan_folder(c.plan, c.tmp, "truncated")), ValueError,
     "corrupted"),
    ("saved plan corrupted", lambda c: SteeringPlan.load(_plan_folder(c.plan, c.tmp, "corrupted")), ValueError,
     "corrupted"),
    ("saved plan of a future format", lambda c: SteeringPlan.load(_plan_folder(c.plan, c.tmp, "future")),
     ValueError, "upgrade"),
    ("saved plan missing a file", lambda c: SteeringPlan.load(_plan_folder(c.plan, c.tmp, "missing")),
     FileNotFoundError, "missing"),
    ("dataset with a malformed JSON line",
     lambda c: sl.load_dataset(_write_jsonl(c.tmp / "d.jsonl", [GOOD_ROW, "{oops"])), ValueError, "line 2"),
    ("dataset with a missing field",
     lambda c: sl.load_dataset(_write_jsonl(c.tmp / "d.jsonl", [{k: v for k, v in GOOD_ROW.items() if k != "answer"}])),
     ValueError, "answer"),
    ("dataset answer index out of range",
     lambda c: sl.load_dataset(_write_jsonl(c.tmp / "d.jsonl", [{**GOOD_ROW, "answer": 5}])), ValueError, "range"),
    ("dataset with duplicate ids",
     lambda c: sl.load_dataset(_write_jsonl(c.tmp / "d.jsonl", [GOOD_ROW, GOOD_ROW])), ValueError, "duplicate"),
    ("non-finite strength", lambda c: sl.steer(c.llama, {HOOK: torch.randn(64)}, float("nan")).__enter__(),
     ValueError, "finite"),
    ("steering vector of the wrong width", lambda c: sl.steer(c.llama, {HOOK: torch.randn(65)}, 1.0).__enter__(),
     ValueError, "width 65"),
]


class _Ctx:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.mark.parametrize("case, call, exc, match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_a_clear_error(case, call, exc, match, tiny_llama, tiny_gemma, plan, tmp_path):
    ctx = _Ctx(llama=tiny_llama, gemma=tiny_gemma, plan=plan, tmp=tmp_path)
    with pytest.raises(exc, match=match) as info:
        call(ctx)
    assert len(str(info.value)) > 20  # says what is wrong, not just a bare value
    assert all(len(hp.fwd_hooks) == 0 for hp in tiny_llama.hook_dict.values())


def test_two_plans_applied_together_equal_their_summed_vectors(plan, tiny_llama):
    tokens = torch.tensor([[5, 40, 41, 42]])
    other = plan.scaled(-0.5)
    summed = {h: plan.vectors[h] * plan.norms[h] * 1.5 for h in plan.vectors}  # 2.0 - 0.5
    with torch.no_grad():
        with plan.apply(tiny_llama, 2.0), other.apply(tiny_llama, 1.0):
            both = tiny_llama(tokens)
        with sl.steer(tiny_llama, summed, 1.0, scale="absolute"):
            ref = tiny_llama(tokens)
    torch.testing.assert_close(both, ref, atol=1e-5, rtol=1e-5)


def test_interrupted_writes_leave_no_loadable_file(tiny_llama, plan, tmp_path, monkeypatch):
    import safetensors.torch as st

    acts = sl.capture(tiny_llama, ["abc"], layers=[0])

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(st, "save_file", boom)
    monkeypatch.setattr("steer_lens.plan.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        acts.save(tmp_path / "acts.safetensors")
    with pytest.raises(KeyboardInterrupt):
        plan.save(tmp_path / "plan")
    assert list(tmp_path.iterdir()) == []  # neither a half-written file nor a temp file remains


def test_loading_never_unpickles():
    """No library code calls pickle or an unrestricted torch.load."""
    root = Path(sl.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        if re.search(r"\bimport pickle\b|pickle\.load|torch\.load\((?![^)]*weights_only=True)", text):
            offenders.append(path.name)
    assert offenders == []


def test_fit_is_deterministic_given_a_seed(tiny_gemma, tiny_llama):
    a = sl.ExpertSteer(n_pairs=1, alignment="autoencoder", mi_dim=3, seed=3).fit(tiny_gemma, tiny_llama, POS, NEG)
    b = sl.ExpertSteer(n_pairs=1, alignment="autoencoder", mi_dim=3, seed=3).fit(tiny_gemma, tiny_llama, POS, NEG)
    assert a.pairs == b.pairs
    assert all(torch.equal(a.vectors[h], b.vectors[h]) for h in a.vectors)
