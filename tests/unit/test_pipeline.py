"""ExpertSteer end to end on tiny models: plan contents, persistence, compatibility, effect."""

import json

import pytest
import torch

import steer_lens as sl
from steer_lens.plan import SteeringPlan

POS = [(f"item {i}: is it good?", " yes, good") for i in range(24)]
NEG = [(f"item {i}: is it good?", " no, bad") for i in range(24)]


@pytest.fixture(scope="module")
def plan(tiny_llama, tiny_gemma):
    return sl.ExpertSteer(n_pairs=2, alignment="ridge", mi_dim=4).fit(tiny_gemma, tiny_llama, POS, NEG)


def test_plan_contents(plan, tiny_llama):
    assert plan.mi.shape == (3, 4)  # expert layers x target layers
    assert len(plan.pairs) == 2
    chosen = sorted(float(p.mi) for p in plan.pairs)
    assert chosen == sorted(plan.mi.flatten().tolist())[: len(chosen)] or len({p.target_layer for p in plan.pairs}) == 2
    for pair in plan.pairs:  # the lowest-MI rule: no unchosen cell in an unused column is lower
        assert pair.mi == pytest.approx(float(plan.mi[pair.expert_layer, pair.target_layer]))
    for hook, vec in plan.vectors.items():
        assert vec.shape == (64,) and torch.isclose(vec.norm(), torch.tensor(1.0))
        assert plan.norms[hook] > 0
    assert plan.expert["d_model"] == 48 and plan.target["n_layers"] == 4
    assert "expert_layer_0" in plan.reports and "target_r2" in plan.reports["expert_layer_0"]


def test_steering_moves_the_residual_along_the_vector(plan, tiny_llama):
    hook, vec = next(iter(plan.vectors.items()))
    tokens = torch.tensor([[5, 40, 41, 42, 43]])
    proj = {}
    for strength in (0.0, 2.0):
        with torch.no_grad(), plan.apply(tiny_llama, strength):
            _, cache = tiny_llama.run_with_cache(tokens, names_filter=[hook])
        proj[strength] = float((cache[hook][0] @ vec).mean())
    assert proj[2.0] - proj[0.0] == pytest.approx(2.0 * plan.norms[hook], rel=1e-3)


def test_save_load_roundtrip(plan, tmp_path, tiny_llama):
    plan.save(tmp_path / "plan")
    again = SteeringPlan.load(tmp_path / "plan")
    assert again.pairs == plan.pairs and again.norms == plan.norms
    assert all(torch.equal(again.vectors[k], plan.vectors[k]) for k in plan.vectors)
    assert torch.equal(again.mi, plan.mi)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]  # no temp folders left
    tokens = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        with plan.apply(tiny_llama, 1.5):
            a = tiny_llama(tokens)
        with again.apply(tiny_llama, 1.5):
            b = tiny_llama(tokens)
    assert torch.equal(a, b)


def test_plan_refuses_other_models(plan, tiny_gemma):
    with pytest.raises(ValueError, match="d_model"):
        with plan.apply(tiny_gemma, 1.0):
            pass


def test_corrupted_and_future_plans_are_refused(plan, tmp_path):
    folder = plan.save(tmp_path / "p")
    meta = json.loads((folder / "plan.json").read_text())
    (folder / "plan.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ValueError, match="upgrade steer-lens"):
        SteeringPlan.load(folder)
    (folder / "plan.json").write_text(json.dumps(meta)[:50])
    with pytest.raises(ValueError, match="corrupted"):
        SteeringPlan.load(folder)
    plan.save(folder)
    data = (folder / "tensors.safetensors").read_bytes()
    (folder / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupted"):
        SteeringPlan.load(folder)
    (folder / "tensors.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        SteeringPlan.load(folder)


def test_bad_fit_inputs(tiny_llama, tiny_gemma):
    with pytest.raises(ValueError, match="non-empty"):
        sl.ExpertSteer().fit(tiny_gemma, tiny_llama, POS, [])
    with pytest.raises(ValueError, match="unknown alignment"):
        sl.ExpertSteer(alignment="magic").fit(tiny_gemma, tiny_llama, POS, NEG)


def test_highest_rule_picks_the_highest_mi(tiny_llama, tiny_gemma):
    plan = sl.ExpertSteer(n_pairs=1, alignment="procrustes", rule="highest", mi_dim=4,
                          one_per_target=False).fit(tiny_gemma, tiny_llama, POS, NEG)
    assert plan.pairs[0].mi == pytest.approx(float(plan.mi.max()))


def test_one_per_expert_uses_distinct_expert_layers(tiny_llama, tiny_gemma):
    plan = sl.ExpertSteer(n_pairs=3, alignment="ridge", mi_dim=4, one_per_expert=True).fit(
        tiny_gemma, tiny_llama, POS, NEG)
    assert len({p.expert_layer for p in plan.pairs}) == 3


def test_fit_on_precomputed_activations_equals_fit(plan, tiny_llama, tiny_gemma):
    """One capture can feed several configs; the result is the same as capturing inside fit."""
    es = sl.ExpertSteer(n_pairs=2, alignment="ridge", mi_dim=4)
    acts = es.capture(tiny_gemma, tiny_llama, list(POS) + list(NEG))
    again = es.fit(tiny_gemma, tiny_llama, POS, NEG, activations=acts)
    assert again.vectors.keys() == plan.vectors.keys()
    for name, v in plan.vectors.items():
        assert torch.allclose(again.vectors[name], v, atol=1e-6)
    with pytest.raises(ValueError, match="do not match.*pass self.capture"):
        es.fit(tiny_gemma, tiny_llama, POS, NEG, activations=(acts[1], acts[0]))


@pytest.mark.parametrize("alignment", ["ridge", "autoencoder"])
def test_plan_keeps_each_pairs_aligner_in_memory(alignment, tiny_llama, tiny_gemma, tmp_path):
    """plan.aligners maps each pair's expert layer into the space its direction was found in:
    the aligned training activations project higher for positives than for negatives."""
    es = sl.ExpertSteer(n_pairs=2, alignment=alignment, mi_dim=4)
    xe, _ = acts = es.capture(tiny_gemma, tiny_llama, list(POS) + list(NEG))
    plan = es.fit(tiny_gemma, tiny_llama, POS, NEG, activations=acts)
    assert set(plan.aligners) == {(p.expert_layer, p.target_layer) for p in plan.pairs}
    for (e_layer, t_layer), al in plan.aligners.items():
        z = al.transform(xe[:, e_layer].double()).float()
        assert z.shape == (len(POS) + len(NEG), 64)
        proj = z @ plan.vectors[f"blocks.{t_layer}.hook_resid_post"]
        assert proj[: len(POS)].mean() > proj[len(POS):].mean()
    assert SteeringPlan.load(plan.save(tmp_path / "p")).aligners == {}  # in memory only
