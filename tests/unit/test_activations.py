import pytest
import torch

from steer_lens.activations import Activations, capture
from steer_lens.tokens import batch_encode

PROMPTS = ["hello there", "a", ("question?", " the answer"), "a somewhat longer prompt here"]


def test_shapes_and_metadata(tiny_llama):
    acts = capture(tiny_llama, ["a", "b c"], layers=[0, 3])
    assert acts.tensor.shape == (2, 2, 64)
    assert acts.hook_names == ["blocks.0.hook_resid_post", "blocks.3.hook_resid_post"]
    assert acts.layers == [0, 3] and acts.position == "last"


def test_last_and_mean_match_a_manual_cache(tiny_model):
    """Pooling must equal reading the cache of a single unpadded forward pass."""
    for prompt in PROMPTS:
        batch = batch_encode(tiny_model, [prompt])
        _, cache = tiny_model.run_with_cache(batch.tokens)
        resid = cache["blocks.1.hook_resid_post"][0]
        last = capture(tiny_model, [prompt], layers=[1]).tensor[0, 0]
        torch.testing.assert_close(last, resid[-1], atol=1e-5, rtol=0)
        mean = capture(tiny_model, [prompt], layers=[1], position="mean").tensor[0, 0]
        torch.testing.assert_close(mean, resid[batch.span[0]].mean(0), atol=1e-5, rtol=0)


def test_mean_pools_only_the_answer_span(tiny_llama):
    batch = batch_encode(tiny_llama, [("question?", " the answer")], chat_template=False)
    n_answer = int(batch.span.sum())
    assert n_answer == len(" the answer")  # byte-level tiny tokenizer: one token per byte
    assert not batch.span[0, 0]


@pytest.mark.parametrize("position", ["last", "mean", "all"])
def test_batched_equals_one_by_one(tiny_model, position):
    batched = capture(tiny_model, PROMPTS, layers=[0, 2], position=position, batch_size=4)
    single = capture(tiny_model, PROMPTS, layers=[0, 2], position=position, batch_size=1)
    torch.testing.assert_close(batched.tensor, single.tensor, atol=1e-4, rtol=0)
    if position == "all":
        assert torch.equal(batched.mask, single.mask)
        assert batched.tensor.transpose(1, 2)[~batched.mask].abs().max() == 0  # padding is zero


def test_stops_after_last_requested_layer(tiny_llama):
    fired = []
    hook = lambda x, hook: fired.append(hook.name) or x  # noqa: E731
    with tiny_llama.hooks(fwd_hooks=[("blocks.2.hook_in", hook), ("unembed.hook_in", hook)]):
        capture(tiny_llama, ["abc"], layers=[0, 1])
    assert fired == []  # nothing past layer 1 ran
    with tiny_llama.hooks(fwd_hooks=[("blocks.2.hook_in", hook)]):
        capture(tiny_llama, ["abc"], layers=[2])
    assert len(fired) == 1


def test_save_load_roundtrip(tiny_llama, tmp_path):
    acts = capture(tiny_llama, PROMPTS, layers=[1, 3], position="all")
    acts.save(tmp_path / "acts.safetensors")
    loaded = Activations.load(tmp_path / "acts.safetensors")
    assert torch.equal(loaded.tensor, acts.tensor) and torch.equal(loaded.mask, acts.mask)
    assert (loaded.layers, loaded.hook_names, loaded.position) == (acts.layers, acts.hook_names, "all")
    assert list(tmp_path.iterdir()) == [tmp_path / "acts.safetensors"]  # no temp files left


@pytest.mark.parametrize("kwargs, match", [
    (dict(layers=[7]), "out of range"),
    (dict(layers=[]), "no layers"),
    (dict(layers=[0], hook="resid_nowhere"), "unknown hook"),
    (dict(layers=[0], hook="blocks.{layer}.hook_nope"), "no hook point"),
    (dict(layers=[0], position="first"), "position must be"),
])
def test_bad_arguments_are_clear_errors(tiny_llama, kwargs, match):
    with pytest.raises(ValueError, match=match):
        capture(tiny_llama, ["abc"], **kwargs)


def test_empty_and_too_long_prompts(tiny_llama):
    with pytest.raises(ValueError, match="no prompts"):
        capture(tiny_llama, [], layers=[0])
    with pytest.raises(ValueError, match="context"):
        capture(tiny_llama, ["x" * 600], layers=[0])
