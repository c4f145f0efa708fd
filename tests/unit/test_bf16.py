"""bfloat16 discipline on tiny models: deltas are added in the residual's dtype, statistics are
float32 or wider, and capture / steer / evaluate / generate / ExpertSteer fit / baselines run."""

import contextlib

import pytest
import torch

import steer_lens as sl
from steer_lens.activations import capture
from steer_lens.data import Item
from steer_lens.evaluate import evaluate
from steer_lens.generate import generate
from steer_lens.models import load_model
from steer_lens.steer import steer
from steer_lens.tokens import batch_encode

HOOK = "blocks.1.hook_resid_post"
POS = [(f"item {i}: is it good?", " yes, good") for i in range(24)]
NEG = [(f"item {i}: is it good?", " no, bad") for i in range(24)]


@pytest.fixture(scope="module")
def bf16_pair(tiny_dir):
    """Fresh bf16 copies (the session fixtures are float32 and shared)."""
    return (load_model(tiny_dir["llama"], dtype=torch.bfloat16),
            load_model(tiny_dir["gemma3"], dtype=torch.bfloat16))


def _hook_outputs(model, batch, hook, ctx=None):
    """Residual at ``hook`` as the next layer sees it (read by a hook registered after ``ctx``'s)."""
    seen = []
    with torch.no_grad(), ctx if ctx is not None else contextlib.nullcontext():
        with model.hooks(fwd_hooks=[(hook, lambda x, hook: seen.append(x.clone()) or x)]):
            model(batch.tokens, attention_mask=batch.attention_mask)
    return seen[0]


def test_steered_residual_is_x_plus_the_bf16_delta_exactly(bf16_pair, one_thread):
    """At steered positions out == x + bf16(strength * norm * unit vector); pads are untouched."""
    model = bf16_pair[0]
    batch = batch_encode(model, ["a long prompt here", "short"], padding_side="left")
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    unit = v / v.norm()
    clean = _hook_outputs(model, batch, HOOK)
    steered = _hook_outputs(model, batch, HOOK, steer(model, {HOOK: v * 7.0}, 0.7, norms={HOOK: 3.0}))
    assert clean.dtype == steered.dtype == torch.bfloat16
    real = batch.attention_mask.bool()
    delta = (0.7 * 3.0 * unit).to(torch.bfloat16)  # one rounding of the float32 product
    assert torch.equal(steered[real], (clean + delta)[real])
    assert torch.equal(steered[~real], clean[~real])  # left padding is never steered


def test_relative_scale_of_a_bf16_residual_is_the_float32_median(bf16_pair, one_thread):
    model = bf16_pair[0]
    batch = batch_encode(model, ["a long prompt here", "short"])
    clean = _hook_outputs(model, batch, HOOK)
    norm = float(clean.float().norm(dim=-1)[batch.attention_mask.bool()].median())
    v = torch.zeros(64)
    v[3] = 1.0
    steered = _hook_outputs(model, batch, HOOK, steer(model, {HOOK: v}, 1.0))
    got = (steered.float() - clean.float())[0, 0, 3]
    assert got == pytest.approx(norm, rel=2 ** -7)  # bf16 rounding of x + norm on that coordinate


@pytest.mark.parametrize("position", ["last", "mean", "all"])
def test_capture_of_a_bf16_model_pools_in_float32(bf16_pair, position, one_thread):
    model = bf16_pair[0]
    prompts = [("question?", " the answer"), "hello there"]
    acts = capture(model, prompts, layers=[1], position=position)
    assert acts.tensor.dtype == torch.float32
    for row, prompt in enumerate(prompts):
        batch = batch_encode(model, [prompt])
        resid = _hook_outputs(model, batch, HOOK)[0].float()
        want = {"last": resid[-1], "mean": resid[batch.span[0]].mean(0), "all": resid}[position]
        got = acts.tensor[row, 0]
        got = got[: want.shape[0]] if position == "all" else got
        torch.testing.assert_close(got, want, atol=0, rtol=1e-6)  # float32 mean of bf16 values


def test_fit_evaluate_generate_and_baselines_run_in_bf16(bf16_pair, one_thread):
    target, expert = bf16_pair
    plan = sl.ExpertSteer(n_pairs=1, alignment="ridge", mi_dim=4).fit(expert, target, POS, NEG)
    assert plan.mi.dtype in (torch.float32, torch.float64) and torch.isfinite(plan.mi).all()
    for vec in plan.vectors.values():
        assert vec.dtype == torch.float32 and torch.isfinite(vec).all()
        assert vec.norm() == pytest.approx(1.0, abs=1e-5)
    items = [Item(id=str(i), question=f"item {i}: is it good?", choices=["yes", "no"], answer=i % 2)
             for i in range(6)]
    base = evaluate(target, items)
    steered = evaluate(target, items, plan=plan, strength=4.0)
    assert base.n == steered.n == 6 and all(map(lambda m: m == m, steered.margins))  # no NaN
    assert steered.margins != base.margins  # steering reached the scores
    with plan.apply(target, 4.0, positions="generated"):
        texts = generate(target, ["hello", "a longer prompt"], max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    from steer_lens.baselines import fit_caa, fit_iti, fit_self_rfm, random_plan

    for fitted in (fit_caa(target, POS, NEG, 1), fit_self_rfm(target, POS, NEG, 1),
                   fit_iti(target, POS, NEG, k=2), random_plan(plan)):
        for hook, vec in fitted.vectors.items():
            assert vec.dtype == torch.float32 and torch.isfinite(vec).all() and fitted.norms[hook] > 0
