"""Which positions get steered, with and without the KV cache, and that hooks never leak."""

import pytest
import torch

from steer_lens.steer import steer

HOOK = "blocks.1.hook_resid_post"


def all_hooks_clean(model) -> bool:
    return all(len(hp.fwd_hooks) == 0 and len(hp._forward_hooks) == 0 for hp in model.hook_dict.values())


def steered_positions(model, positions, *, kv, prompt=((10, 11, 12, 13),), attention_mask=None):
    """Greedy generation under absolute steering; return (tokens, per-position coefficient of v).

    The residual is recorded just before and just after the steering hook in the same run,
    so the difference is exactly what steering added at each position.
    """
    torch.manual_seed(0)
    v = torch.randn(model.cfg.d_model)
    before, after = [], []
    prompt = torch.tensor(prompt)
    with model.hooks(fwd_hooks=[(HOOK, lambda x, hook: before.append(x.detach().clone()) or x)]):
        with steer(model, {HOOK: v}, 1.0, positions=positions, scale="absolute"):
            with model.hooks(fwd_hooks=[(HOOK, lambda x, hook: after.append(x.detach().clone()) or x)]):
                out = model.generate(prompt, max_new_tokens=4, do_sample=False, use_past_kv_cache=kv,
                                     attention_mask=attention_mask, return_type="tokens", verbose=False)
    join = (lambda xs: torch.cat(xs, 1)) if kv else (lambda xs: xs[-1])
    delta = join(after) - join(before)
    assert delta.shape[1] == out.shape[1] - 1  # every position but the last was computed
    coeff = (delta @ v) / (v @ v)  # 1.0 where exactly v was added, 0.0 where nothing was
    assert torch.allclose(delta, coeff.unsqueeze(-1) * v, atol=1e-5)
    return out, coeff.round(decimals=4)


@pytest.mark.parametrize("kv", [True, False])
def test_positions_prompt_generated_all(tiny_llama, kv):
    _, all_ = steered_positions(tiny_llama, "all", kv=kv)
    _, prompt = steered_positions(tiny_llama, "prompt", kv=kv)
    _, gen = steered_positions(tiny_llama, "generated", kv=kv)
    assert all_.tolist() == [[1.0] * 7]
    assert prompt.tolist() == [[1.0] * 4 + [0.0] * 3]
    assert gen.tolist() == [[0.0] * 4 + [1.0] * 3]  # the first generated token (pos 4) included


def test_left_padded_batch_steers_only_real_tokens(tiny_llama):
    prompt = ((0, 0, 10, 11), (20, 21, 22, 23))
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    _, coeff = steered_positions(tiny_llama, "prompt", kv=True, prompt=prompt, attention_mask=mask)
    assert coeff[0].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert coeff[1].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_strength_zero_is_bit_identical(tiny_model):
    tokens = torch.tensor([[3, 40, 41, 42]])
    v = torch.randn(tiny_model.cfg.d_model)
    with torch.no_grad():
        ref = tiny_model(tokens)
        with steer(tiny_model, {HOOK: v}, 0.0):
            out = tiny_model(tokens)
    assert torch.equal(ref, out)


def test_nested_contexts_equal_summed_vectors(tiny_llama):
    tokens = torch.tensor([[3, 40, 41, 42]])
    v1, v2 = torch.randn(64), torch.randn(64)
    with torch.no_grad():
        with steer(tiny_llama, {HOOK: v1}, 1.0, scale="absolute"):
            with steer(tiny_llama, {HOOK: v2}, 1.0, scale="absolute"):
                nested = tiny_llama(tokens)
        with steer(tiny_llama, {HOOK: v1 + v2}, 1.0, scale="absolute"):
            summed = tiny_llama(tokens)
    torch.testing.assert_close(nested, summed, atol=1e-5, rtol=1e-5)
    assert all_hooks_clean(tiny_llama)


def test_relative_scale_uses_residual_norm(tiny_llama):
    tokens = torch.tensor([[3, 40, 41, 42, 43]])
    v = torch.randn(64)
    seen = []
    with torch.no_grad():
        _, cache = tiny_llama.run_with_cache(tokens, names_filter=[HOOK])
        norm = float(cache[HOOK][0].norm(dim=-1).median())
        with steer(tiny_llama, {HOOK: v * 123.0}, 0.5, scale="relative"):
            with tiny_llama.hooks(fwd_hooks=[(HOOK, lambda x, hook: seen.append(x) or x)]):
                tiny_llama(tokens)
    delta = seen[0][0] - cache[HOOK][0]
    torch.testing.assert_close(delta.norm(dim=-1), torch.full((5,), 0.5 * norm), atol=1e-3, rtol=1e-4)


def test_hooks_removed_when_body_raises(tiny_llama):
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny_llama, {HOOK: torch.randn(64)}, 1.0):
            tiny_llama(torch.tensor([[1, 2, 3]]))
            raise RuntimeError("boom")
    assert all_hooks_clean(tiny_llama)
    assert len(tiny_llama.original_model._forward_pre_hooks) == 0


def test_hooks_removed_when_generation_is_interrupted(tiny_llama):
    calls = []

    def explode(x, hook):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        with steer(tiny_llama, {HOOK: torch.randn(64)}, 1.0, positions="generated"):
            with tiny_llama.hooks(fwd_hooks=[(HOOK, explode)]):
                tiny_llama.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=8, verbose=False)
    assert all_hooks_clean(tiny_llama)
    assert len(tiny_llama.original_model._forward_pre_hooks) == 0


@pytest.mark.parametrize("vectors, strength, match", [
    ({HOOK: torch.randn(10)}, 1.0, "width 10"),
    ({"blocks.99.hook_resid_post": torch.randn(64)}, 1.0, "no hook point"),
    ({HOOK: torch.full((64,), float("nan"))}, 1.0, "NaN"),
    ({HOOK: torch.zeros(64)}, 1.0, "zero"),
    ({HOOK: torch.randn(64)}, float("inf"), "finite"),
])
def test_bad_inputs(tiny_llama, vectors, strength, match):
    with pytest.raises(ValueError, match=match):
        with steer(tiny_llama, vectors, strength):
            pass
    assert all_hooks_clean(tiny_llama)
