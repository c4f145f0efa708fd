"""Field steering (per-token RFM gradient) on tiny models: the added delta against an autograd
reference, exact positions with and without the KV cache, persistence, refusals and the
shuffled-label control."""

import dataclasses
import json

import pytest
import torch

import steer_lens as sl
from steer_lens.baselines import fit_self_rfm
from steer_lens.export import absolute_vectors
from steer_lens.field import field_directions, shuffled_field_plan, steer_field
from steer_lens.plan import SteeringPlan
from steer_lens.rfm import RFMConfig

ADJ = ["good", "fine", "bad", "dull", "great", "awful"]
POS = [(f"item {i}: is the {ADJ[i % 6]} film good?", f" yes {ADJ[(i + 1) % 6]}") for i in range(24)]
NEG = [(f"item {i}: is the {ADJ[i % 6]} film good?", f" no {ADJ[(i + 3) % 6]}") for i in range(24)]
CFG = RFMConfig(iters=1)  # one AGOP update: M stays far from rank one, so the field varies with x
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def self_plan(tiny_llama):
    return fit_self_rfm(tiny_llama, POS, NEG, 1, config=CFG, mode="field")


@pytest.fixture(scope="module")
def es_plan(tiny_llama, tiny_gemma):
    return sl.ExpertSteer(n_pairs=2, alignment="ridge", mi_dim=4, rfm=CFG, mode="field").fit(
        tiny_gemma, tiny_llama, POS, NEG)


def reference_direction(rfm, x):
    """unit ∇f(x) by autograd on f(x) = Σ α_i exp(-‖(x - shift)/s - c_i‖_M / L), written out here
    from the RFM's state (float64), independent of RFM.gradients; also returns f(x)."""
    assert rfm.config.kernel == "laplace"
    x = x.detach().double().requires_grad_()
    M, c = rfm.kernel_M.double(), rfm.centers.double()
    diff = ((x - rfm.shift.double()) / rfm.scale)[:, None, :] - c[None]  # m n d
    dist = torch.einsum("mnd,de,mne->mn", diff, M, diff).clamp_min(0).sqrt()
    f = torch.exp(-dist / rfm.config.bandwidth) @ rfm.alpha.double()
    (g,) = torch.autograd.grad(f.sum(), x)
    return g / g.norm(dim=-1, keepdim=True), f.detach()


def recorded_deltas(model, plan, hooks, run, **apply_kw):
    """Run ``run()`` under ``plan.apply``; per hook, the residual just before the steering hook and
    what steering added there (both concatenated over forward calls along positions)."""
    before, after = {h: [] for h in hooks}, {h: [] for h in hooks}
    rec = lambda xs: (lambda x, hook: xs.append(x.detach().clone()) or x)  # noqa: E731
    with model.hooks(fwd_hooks=[(h, rec(before[h])) for h in hooks]):
        with plan.apply(model, **apply_kw):
            with model.hooks(fwd_hooks=[(h, rec(after[h])) for h in hooks]):
                out = run()
    return out, before, after


def test_reference_matches_the_rfm_predictor(self_plan, tiny_llama):
    rfm = self_plan.rfms[HOOK][0]
    x = torch.randn(5, 64) * 3
    _, f = reference_direction(rfm, x)
    torch.testing.assert_close(f.float(), rfm.predict(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("which", ["self_rfm", "expertsteer_ridge"])
def test_delta_is_strength_norm_unit_gradient(which, self_plan, es_plan, tiny_llama):
    plan = self_plan if which == "self_rfm" else es_plan
    assert plan.mode == "field" and set(plan.rfms) == set(plan.vectors)
    tokens = torch.tensor([[5, 40, 41, 42, 43, 44], [7, 50, 51, 52, 53, 54]])
    with torch.no_grad():
        _, before, after = recorded_deltas(tiny_llama, plan, list(plan.rfms), lambda: tiny_llama(tokens),
                                           strength=1.5)
    directions = []
    for hook, (rfm,) in plan.rfms.items():
        x, delta = before[hook][0], after[hook][0] - before[hook][0]
        ref, _ = reference_direction(rfm, x.reshape(-1, 64))
        expected = (1.5 * plan.norms[hook] * ref.float()).reshape(x.shape)
        torch.testing.assert_close(delta, expected, atol=1e-4 * plan.norms[hook], rtol=1e-3)
        directions.append(ref.reshape(-1, 64))
    # context-dependent: the direction differs between tokens (not one fixed vector up to sign)
    cos = directions[0] @ directions[0].T
    assert float(cos.abs().min()) < 0.999


def steered_generation(model, plan, positions, *, kv, prompt=((10, 11, 12, 13),), attention_mask=None):
    """Greedy generation of 3 tokens under field steering; tokens, per-position deltas, pre-hook residuals."""
    prompt = torch.tensor(prompt)
    run = lambda: model.generate(prompt, max_new_tokens=3, do_sample=False, use_past_kv_cache=kv,  # noqa: E731
                                 attention_mask=attention_mask, return_type="tokens", verbose=False)
    out, before, after = recorded_deltas(model, plan, [HOOK], run, strength=2.0, positions=positions)
    join = (lambda xs: torch.cat(xs, 1)) if kv else (lambda xs: xs[-1])  # no cache: the last recompute
    x = join(before[HOOK])
    assert x.shape[1] == out.shape[1] - 1
    return out, join(after[HOOK]) - x, x


@pytest.mark.parametrize("positions, steered", [("all", [1] * 6), ("prompt", [1] * 4 + [0] * 2),
                                                ("generated", [0] * 4 + [1] * 2)])
def test_positions_and_kv_cache_match_no_cache_recompute(self_plan, tiny_llama, positions, steered):
    out_kv, delta_kv, x_kv = steered_generation(tiny_llama, self_plan, positions, kv=True)
    out_re, delta_re, x_re = steered_generation(tiny_llama, self_plan, positions, kv=False)
    assert torch.equal(out_kv, out_re)
    torch.testing.assert_close(delta_kv, delta_re, atol=1e-4, rtol=1e-4)
    for delta, x in ((delta_kv, x_kv), (delta_re, x_re)):
        mask = torch.tensor(steered, dtype=torch.float32)[None, :, None]
        expected = mask * 2.0 * self_plan.norms[HOOK] * field_directions(self_plan.rfms[HOOK], x)
        torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-5)
        assert ((delta.norm(dim=-1) > 0).int()[0].tolist()) == steered


def test_left_padding_is_not_steered(self_plan, tiny_llama):
    prompt, mask = ((0, 0, 10, 11), (20, 21, 22, 23)), torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    _, delta, _ = steered_generation(tiny_llama, self_plan, "prompt", kv=True, prompt=prompt, attention_mask=mask)
    assert (delta.norm(dim=-1) > 0).int().tolist() == [[0, 0, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]]


def test_vanishing_gradient_gives_zero_direction(self_plan):
    rfms = self_plan.rfms[HOOK]
    far = torch.randn(3, 64) * 1e6  # every kernel value underflows to 0
    near = rfms[0].centers[:2] * rfms[0].scale + rfms[0].shift + 0.01
    out = field_directions(rfms, torch.cat([far, near]))
    assert torch.equal(out[:3], torch.zeros(3, 64))
    torch.testing.assert_close(out[3:].norm(dim=-1), torch.ones(2))


def test_save_load_roundtrip(self_plan, es_plan, tiny_llama, tmp_path):
    tokens = torch.tensor([[5, 6, 7, 8]])
    for plan in (self_plan, es_plan):
        folder = plan.save(tmp_path / plan.settings.get("method", "es"))
        meta = json.loads((folder / "plan.json").read_text())
        assert meta["format"] == 2 and set(meta["fields"]) == set(plan.rfms)
        again = SteeringPlan.load(folder)
        assert again.mode == "field"
        for hook, fitted in plan.rfms.items():
            for a, b in zip(fitted, again.rfms[hook]):
                for attr in ("centers", "targets", "alpha", "kernel_M", "shift"):
                    assert torch.equal(getattr(a, attr), getattr(b, attr)), attr
                assert a.scale == b.scale and a.config == b.config
        with torch.no_grad():
            with plan.apply(tiny_llama, 1.5):
                ref = tiny_llama(tokens)
            with again.apply(tiny_llama, 1.5):
                out = tiny_llama(tokens)
        assert torch.equal(ref, out)
    fixed = fit_self_rfm(tiny_llama, POS, NEG, 1, config=CFG)  # fixed plans keep format 1
    folder = fixed.save(tmp_path / "fixed")
    assert json.loads((folder / "plan.json").read_text())["format"] == 1
    assert SteeringPlan.load(folder).rfms == {} and SteeringPlan.load(folder).mode == "fixed"


def test_fixed_mode_on_a_field_plan_adds_the_vector(self_plan, tiny_llama):
    tokens = torch.tensor([[5, 40, 41, 42]])
    fixed = fit_self_rfm(tiny_llama, POS, NEG, 1, config=CFG)
    with torch.no_grad():
        with self_plan.apply(tiny_llama, 1.0, mode="fixed"):
            a = tiny_llama(tokens)
        with fixed.apply(tiny_llama, 1.0):
            b = tiny_llama(tokens)
        with self_plan.apply(tiny_llama, 1.0):
            c = tiny_llama(tokens)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_scaled_negative_flips_the_field(self_plan):
    x = torch.randn(4, 64)
    flipped = self_plan.scaled(-1.0)
    torch.testing.assert_close(field_directions(flipped.rfms[HOOK], x), -field_directions(self_plan.rfms[HOOK], x))


def test_shuffled_label_control(self_plan, es_plan, tiny_llama):
    tokens = torch.tensor([[5, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        _, cache = tiny_llama.run_with_cache(tokens, names_filter=[HOOK])
    x = cache[HOOK][0]
    control = shuffled_field_plan(self_plan, seed=3)
    assert control.mode == "field" and control.settings["control"] == "shuffled_labels"
    assert control.norms == self_plan.norms and set(control.vectors) == set(self_plan.vectors)
    real, fake = self_plan.rfms[HOOK][0], control.rfms[HOOK][0]
    dist = torch.cdist(real.centers * real.scale + real.shift, fake.centers * fake.scale + fake.shift)
    match = dist.argmin(1)  # the same training points (in another order) ...
    assert sorted(match.tolist()) == list(range(len(match))) and float(dist.min(1).values.max()) < 1e-4
    assert torch.equal(fake.targets.sort().values, real.targets.sort().values)  # ... the same labels,
    assert 0 < int((fake.targets[match] != real.targets).sum()) < len(match)  # ... shuffled
    cos = (field_directions([fake], x) * field_directions([real], x)).sum(-1)
    assert float(cos.abs().max()) < 0.999  # a different field
    again = shuffled_field_plan(self_plan, seed=3)
    assert torch.equal(field_directions(again.rfms[HOOK], x), field_directions(control.rfms[HOOK], x))
    assert set(shuffled_field_plan(es_plan).rfms) == set(es_plan.rfms)


@pytest.mark.parametrize("alignment", ["autoencoder", "hybrid"])
def test_autoencoder_alignments_are_refused(alignment, tiny_llama, tiny_gemma):
    with pytest.raises(ValueError, match="auto-encoder code, whose basis is not the target's"):
        sl.ExpertSteer(alignment=alignment, mode="field").fit(tiny_gemma, tiny_llama, POS, NEG)


def test_clear_errors(self_plan, tiny_llama, tiny_gemma):
    with pytest.raises(ValueError, match="d_model"):
        self_plan.apply(tiny_gemma, 1.0)
    with pytest.raises(ValueError, match="width 64 but the model's d_model is 48"):
        steer_field(tiny_gemma, self_plan.rfms, 1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        self_plan.apply(tiny_llama, 1.0, mode="vector")
    with pytest.raises(ValueError, match="mode must be one of"):
        sl.ExpertSteer(alignment="ridge", mode="fields").fit(tiny_gemma, tiny_llama, POS, NEG)
    fixed = fit_self_rfm(tiny_llama, POS, NEG, 1, config=CFG)
    with pytest.raises(ValueError, match="no RFM fields"):
        fixed.apply(tiny_llama, 1.0, mode="field")
    with pytest.raises(ValueError, match="no RFM fields"):
        shuffled_field_plan(fixed)
    with pytest.raises(ValueError, match="mode 'field'"):  # a llama.cpp control vector is one fixed vector
        absolute_vectors(self_plan)
    assert absolute_vectors(dataclasses.replace(self_plan, settings={**self_plan.settings, "mode": "fixed"}))


def test_hooks_removed_when_body_raises(self_plan, tiny_llama):
    with pytest.raises(RuntimeError, match="boom"):
        with self_plan.apply(tiny_llama, 1.0):
            tiny_llama(torch.tensor([[1, 2, 3]]))
            raise RuntimeError("boom")
    assert all(len(hp.fwd_hooks) == 0 for hp in tiny_llama.hook_dict.values())
    assert len(tiny_llama.original_model._forward_pre_hooks) == 0


def test_evaluate_shared_prompt_cache_matches_full_rows(self_plan, tiny_llama):
    """evaluate() scores answers after a shared prompt through the KV cache; under field steering
    (context-dependent) that must give the same scores as recomputing every row in full."""
    from steer_lens.data import Item
    from steer_lens.evaluate import evaluate

    items = [Item(id=str(i), question=f"Q{i}: is the {ADJ[i % 6]} film good?", choices=["yes", "no way"],
                  answer=i % 2) for i in range(4)]
    shared = evaluate(tiny_llama, items, plan=self_plan, strength=3.0, share_prompt=True)
    full = evaluate(tiny_llama, items, plan=self_plan, strength=3.0, share_prompt=False)
    plain = evaluate(tiny_llama, items)
    assert shared.correct == full.correct
    assert shared.margins == pytest.approx(full.margins, abs=1e-4)
    assert shared.margins != pytest.approx(plain.margins, abs=1e-4)  # the field did change the scores


def test_two_rfms_on_one_hook_steer_along_their_summed_unit_gradients(self_plan, tiny_llama, tmp_path):
    """Two expert layers feeding one target layer: unit(unit ∇f_1 + unit ∇f_2), as fixed vectors are
    combined; both RFMs survive save/load."""
    other = shuffled_field_plan(self_plan, seed=1).rfms[HOOK][0]
    plan = dataclasses.replace(self_plan, rfms={HOOK: [self_plan.rfms[HOOK][0], other]})
    tokens = torch.tensor([[5, 40, 41, 42, 43]])
    with torch.no_grad():
        _, before, after = recorded_deltas(tiny_llama, plan, [HOOK], lambda: tiny_llama(tokens), strength=1.0)
    x = before[HOOK][0].reshape(-1, 64)
    summed = sum(reference_direction(r, x)[0] for r in plan.rfms[HOOK])
    expected = plan.norms[HOOK] * (summed / summed.norm(dim=-1, keepdim=True)).float()
    delta = (after[HOOK][0] - before[HOOK][0]).reshape(-1, 64)
    torch.testing.assert_close(delta, expected, atol=1e-4 * plan.norms[HOOK], rtol=1e-3)
    again = SteeringPlan.load(plan.save(tmp_path / "two"))
    assert len(again.rfms[HOOK]) == 2
    torch.testing.assert_close(field_directions(again.rfms[HOOK], x), field_directions(plan.rfms[HOOK], x))
