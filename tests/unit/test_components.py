"""probes.margin_components: the direct-logit split of an answer margin adds up to the model's own
margin, agrees with evaluate's scores, isolates the steering vectors' direct effect, and refuses
models whose readout is not linear in the hooks."""

from __future__ import annotations

import pytest
import torch

from steer_lens.data import Item
from steer_lens.evaluate import score_items
from steer_lens.probes import margin_components

# one byte-token answer each after the shared prompt; prompts of different lengths (left padding)
ITEMS = [Item(f"i{i}", "why " * (i % 4) + f"is {i} x or y", ("x", "y"), i % 2) for i in range(6)]


def _hook(model, layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def test_components_add_up_to_the_margin_evaluate_scores(tiny_llama, one_thread):
    res = margin_components(tiny_llama, ITEMS, batch_size=4)
    scores = score_items(tiny_llama, ITEMS)
    margin = torch.tensor([s[1] - s[0] for s, _ in scores])
    assert torch.allclose(res.margin_clean, margin, atol=1e-4)
    assert torch.allclose(res.clean.sum(1), res.margin_clean, atol=1e-4)
    assert res.terms[0] == "resid_pre0" and res.terms[-3:] == ["steering", "final_norm_scale", "unembed_bias"]
    assert len(res.terms) == 2 * tiny_llama.cfg.n_layers + 4
    assert res.clean[:, -3:-1].abs().max() < 1e-4  # nothing is added, nothing rescaled without steering
    assert res.clean[:, 1:-3].abs().max() > 1e-3  # the blocks do contribute


def test_steering_term_is_the_added_vectors_direct_effect(tiny_llama, one_thread):
    d = tiny_llama.cfg.d_model
    v = torch.randn(d, generator=torch.Generator().manual_seed(0))
    layer = tiny_llama.cfg.n_layers - 1  # last block: nothing downstream can respond to the vector
    hook = _hook(tiny_llama, layer)
    res = margin_components(tiny_llama, ITEMS, vectors={hook: v}, strength=2.0, norms={hook: 3.0})
    delta = res.delta
    assert torch.allclose(res.steered.sum(1), res.margin_steered, atol=1e-4)
    # the components of every block are untouched (the vector enters after them) ...
    assert delta[:, :-3].abs().max() < 1e-4 and delta[:, -1].abs().max() < 1e-6
    # ... so the margin moves by the vector's direct effect plus the final norm's rescaling
    assert torch.allclose(delta[:, -3] + delta[:, -2], res.margin_steered - res.margin_clean, atol=1e-4)
    assert delta[:, -3].abs().max() > 1e-3 and delta[:, -2].abs().max() > 1e-4
    # the direct effect is the added vector read through the clean run's (fixed) scale: linear in the strength
    double = margin_components(tiny_llama, ITEMS, vectors={hook: v}, strength=4.0, norms={hook: 3.0})
    assert torch.allclose(double.delta[:, -3], 2 * delta[:, -3], atol=1e-4)
    assert not torch.allclose(double.delta[:, -2], 2 * delta[:, -2], atol=1e-4)  # the rescaling is not
    # steering at an earlier block moves the components above it, not those below
    early = margin_components(tiny_llama, ITEMS, vectors={_hook(tiny_llama, 0): v}, strength=2.0,
                              norms={_hook(tiny_llama, 0): 3.0})
    below = [k for k, t in enumerate(early.terms) if t in ("resid_pre0", "blocks.0.attn", "blocks.0.mlp")]
    above = [k for k, t in enumerate(early.terms) if t.startswith(("blocks.1.", "blocks.2.", "blocks.3."))]
    assert early.delta[:, below].abs().max() < 1e-4 and early.delta[:, above].abs().max() > 1e-4
    rows = early.table()
    assert {r["term"] for r in rows} == set(early.terms)
    assert sum(r["delta"] for r in rows) == pytest.approx(float((early.margin_steered - early.margin_clean).mean()),
                                                          abs=1e-4)


def test_heads_split_the_attention_outputs(tiny_llama, one_thread):
    whole = margin_components(tiny_llama, ITEMS)
    heads = margin_components(tiny_llama, ITEMS, heads=True)
    n_heads = tiny_llama.cfg.n_heads
    for layer in range(tiny_llama.cfg.n_layers):
        cols = [heads.terms.index(f"blocks.{layer}.attn.head{h}") for h in range(n_heads)]
        cols.append(heads.terms.index(f"blocks.{layer}.attn.bias"))
        assert torch.allclose(heads.clean[:, cols].sum(1), whole.clean[:, whole.terms.index(f"blocks.{layer}.attn")],
                              atol=1e-4)
    assert torch.allclose(heads.clean.sum(1), heads.margin_clean, atol=1e-4)


def test_neurons_split_their_mlp(tiny_llama, one_thread):
    v = torch.randn(tiny_llama.cfg.d_model, generator=torch.Generator().manual_seed(1))
    hook = _hook(tiny_llama, 0)
    whole = margin_components(tiny_llama, ITEMS, vectors={hook: v}, strength=1.0, norms={hook: 2.0})
    split = margin_components(tiny_llama, ITEMS, vectors={hook: v}, strength=1.0, norms={hook: 2.0}, neurons=[2])
    cols = [k for k, t in enumerate(split.terms) if t.startswith("blocks.2.mlp.")]
    assert len(cols) == tiny_llama.cfg.d_mlp + 1 and "blocks.2.mlp" not in split.terms
    for run in ("clean", "steered"):
        assert torch.allclose(getattr(split, run)[:, cols].sum(1),
                              getattr(whole, run)[:, whole.terms.index("blocks.2.mlp")], atol=1e-4)
    assert (split.delta[:, cols[:-1]].abs().max(0).values > 1e-6).sum() > 1  # several neurons respond
    with pytest.raises(ValueError, match="numbered 0..3"):
        margin_components(tiny_llama, ITEMS, neurons=[4])


def test_a_clean_split_is_reused_for_many_plans(tiny_llama, one_thread):
    v = torch.randn(tiny_llama.cfg.d_model, generator=torch.Generator().manual_seed(2))
    hook = _hook(tiny_llama, 1)
    base = margin_components(tiny_llama, ITEMS, heads=True, batch_size=4)
    assert base.steered is None and base.scale.shape == (len(ITEMS),)
    fresh = margin_components(tiny_llama, ITEMS, vectors={hook: v}, strength=1.5, norms={hook: 2.0}, heads=True)
    reused = margin_components(tiny_llama, ITEMS, vectors={hook: v}, strength=1.5, norms={hook: 2.0}, heads=True,
                               clean=base)
    assert reused.terms == fresh.terms and reused.clean is base.clean
    assert torch.allclose(reused.steered, fresh.steered, atol=1e-5)
    assert torch.allclose(reused.margin_steered, fresh.margin_steered, atol=1e-5)
    with pytest.raises(ValueError, match="other heads= / neurons= settings"):
        margin_components(tiny_llama, ITEMS, vectors={hook: v}, norms={hook: 2.0}, clean=base)
    with pytest.raises(ValueError, match="not these 2"):
        margin_components(tiny_llama, ITEMS[:2], vectors={hook: v}, norms={hook: 2.0}, heads=True, clean=base)


def test_gemma3_splits_by_block_but_refuses_heads(tiny_gemma, one_thread):
    res = margin_components(tiny_gemma, ITEMS)  # its hooks see the post-normed outputs the residual adds
    assert torch.allclose(res.clean.sum(1), res.margin_clean, atol=1e-4)
    scores = score_items(tiny_gemma, ITEMS)
    assert torch.allclose(res.margin_clean, torch.tensor([s[1] - s[0] for s, _ in scores]), atol=1e-4)
    with pytest.raises(ValueError, match="does not reconstruct hook_attn_out"):  # post-attention norm
        margin_components(tiny_gemma, ITEMS, heads=True)
    with pytest.raises(ValueError, match="does not reconstruct hook_mlp_out"):  # post-feedforward norm
        margin_components(tiny_gemma, ITEMS, neurons=[0])


def test_bad_inputs_name_the_problem(tiny_llama, family_dirs, one_thread):
    from steer_lens.models import load_model

    with pytest.raises(ValueError, match="two choices that differ only in their last token"):
        margin_components(tiny_llama, [Item("m", "colour?", ("red", "blue"), 1)])
    with pytest.raises(ValueError, match="no items"):
        margin_components(tiny_llama, [])
    with pytest.raises(ValueError, match="soft-caps its logits"):  # Gemma-2's readout is not linear
        margin_components(load_model(family_dirs["gemma2"]), ITEMS)
