"""sweep(): one lower pass per batch, the steered upper blocks per strength, equal to evaluate()
per strength (scores, predictions), also for choices that differ before their last token (cached
prompt, choices continued from it); SweepInputs shared by several plans and calls; the fallbacks;
field plans; lower blocks really run once; and the protocol's grid search gives the same choice
with and without the sweep."""

import pytest
import torch

from steer_lens.baselines import fit_self_rfm
from steer_lens.data import Item
from steer_lens.evaluate import evaluate
from steer_lens.plan import SteeringPlan
from steer_lens.protocol import StrengthSearch, choose
from steer_lens.rfm import RFMConfig
from steer_lens.sweep import first_steered_block, sweep

STRENGTHS = [0.0, 0.3, -0.8, 2.0]
# prompts of different lengths (left padding inside a batch); choices " x"/" y" (byte tokens: shared " ",
# then one token) and " (A"/" (B" (shared " (")
ITEMS = [Item(f"i{i}", "why " * (i % 5) + f"is {i} even or odd", ("x", "y", "z")[: 2 + i % 2], i % 2)
         for i in range(11)]
AB = [Item(f"ab{i}", f"Pick one {'please ' * (i % 3)}now.\n(A) yes\n(B) no", ("A", "B"), i % 2, format="ab")
      for i in range(5)]


def make_plan(model, hooks, seed=0):
    g = torch.Generator().manual_seed(seed)
    vecs = {h: torch.randn(model.cfg.d_model, generator=g) for h in hooks}
    vecs = {h: v / v.norm() for h, v in vecs.items()}
    card = {"name": "tiny", "d_model": model.cfg.d_model, "n_layers": model.cfg.n_layers}
    return SteeringPlan(vectors=vecs, pairs=[], mi=None, expert=card, target=card,
                        norms={h: 3.0 + i for i, h in enumerate(hooks)})


@pytest.fixture
def fast_path(monkeypatch):
    """Records each lower pass of the sweep (so a test can check the fast path ran)."""
    import steer_lens.sweep as S

    calls, inner = [], S.lower_residuals
    monkeypatch.setattr(S, "lower_residuals", lambda *a, **k: calls.append(a[2]) or inner(*a, **k))
    return calls


def assert_same(swept, items, model, plan, strengths, **kw):
    assert len(swept) == len(strengths)
    for s, got in zip(strengths, swept):
        ref = evaluate(model, items, plan=plan, strength=s, **kw)
        assert got.predictions == ref.predictions and got.correct == ref.correct, s
        assert got.margins == pytest.approx(ref.margins, abs=1e-4), s
        assert got.accuracy == ref.accuracy and got.meta["strength"] == s


def test_sweep_equals_evaluate_two_hooks(tiny_model, fast_path):
    n = tiny_model.cfg.n_layers
    plan = make_plan(tiny_model, [f"blocks.{n - 2}.hook_attn_out", "blocks.1.hook_resid_post"])
    assert first_steered_block(plan) == 1
    swept = sweep(tiny_model, ITEMS + AB, plan, STRENGTHS, batch_size=4)
    assert_same(swept, ITEMS + AB, tiny_model, plan, STRENGTHS, batch_size=4)
    assert fast_path == [1]  # one lower pass, up to block 1
    assert all(r.meta["sweep_from_block"] == 1 for r in swept)
    # the steering matters (so the equality above is not the unsteered model's twice)
    assert swept[0].margins != pytest.approx(swept[-1].margins, abs=1e-3)


def test_stop_then_start_equals_full_forward(tiny_model):
    """The building block: residual entering block k (left-padded batch), then blocks k.. with the
    blocks below made pass-through, gives the full forward's logits at every real position."""
    from steer_lens.sweep import skip_blocks
    from steer_lens.tokens import pad

    batch = pad(tiny_model, [(list(range(5, 17)), 0), (list(range(20, 25)), 0), ([7, 8], 0)], padding_side="left")
    with torch.no_grad():
        full = tiny_model(batch.tokens, attention_mask=batch.attention_mask)
        resid = tiny_model(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=2)
        with skip_blocks(tiny_model, 2):
            upper = tiny_model(resid, attention_mask=batch.attention_mask, start_at_layer=2)
    real = batch.attention_mask.bool()
    assert torch.allclose(upper[real], full[real], atol=1e-4)


def test_lower_blocks_run_once_per_batch(tiny_llama):
    plan = make_plan(tiny_llama, ["blocks.2.hook_resid_pre"])
    calls = {0: 0, 2: 0}

    def count(layer):
        def hook(x, hook):
            calls[layer] += 1
        return hook

    with tiny_llama.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", count(0)), ("blocks.2.hook_resid_pre", count(2))]):
        sweep(tiny_llama, ITEMS, plan, STRENGTHS, batch_size=4)
    batches = -(-len(ITEMS) // 4)
    # block 0 once per batch; block 2's input once where the lower pass stops, then once per strength
    assert calls == {0: batches, 2: batches * (1 + len(STRENGTHS))}
    assert all("forward" not in vars(b) for b in tiny_llama.blocks)  # pass-through removed


@pytest.mark.parametrize("case", ["no_norm", "embed_hook"])
def test_fall_back_to_evaluate(tiny_llama, monkeypatch, case):
    import steer_lens.sweep as S

    items, plan = ITEMS[:4], make_plan(tiny_llama, ["blocks.1.hook_resid_post"])
    if case == "no_norm":  # steer() measures the norm on the context's first forward: not the sweep's
        plan.norms = {}
    if case == "embed_hook":  # not inside a block: nothing below it to share
        plan = make_plan(tiny_llama, ["hook_embed"])
    monkeypatch.setattr(S, "lower_residuals", lambda *a, **k: pytest.fail("fast path used"))
    monkeypatch.setattr(S.SweepInputs, "level", lambda *a, **k: pytest.fail("fast path used"))
    assert_same(sweep(tiny_llama, items, plan, [0.0, 1.0]), items, tiny_llama, plan, [0.0, 1.0])


# choices that differ before their last token: " red"/" blue"/" green" on the byte tokenizer, and
# answers of different lengths, beside one-token and A/B items
MULTI = ITEMS[:5] + AB[:3] + [Item(f"m{i}", f"colour {'of the sky ' * (i % 3)}{i}?",
                                   ("red", "blue", "green", "dark red")[: 2 + i % 3], i % 2) for i in range(7)]


def test_multi_token_choices_equal_evaluate(tiny_model):
    from steer_lens.sweep import SweepInputs

    n = tiny_model.cfg.n_layers
    inputs = SweepInputs(tiny_model, MULTI, batch_size=4)
    assert not inputs.last_token
    plan = make_plan(tiny_model, [f"blocks.{n - 1}.hook_attn_out", "blocks.1.hook_resid_post"])
    swept = sweep(tiny_model, MULTI, plan, STRENGTHS, batch_size=4, inputs=inputs)
    assert_same(swept, MULTI, tiny_model, plan, STRENGTHS, batch_size=4)
    assert all(r.meta["sweep_from_block"] == 1 for r in swept)
    assert swept[0].margins != pytest.approx(swept[-1].margins, abs=1e-3)


def test_inputs_shared_by_plans_and_calls(tiny_llama, monkeypatch):
    """One SweepInputs serves several plans and calls: block 0 runs once per batch for all of
    them (a plan steering from block 2 continues from the residual kept at block 1), and every
    result still equals evaluate."""
    from steer_lens.sweep import SweepInputs

    calls = {0: 0}

    def count(x, hook):
        calls[0] += 1

    for items in (ITEMS, MULTI):
        calls[0] = 0
        inputs = SweepInputs(tiny_llama, items, batch_size=4)
        plans = [make_plan(tiny_llama, ["blocks.1.hook_resid_post"], seed=1),
                 make_plan(tiny_llama, ["blocks.2.hook_resid_pre"], seed=2)]
        with tiny_llama.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", count)]):
            out = [sweep(tiny_llama, items, plan, [0.5, -1.0], batch_size=4, inputs=inputs) for plan in plans]
            out.append(sweep(tiny_llama, items, plans[0], [2.0], batch_size=4, inputs=inputs))
        passes = 1 if inputs.last_token else 2  # the cached layout: prompts, then choices
        assert calls[0] == passes * len(inputs.batches)
        assert sorted(inputs._levels) == [1, 2]
        for plan, strengths, got in zip(plans + plans[:1], ([0.5, -1.0], [0.5, -1.0], [2.0]), out):
            assert_same(got, items, tiny_llama, plan, strengths, batch_size=4)
    with pytest.raises(ValueError, match="other items"):
        sweep(tiny_llama, ITEMS[:3], plans[0], [1.0], inputs=inputs)


def test_field_plan(tiny_llama, fast_path):
    pos = [(f"item {i}: is it good?", " yes") for i in range(12)]
    neg = [(f"item {i}: is it good?", " no") for i in range(12)]
    plan = fit_self_rfm(tiny_llama, pos, neg, 1, config=RFMConfig(iters=1), mode="field")
    assert plan.mode == "field"
    strengths = [0.0, 0.5, -1.5]
    swept = sweep(tiny_llama, ITEMS, plan, strengths, batch_size=8)
    assert_same(swept, ITEMS, tiny_llama, plan, strengths, batch_size=8)
    assert fast_path == [1]
    assert swept[0].margins != pytest.approx(swept[-1].margins, abs=1e-3)


def test_bad_input(tiny_llama):
    plan = make_plan(tiny_llama, ["blocks.1.hook_resid_post"])
    with pytest.raises(ValueError, match="no items"):
        sweep(tiny_llama, [], plan, [1.0])
    with pytest.raises(ValueError, match="finite"):
        sweep(tiny_llama, ITEMS, plan, [float("nan")])


def test_choose_same_with_and_without_sweep(tiny_llama, monkeypatch):
    import steer_lens.sweep as S

    calls, inner = [], S.sweep
    monkeypatch.setattr(S, "sweep", lambda *a, **k: calls.append(list(a[3])) or inner(*a, **k))
    plans = {"a": make_plan(tiny_llama, ["blocks.1.hook_resid_post"], seed=1),
             "b": make_plan(tiny_llama, ["blocks.2.hook_resid_post"], seed=2)}
    search = StrengthSearch(grid=(0.2, 0.8), extend=(1.5,), refine_rounds=1, signed=True)
    fast = choose(tiny_llama, ITEMS, plans, search=search, batch_size=4)
    assert calls and calls[0] == [0.2, -0.2, 0.8, -0.8]  # the coarse grid in one sweep (0: unsteered)
    n_calls = len(calls)
    slow = choose(tiny_llama, ITEMS, plans, search=search, batch_size=4, use_sweep=False)
    assert len(calls) == n_calls
    assert (fast.key, fast.strength) == (slow.key, slow.strength)
    for key in plans:
        a, b = fast.curves[key], slow.curves[key]
        assert [p["strength"] for p in a] == [p["strength"] for p in b]
        assert [p["accuracy"] for p in a] == [p["accuracy"] for p in b]
        assert [p["mean_margin"] for p in a] == pytest.approx([p["mean_margin"] for p in b], abs=1e-4)


@pytest.mark.parametrize("kind", ["llama3", "qwen2", "gemma2", "gemma3", "mistral", "phi3"])
def test_every_family(family_dirs, kind, fast_path):
    """Left-padded lower pass + pass-through lower blocks + start_at_layer equals the full forward
    on each tiny family (soft-capping, sliding windows, partial rotary, BOS/no BOS)."""
    from steer_lens.models import load_model

    model = load_model(family_dirs[kind])
    plan = make_plan(model, ["blocks.1.hook_resid_pre"])
    strengths = [0.0, 1.5]
    assert_same(sweep(model, ITEMS + AB, plan, strengths, batch_size=8), ITEMS + AB, model, plan, strengths,
                batch_size=8)
    assert fast_path == [1]
    assert_same(sweep(model, MULTI, plan, strengths, batch_size=8), MULTI, model, plan, strengths, batch_size=8)
