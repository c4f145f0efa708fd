import random

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


def assert_same(a, b):
    """Equal to float tolerance relative to the activation scale (1e-4 of the largest value)."""
    if a.mask is not None or b.mask is not None:
        assert torch.equal(a.mask, b.mask)
        assert a.tensor.transpose(1, 2)[~a.mask].abs().max() == 0  # padding is zero
    scale = b.tensor.abs().max().item()
    torch.testing.assert_close(a.tensor, b.tensor, atol=1e-4 * scale, rtol=0)


@pytest.mark.parametrize("position", ["last", "mean", "all"])
def test_left_padding_equals_right_padding_and_one_by_one(tiny_model, one_thread, position):
    """Left-padded rows get mask-derived positions and mask-based pooling: nothing moves."""
    prompts = PROMPTS + ["0123456789 abcdefghij 0123456789"]  # longer than gemma3's window (8)
    run = lambda **kw: capture(tiny_model, prompts, layers=[0, -1], position=position, **kw)  # noqa: E731
    single = run(batch_size=1)
    for batch_size in (5, 2):  # one batch, and batches of different widths
        assert_same(run(batch_size=batch_size, padding_side="left"), single)
        assert_same(run(batch_size=batch_size, padding_side="right"), single)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_padding_side_invariance_on_random_prompt_sets(family, tiny_llama, tiny_gemma, one_thread):
    model = tiny_llama if family == "llama" else tiny_gemma
    rng = random.Random(f"padding-{family}")
    word = lambda: "".join(rng.choice("ab xyz?") for _ in range(rng.randint(1, 20)))  # noqa: E731
    for _ in range(3):
        prompts = [word() if rng.random() < 0.5 else (word(), " " + word()) for _ in range(rng.randint(2, 5))]
        for position in ("last", "mean", "all"):
            kw = dict(layers=[rng.randrange(model.cfg.n_layers)], position=position)
            single = capture(model, prompts, batch_size=1, **kw)
            left = capture(model, prompts, batch_size=rng.randint(2, 5), padding_side="left", **kw)
            assert_same(left, single)


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
    (dict(layers=[0], padding_side="middle"), "padding_side must be 'right' or 'left'"),
    (dict(layers=[0], padding_side="LEFT"), "padding_side must be"),
])
def test_bad_arguments_are_clear_errors(tiny_llama, kwargs, match):
    with pytest.raises(ValueError, match=match):
        capture(tiny_llama, ["abc"], **kwargs)


def test_empty_and_too_long_prompts(tiny_llama):
    with pytest.raises(ValueError, match="no prompts"):
        capture(tiny_llama, [], layers=[0])
    with pytest.raises(ValueError, match="context"):
        capture(tiny_llama, ["x" * 600], layers=[0])


@pytest.mark.parametrize("position", ["last", "mean", "all"])
def test_per_head_hooks_are_flattened_head_major(tiny_llama, position):
    """attn.hook_z is (batch, pos, head, d_head): captured as head * d_head features."""
    prompt = ("question?", " the answer")
    batch = batch_encode(tiny_llama, [prompt])
    _, cache = tiny_llama.run_with_cache(batch.tokens)
    z = cache["blocks.1.attn.hook_z"][0]  # pos head d_head
    got = capture(tiny_llama, [prompt, "other"], layers=[1], hook="blocks.{layer}.attn.hook_z", position=position).tensor[0, 0]
    want = {"last": z[-1], "mean": z[batch.span[0]].mean(0), "all": z}[position]
    torch.testing.assert_close(got[: want.shape[0]] if position == "all" else got,
                               want.flatten(-2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", ["last", "mean", "all"])
def test_streamed_shards_load_back_equal_to_the_in_memory_capture(tiny_llama, tmp_path, position):
    """out= streams batches to shards; loading them back gives exactly the in-memory result,
    whether read whole or shard by shard (each row knows its prompt's position)."""
    from steer_lens.shards import ActivationShards

    prompts = PROMPTS + ["x" * k for k in range(1, 8)]  # 11 prompts of many lengths
    kw = dict(layers=[0, 2], position=position, batch_size=3)
    memory = capture(tiny_llama, prompts, **kw)
    shards = capture(tiny_llama, prompts, out=tmp_path / "acts", shard_size=4, **kw)
    assert isinstance(shards, ActivationShards) and len(shards) == 11 and shards.num_shards == 3
    for loaded in (shards.load(), Activations.load(tmp_path / "acts")):
        assert torch.equal(loaded.tensor, memory.tensor)
        assert (loaded.mask is None) == (memory.mask is None)
        if position == "all":
            assert torch.equal(loaded.mask, memory.mask)
        assert (loaded.layers, loaded.hook_names, loaded.position) == (memory.layers, memory.hook_names, position)
    seen = []
    for rows, part in shards:  # lazy: one file at a time, rows in capture (length-sorted) order
        assert len(part) == len(rows) <= 4
        for k, i in enumerate(rows.tolist()):
            got = part.tensor[k]
            want = memory.tensor[i]
            if position == "all":
                want = want[:, : got.shape[1]]
                assert torch.equal(part.mask[k], memory.mask[i, : got.shape[1]])
            assert torch.equal(got, want)
        seen += rows.tolist()
    assert sorted(seen) == list(range(11))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts"]  # no temporary folders left
    assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == [
        "index.json", "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]


def test_streaming_replaces_an_old_shard_folder_atomically_and_refuses_other_folders(tiny_llama, tmp_path):
    out = tmp_path / "acts"
    capture(tiny_llama, PROMPTS, layers=[0], out=out, shard_size=1)
    assert len(list(out.glob("shard-*"))) == 4
    capture(tiny_llama, PROMPTS[:2], layers=[0], out=out, shard_size=8)  # overwrite: no stale shards
    assert [p.name for p in sorted(out.iterdir())] == ["index.json", "shard-00000.safetensors"]
    assert len(Activations.load(out)) == 2
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a steer-lens activation shard folder"):
        capture(tiny_llama, PROMPTS, layers=[0], out=other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_a_failed_stream_leaves_no_folder(tiny_llama, tmp_path):
    """An error mid-capture (a hook that raises in the third batch, after two shards were
    written) leaves neither the folder nor temporaries."""
    calls = []

    def boom(x, hook):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return x

    with tiny_llama.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", boom)]):
        with pytest.raises(RuntimeError, match="boom"):
            capture(tiny_llama, PROMPTS, layers=[1], out=tmp_path / "acts", shard_size=1, batch_size=1)
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_offload_cpu_and_bad_streaming_arguments(tiny_llama):
    acts = capture(tiny_llama, PROMPTS, layers=[1], position="mean", offload="cpu")
    assert acts.tensor.device.type == "cpu" and acts.tensor.dtype == torch.float32
    assert torch.equal(acts.tensor, capture(tiny_llama, PROMPTS, layers=[1], position="mean").tensor)
    with pytest.raises(ValueError, match="offload must be"):
        capture(tiny_llama, PROMPTS, layers=[1], offload="disk")
    with pytest.raises(ValueError, match="shard_size must be"):
        capture(tiny_llama, PROMPTS, layers=[1], out="x", shard_size=0)
