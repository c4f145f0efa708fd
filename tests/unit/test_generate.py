"""KV-cache parity: cached decoding must equal full recomputation (TransformerLens-style)."""

import torch

from steer_lens.generate import generate
from steer_lens.steer import steer


def test_kv_cache_logits_equal_full_forward(tiny_model):
    """Guards the transformers pin: with 5.24 the bridge silently drops the KV cache."""
    tokens = torch.tensor([[3, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        full = tiny_model(tokens)
        logits, cache = tiny_model(tokens[:, :4], return_type="logits_and_cache")
        step = tiny_model(tokens[:, 4:5], past_key_values=cache)
    torch.testing.assert_close(step[0, -1], full[0, 4], atol=1e-4, rtol=0)


def test_cached_and_uncached_greedy_generation_agree(tiny_model):
    for strength in (0.0, 4.0):
        with steer(tiny_model, {"blocks.1.hook_resid_post": torch.ones(tiny_model.cfg.d_model)}, strength):
            cached = generate(tiny_model, ["hello", "a longer prompt"], max_new_tokens=6)
            plain = generate(tiny_model, ["hello", "a longer prompt"], max_new_tokens=6, use_kv_cache=False)
        assert cached == plain


def test_batched_generation_equals_single(tiny_model):
    prompts = ["hello", "a much longer prompt than that"]
    batched = generate(tiny_model, prompts, max_new_tokens=5)
    single = [generate(tiny_model, p, max_new_tokens=5)[0] for p in prompts]
    assert batched == single
