"""The real packaged models (SmolLM2-135M-Instruct, Gemma-3-270M) through TransformerLens."""

import pytest
import torch

import steer_lens as sl
from steer_lens.models import load_hf

pytestmark = pytest.mark.integration

PROMPTS = ["The capital of France is", "Steering vectors change", "1 + 1 ="]


@pytest.mark.parametrize("name, fixture, d_model, n_layers", [
    ("smollm2-135m-instruct", "smollm2", 576, 30), ("gemma-3-270m", "gemma", 640, 18)])
def test_shapes_and_hf_parity(request, name, fixture, d_model, n_layers):
    model = request.getfixturevalue(fixture)
    assert (model.cfg.d_model, model.cfg.n_layers) == (d_model, n_layers)
    assert sl.capture(model, ["a", "b c"], layers=[0, n_layers - 1]).tensor.shape == (2, 2, d_model)
    hf, _, _ = load_hf(name)  # an independent, unwrapped HF model from the same cache entry
    hf.config._attn_implementation = "eager"
    batch = sl.tokens.batch_encode(model, PROMPTS, chat_template=False)
    with torch.no_grad():
        ours = model(batch.tokens, attention_mask=batch.attention_mask)
        ref = hf(batch.tokens, attention_mask=batch.attention_mask).logits
    real = batch.attention_mask.bool()
    torch.testing.assert_close(ours[real], ref[real], atol=1e-4, rtol=0)


def test_smollm2_knows_paris(smollm2):
    answer = sl.generate(smollm2, "What is the capital of France?", max_new_tokens=20)[0]
    assert "Paris" in answer


@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_batched_capture_equals_unbatched(request, fixture):
    model = request.getfixturevalue(fixture)
    prompts = PROMPTS + [("Is this review positive?", " yes"), "a much longer prompt " * 5]
    layers = [1, model.cfg.n_layers // 2]
    for position in ("last", "mean"):
        batched = sl.capture(model, prompts, layers=layers, position=position, batch_size=5)
        single = sl.capture(model, prompts, layers=layers, position=position, batch_size=1)
        # 1e-4 relative to the activations' scale: Gemma's residual stream reaches the
        # hundreds, where float32 matmuls of different batch shapes differ by ~1e-4 absolute.
        scale = max(1.0, float(single.tensor.abs().max()))
        assert float((batched.tensor - single.tensor).abs().max()) <= 1e-4 * scale


def test_cached_reload_gives_identical_logits(smollm2):
    again = sl.load_model("smollm2-135m-instruct")  # served from the converted-weights cache
    tokens = sl.tokens.batch_encode(smollm2, PROMPTS[:1]).tokens
    with torch.no_grad():
        assert torch.equal(smollm2(tokens), again(tokens))


def test_expert_steer_end_to_end(gemma, smollm2, tmp_path, one_thread):
    items = sl.load_dataset("sst2").split("train", limit=12)  # 24 prompts: the fit's cost grows with items
    pos, neg = sl.contrast_prompts(items)
    plan = sl.ExpertSteer(n_pairs=2, alignment="ridge", target_window=(2, 27)).fit(gemma, smollm2, pos, neg)
    assert plan.mi.shape == (18, 30)
    assert all(v.shape == (576,) for v in plan.vectors.values())
    assert all(2 <= p.target_layer <= 27 for p in plan.pairs)
    plan.save(tmp_path / "plan")
    plan = sl.SteeringPlan.load(tmp_path / "plan")
    hook, vec = next(iter(plan.vectors.items()))
    batch = sl.tokens.batch_encode(smollm2, [p for p, _ in pos[:4]])
    proj = {}
    for strength in (0.0, 1.0):
        with torch.no_grad(), plan.apply(smollm2, strength):
            _, cache = smollm2.run_with_cache(batch.tokens, attention_mask=batch.attention_mask,
                                              names_filter=[hook])
        proj[strength] = float((cache[hook][batch.attention_mask.bool()] @ vec).mean())
    assert proj[1.0] > proj[0.0] + 0.5 * plan.norms[hook]


def test_readme_example_runs_as_written(smollm2, gemma, tmp_path, monkeypatch, one_thread):
    """The README's "method, as code" block, executed verbatim on the real models (load_model
    is served from the session fixtures so the models are not loaded twice; a split it asks for is
    capped at 12 items: every line runs as written, the fit on 24 prompts instead of the README's 120)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"## The method, as code\n\n```python\n(.*?)```", readme, re.S).group(1)
    models = {"gemma-3-270m": gemma, "smollm2-135m-instruct": smollm2}
    monkeypatch.setattr(sl, "load_model", lambda name: models[name])
    load_dataset = sl.load_dataset

    def capped(name):  # a fresh dataset object: its split method is replaced on this one only
        ds = load_dataset(name)
        split = ds.split
        ds.split = lambda which, limit=None, **kw: split(which, limit=min(limit or 12, 12), **kw)
        return ds

    monkeypatch.setattr(sl, "load_dataset", capped)
    monkeypatch.chdir(tmp_path)
    printed = []
    scope = {"print": lambda *a: printed.append(a)}
    exec(compile(block, "README.md", "exec"), scope)
    plan = scope["plan"]
    assert len(plan.pairs) == 3 and all(2 <= p.target_layer <= 27 for p in plan.pairs)
    assert (tmp_path / "plans" / "sst2" / "plan.json").is_file()
    assert printed and isinstance(printed[0][0], list) and printed[0][0][0].strip()
