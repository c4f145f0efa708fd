"""llama.cpp control-vector export: GGUF layout read back with gguf.GGUFReader, layer indexing
(direction.N = output of block N = blocks.N.hook_resid_post), baked scale, safetensors round trip."""

import numpy as np
import pytest
import torch

from steer_lens.export import (absolute_vectors, export_gguf, export_safetensors, import_safetensors,
                               llama_cpp_layer, read_gguf)
from steer_lens.plan import LayerPairInfo, SteeringPlan


def make_plan(hooks=("blocks.1.hook_resid_post", "blocks.3.hook_resid_post"), d=64) -> SteeringPlan:
    gen = torch.Generator().manual_seed(0)
    vectors = {h: (v := torch.randn(d, generator=gen)) / v.norm() for h in hooks}
    return SteeringPlan(vectors=vectors, pairs=[LayerPairInfo(0, 1, 0.12), LayerPairInfo(2, 3, 0.3)], mi=None,
                        expert={"name": "expert"}, target={"name": "tiny-target", "d_model": d, "n_layers": 4},
                        norms={h: 2.0 + i for i, h in enumerate(hooks)}, data_hash="abc123")


def test_gguf_layout_read_back_with_ggufreader(tmp_path):
    import gguf

    plan = make_plan()
    path = export_gguf(plan, tmp_path / "cv.gguf", strength=0.5)
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "tiny-target"
    assert fields["controlvector.layer_count"] == 2
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.3"]
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and t.data.shape == (64,)
        hook = f"blocks.{t.name.split('.')[1]}.hook_resid_post"
        want = 0.5 * plan.norms[hook] * plan.vectors[hook].numpy()
        np.testing.assert_allclose(np.asarray(t.data), want, rtol=1e-6, atol=1e-7)


def test_read_gguf_round_trip_and_metadata(tmp_path):
    plan = make_plan()
    export_gguf(plan, tmp_path / "cv.gguf", strength=-1.25)
    vectors, meta = read_gguf(tmp_path / "cv.gguf")
    expected = absolute_vectors(plan, -1.25)
    assert sorted(vectors) == [1, 3]
    for layer in vectors:
        torch.testing.assert_close(vectors[layer], expected[layer])
        assert float(vectors[layer].norm()) == pytest.approx(1.25 * plan.norms[f"blocks.{layer}.hook_resid_post"], rel=1e-5)
    assert meta["steer_lens.strength"] == pytest.approx(-1.25) and meta["steer_lens.data_hash"] == "abc123"


def test_layer_indexing_matches_llama_cpp():
    assert llama_cpp_layer("blocks.7.hook_resid_post") == 7  # build_cvec(cur, il=7) after block 7
    assert llama_cpp_layer("blocks.7.hook_resid_pre") == 6  # resid_pre 7 is block 6's output
    for hook in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.0.hook_resid_pre"):
        with pytest.raises(ValueError, match="direction.0 is invalid"):
            llama_cpp_layer(hook)
    with pytest.raises(ValueError, match="residual stream"):
        llama_cpp_layer("blocks.3.hook_mlp_out")


def test_vectors_on_one_layer_are_summed():
    plan = make_plan(hooks=("blocks.2.hook_resid_post", "blocks.3.hook_resid_pre"))
    out = absolute_vectors(plan, 1.0)
    assert list(out) == [2]
    want = sum(plan.norms[h] * plan.vectors[h] for h in plan.vectors)
    torch.testing.assert_close(out[2], want.float())


def test_bad_inputs_are_refused(tmp_path):
    plan = make_plan()
    with pytest.raises(ValueError, match="finite"):
        export_gguf(plan, tmp_path / "x.gguf", strength=float("inf"))
    with pytest.raises(ValueError, match="no vectors"):
        export_gguf(SteeringPlan(vectors={}, pairs=[], mi=None, expert={}, target={}), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ValueError, match="not a readable GGUF"):
        read_gguf(tmp_path / "junk.gguf")
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "missing.gguf")


def test_exported_vectors_steer_like_the_plan(tiny_llama):
    """Adding the GGUF's raw vectors at block N's output == plan.apply(model, strength)."""
    from steer_lens.steer import steer

    plan = make_plan()
    tokens = torch.tensor([[5, 40, 41, 42, 43, 44]])
    with torch.no_grad(), plan.apply(tiny_llama, 0.7):
        want = tiny_llama(tokens)
    raw = {f"blocks.{layer}.hook_resid_post": v for layer, v in absolute_vectors(plan, 0.7).items()}
    with torch.no_grad(), steer(tiny_llama, raw, 1.0, scale="absolute"):
        got = tiny_llama(tokens)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_safetensors_round_trip(tmp_path):
    plan = make_plan()
    path = export_safetensors(plan, tmp_path / "v.safetensors")
    back = import_safetensors(path)
    assert back.norms == plan.norms and back.pairs == plan.pairs and back.target == plan.target
    for hook, vec in plan.vectors.items():
        torch.testing.assert_close(back.vectors[hook], vec)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError):
        import_safetensors(tmp_path / "bad.safetensors")
