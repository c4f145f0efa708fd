"""Merged-weights export on the real models: SmolLM2 (Llama) with a plan folded into its biases
gives the hooked model's logits through plain transformers and through steer_lens.load_model;
Gemma-3 (norms after each sublayer) is refused with the reason."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import steer_lens as sl
from steer_lens.merge import merge_plan
from steer_lens.plan import LayerPairInfo, SteeringPlan

pytestmark = pytest.mark.integration

PROMPTS = ["What is the capital of France?", "Is this review positive? The film was a delight."]
HOOKS = ("blocks.3.hook_resid_post", "blocks.14.hook_resid_post", "blocks.14.hook_attn_out",
         "blocks.22.hook_resid_pre", "blocks.29.hook_resid_post")


def realistic_plan(model) -> SteeringPlan:
    """Random unit vectors at HOOKS with the model's own median residual norms (as fitted plans store)."""
    batch = sl.tokens.batch_encode(model, PROMPTS, chat_template=True)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask, names_filter=list(HOOKS))
    real = batch.attention_mask.bool()
    norms = {h: float(cache[h].norm(dim=-1)[real].median()) for h in HOOKS}
    gen = torch.Generator().manual_seed(0)
    vectors = {h: (v := torch.randn(model.cfg.d_model, generator=gen)) / v.norm() for h in HOOKS}
    return SteeringPlan(vectors=vectors, pairs=[LayerPairInfo(0, 3, 0.1)], mi=None, expert={"name": "gemma-3-270m"},
                        target={"name": "smollm2-135m-instruct", "d_model": model.cfg.d_model,
                                "n_layers": model.cfg.n_layers}, norms=norms)


def test_smollm2_merged_logits_equal_hooked(smollm2, tmp_path):
    plan = realistic_plan(smollm2)
    batch = sl.tokens.batch_encode(smollm2, PROMPTS, chat_template=True)
    real = batch.attention_mask.bool()
    with torch.no_grad():
        base = smollm2(batch.tokens, attention_mask=batch.attention_mask)
        with plan.apply(smollm2, 0.3):
            want = smollm2(batch.tokens, attention_mask=batch.attention_mask)
    assert (want[real] - base[real]).abs().max() > 1.0  # the plan changes the answer distribution
    out = merge_plan(smollm2, plan, 0.3, tmp_path / "smollm2-steered")
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        got = plain(batch.tokens, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=0)
    bridge = sl.load_model(out)
    assert bridge.cfg.prepend_bos_hf == smollm2.cfg.prepend_bos_hf
    with torch.no_grad():
        again = bridge(batch.tokens, attention_mask=batch.attention_mask)
    torch.testing.assert_close(again[real], want[real], atol=1e-4, rtol=0)
    # a serving stack's view: greedy generation from the chat-formatted prompt, KV cache on
    tok = AutoTokenizer.from_pretrained(out)
    inputs = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    with torch.no_grad():
        new = plain.generate(**inputs, max_new_tokens=24, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    with plan.apply(smollm2, 0.3):
        steered = sl.generate(smollm2, PROMPTS[0], max_new_tokens=24, chat_template=True)[0]
    assert tok.decode(new, skip_special_tokens=True) == steered


def test_gemma_is_refused(gemma, tmp_path):
    d, n = gemma.cfg.d_model, gemma.cfg.n_layers
    plan = SteeringPlan(vectors={"blocks.5.hook_resid_post": torch.ones(d) / d ** 0.5}, pairs=[], mi=None,
                        expert={}, target={"name": "gemma-3-270m", "d_model": d, "n_layers": n},
                        norms={"blocks.5.hook_resid_post": 50.0})
    with pytest.raises(ValueError, match="gemma3_text.*post_feedforward_layernorm"):
        merge_plan(gemma, plan, 0.3, tmp_path / "g")
    assert not (tmp_path / "g").exists()
