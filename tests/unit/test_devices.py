"""Device routing without a GPU: a stand-in model whose embeddings live on the "meta" device
(shapes only, no data) shows where token batches and steering masks are created."""

import types

import torch

from steer_lens.devices import model_device, model_dtype
from steer_lens.steer import _CallState, _position_mask
from steer_lens.tokens import encode_all, pad


def _on_meta(model):
    """A stand-in with ``model``'s tokenizer and config but bf16 input embeddings on "meta"."""
    emb = torch.nn.Embedding(10, 4, device="meta", dtype=torch.bfloat16)
    hf = types.SimpleNamespace(get_input_embeddings=lambda: emb)
    return types.SimpleNamespace(original_model=hf, tokenizer=model.tokenizer, cfg=model.cfg)


def test_model_device_and_dtype_follow_the_input_embeddings(tiny_llama):
    assert model_device(tiny_llama) == torch.device("cpu") and model_dtype(tiny_llama) == torch.float32
    fake = _on_meta(tiny_llama)
    assert model_device(fake).type == "meta" and model_dtype(fake) == torch.bfloat16


def test_token_batches_are_created_on_the_models_input_device(tiny_llama):
    fake = _on_meta(tiny_llama)
    encoded = encode_all(tiny_llama, ["a", ("question?", " answer")])
    for side in ("right", "left"):
        batch = pad(fake, encoded, padding_side=side)
        for t in (batch.tokens, batch.attention_mask, batch.span, batch.lengths):  # meta: no data, no last_index
            assert t.device.type == "meta"
        ref = pad(tiny_llama, encoded, padding_side=side)  # same shapes and dtypes on the CPU
        assert (batch.tokens.shape, batch.span.dtype) == (ref.tokens.shape, ref.span.dtype)


def test_steering_position_masks_are_created_on_the_residuals_device():
    state = _CallState(offset=3, real=torch.ones(2, 4, dtype=torch.bool), prompt_len=5)
    for positions in ("all", "prompt", "generated"):
        mask = _position_mask(state, positions, 2, 4, torch.device("meta"))
        assert mask.device.type == "meta" and mask.shape == (2, 4)
    cpu = _position_mask(state, "prompt", 2, 4, torch.device("cpu"))
    assert cpu.tolist() == [[True, True, False, False]] * 2  # absolute positions 3..6, prompt is 0..4
