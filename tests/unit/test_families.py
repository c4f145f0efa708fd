"""Six architecture families (tiny random weights) through the whole toolkit, in float32 and bfloat16.

Families: llama3 (Llama-3.1 RoPE scaling), qwen2 (q/k/v biases), gemma2 (attention and final-logit
soft-capping, sliding window), gemma3, mistral (sliding window) and phi3 (fused projections,
partial rotary). Every check compares with an independent Hugging Face model loaded from the same
folder in the same dtype with eager attention (the bridge forces eager attention too).

Tolerances, bridge vs HF in the same dtype:
- float32: both run the same HF modules, so they agree to float32 rounding: atol 1e-5, rtol 1e-5.
- bfloat16: one bf16 step is 2**-7 relative (0.03 at a logit of 4). GPU kernels may reorder sums
  (and cached decode, batching and padding change the shapes), so: atol 2e-2, rtol 3e-2, about
  four steps at a logit of 4.
Measured on the CPU: bridge vs HF logits and layer outputs 0 in both dtypes; cached decode vs
full forward <= 3e-6 (float32) and 0 (bfloat16). The tolerances leave room for GPU kernels.

``test_cuda.py`` collects these same tests again with ``device`` = "cuda".
"""

import pytest
import torch

import steer_lens as sl
from steer_lens.evaluate import score_items
from steer_lens.models import load_model
from steer_lens.steer import steer
from steer_lens.testing import FAMILIES
from steer_lens.tokens import batch_encode, encode_all

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=3e-2)}
# prompts longer than every sliding window (4-8 tokens) and than Llama-3.1's original context (64)
PROMPTS = ["The quick brown fox jumps over the lazy dog.", "Steering vectors move a model's residual stream "
           "along one direction; " * 2]
# expert -> target, each of a different family and width (d_model 48 -> 32)
FIT_PAIRS = [("qwen2", "llama3"), ("gemma3", "gemma2"), ("phi3", "mistral")]

kinds = pytest.mark.parametrize("kind", list(FAMILIES))
dtypes = pytest.mark.parametrize("dtype", list(DTYPES))


@pytest.fixture(scope="module")
def device():
    return "cpu"


@pytest.fixture(scope="module")
def models(family_dirs, device):
    """``get(kind, dtype) -> (bridge, hf)``: both loaded once per module from the family's folder."""
    from transformers import AutoModelForCausalLM

    loaded = {}

    def get(kind: str, dtype: str):
        if (kind, dtype) not in loaded:
            bridge = load_model(family_dirs[kind], device=device, dtype=DTYPES[dtype])
            hf = AutoModelForCausalLM.from_pretrained(family_dirs[kind], dtype=DTYPES[dtype],
                                                      attn_implementation="eager").to(device).eval()
            loaded[kind, dtype] = bridge, hf
        return loaded[kind, dtype]

    return get


def hf_layer_outputs(hf, ids: list[int]) -> list[torch.Tensor]:
    """Residual stream after each decoder layer of an HF model on one unpadded prompt: layer x pos x d."""
    outs, handles = [], []
    for layer in hf.model.layers:
        handles.append(layer.register_forward_hook(
            lambda m, a, out: outs.append((out[0] if isinstance(out, tuple) else out)[0].float())))
    try:
        with torch.no_grad():
            hf(torch.tensor([ids], device=hf.device))
    finally:
        for h in handles:
            h.remove()
    return outs


@kinds
@dtypes
def test_logits_equal_hf(models, kind, dtype):
    model, hf = models(kind, dtype)
    assert model.cfg.dtype == DTYPES[dtype] and next(model.parameters()).dtype == DTYPES[dtype]
    batch = batch_encode(model, PROMPTS, chat_template=False, padding_side="left")
    with torch.no_grad():
        ours = model(batch.tokens, attention_mask=batch.attention_mask)
        # positions counted from each row's first real token, as the bridge and HF's generate do
        positions = (batch.attention_mask.cumsum(1) - 1).clamp_min(0)
        ref = hf(batch.tokens, attention_mask=batch.attention_mask, position_ids=positions).logits
    assert ours.dtype == DTYPES[dtype]
    real = batch.attention_mask.bool()
    torch.testing.assert_close(ours[real], ref[real], **TOL[DTYPES[dtype]])


# each family's distinctive feature, switched off through a config override
FEATURES = {
    "llama3": {"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
    "qwen2": {},  # biases zeroed below
    "gemma2": {"final_logit_softcapping": None, "attn_logit_softcapping": None, "sliding_window": 512},
    "gemma3": {"sliding_window": 512},
    "mistral": {"sliding_window": None},
    "phi3": {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}},
}


@pytest.mark.parametrize("kind, override", FEATURES.items(), ids=list(FEATURES))
def test_family_features_change_the_logits(family_dirs, models, kind, override):
    """Guards the parity tests: on these prompts each family's feature changes HF's logits,
    so a bridge that ignored it would fail test_logits_equal_hf."""
    from transformers import AutoModelForCausalLM

    model, hf = models(kind, "float32")
    plain = AutoModelForCausalLM.from_pretrained(family_dirs[kind], attn_implementation="eager",
                                                 **override).to(hf.device).eval()
    if kind == "qwen2":  # Qwen2's q/k/v always have biases: zero them
        with torch.no_grad():
            for name, p in plain.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
    ids = batch_encode(model, PROMPTS[1:], chat_template=False).tokens
    with torch.no_grad():
        gap = (hf(ids).logits - plain(ids).logits).abs().max()
    assert gap > 0.1


@kinds
@dtypes
def test_capture_equals_hf_layer_outputs(models, kind, dtype):
    model, hf = models(kind, dtype)
    layers = list(range(model.cfg.n_layers))
    acts = sl.capture(model, PROMPTS, layers=layers, position="all", chat_template=False)
    assert acts.tensor.dtype == torch.float32  # statistics downstream run in float32
    for row, (ids, _) in enumerate(encode_all(model, PROMPTS, chat_template=False)):
        ref = torch.stack(hf_layer_outputs(hf, ids))  # layer pos d
        torch.testing.assert_close(acts.tensor[row, :, : len(ids)].to(ref.device), ref, **TOL[DTYPES[dtype]])


@kinds
@dtypes
def test_steering_with_kv_cache(models, kind, dtype):
    """Under steering, a cached decode step equals the full forward at that position, the
    steered logits differ from the unsteered ones, and cached greedy generation with prompt-only
    steering equals uncached generation."""
    model, _ = models(kind, dtype)
    torch.manual_seed(0)
    hook = "blocks.0.hook_resid_post"
    vec = torch.randn(model.cfg.d_model)
    tokens = batch_encode(model, PROMPTS[1:], chat_template=False).tokens
    with torch.no_grad():
        plain = model(tokens)
        with steer(model, {hook: vec}, 0.5):
            full = model(tokens)
            _, cache = model(tokens[:, :-2], return_type="logits_and_cache")
            step = model(tokens[:, -2:-1], past_key_values=cache)
    assert (full - plain).abs().max() > 0.1
    torch.testing.assert_close(step[0, -1], full[0, -2], **TOL[DTYPES[dtype]])
    with steer(model, {hook: vec}, 0.5, positions="prompt"):
        cached = sl.generate(model, PROMPTS[0], max_new_tokens=6, chat_template=False)
        uncached = sl.generate(model, PROMPTS[0], max_new_tokens=6, chat_template=False, use_kv_cache=False)
    assert cached == uncached


@kinds
@dtypes
def test_evaluate_scores_equal_hf_log_probs(models, kind, dtype):
    """evaluate's shared-prompt KV-cache scorer against summed HF log-probs of each full sequence."""
    model, hf = models(kind, dtype)
    items = sl.load_dataset("arithmetic_2way").split("test", limit=3)
    scores = score_items(model, items, batch_size=2)
    for item, (sums, counts) in zip(items, scores):
        encoded = encode_all(model, [(item.prompt(), c) for c in item.completions()])
        ref_sums = []
        for ids, start in encoded:
            with torch.no_grad():
                lp = torch.log_softmax(hf(torch.tensor([ids], device=hf.device)).logits[0].float(), -1)
            ref_sums.append(sum(float(lp[j - 1, ids[j]]) for j in range(start, len(ids))))
        assert counts == [len(ids) - start for ids, start in encoded]
        # summed over a few tokens; bf16 logits carry ~0.03 of rounding each
        torch.testing.assert_close(torch.tensor(sums), torch.tensor(ref_sums),
                                   **({"atol": 1e-4, "rtol": 1e-5} if dtype == "float32" else {"atol": 0.1, "rtol": 0.02}))
    result = sl.evaluate(model, items)
    assert result.n == 3 and len(result.correct) == 3


@kinds
@dtypes
def test_generate_equals_hf_greedy(models, kind, dtype):
    model, hf = models(kind, dtype)
    tok = model.tokenizer
    for prompt in PROMPTS:
        ours = sl.generate(model, prompt, max_new_tokens=8)
        (ids, _), = encode_all(model, [prompt])
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids], device=hf.device), max_new_tokens=8, do_sample=False,
                              pad_token_id=tok.pad_token_id)
        new = out[0, len(ids):].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        assert ours == [tok.decode(new, skip_special_tokens=True)]


@pytest.mark.parametrize("expert_kind, target_kind", FIT_PAIRS)
@dtypes
def test_expertsteer_fits_across_families_and_widths(models, expert_kind, target_kind, dtype):
    expert, _ = models(expert_kind, dtype)
    target, _ = models(target_kind, dtype)
    assert expert.cfg.d_model != target.cfg.d_model
    items = sl.load_dataset("arithmetic_2way").split("train", limit=12)
    pos, neg = sl.contrast_prompts(items)
    plan = sl.ExpertSteer(n_pairs=1, alignment="ridge", mi_dim=2).fit(expert, target, pos, neg)
    (hook, vec), = plan.vectors.items()
    assert vec.shape == (target.cfg.d_model,) and torch.isfinite(vec).all()
    assert float(vec.norm()) == pytest.approx(1.0, abs=1e-5)
    assert plan.expert["d_model"] == expert.cfg.d_model and plan.target["d_model"] == target.cfg.d_model
    # applying the plan adds strength x norm along the vector at its hook, in the model's dtype
    tokens = batch_encode(target, PROMPTS[:1], chat_template=False).tokens
    proj = {}
    for strength in (0.0, 1.0):
        with torch.no_grad(), plan.apply(target, strength):
            _, cache = target.run_with_cache(tokens, names_filter=[hook])
        assert cache[hook].dtype == DTYPES[dtype]
        proj[strength] = float((cache[hook][0].float() @ vec.to(cache[hook].device)).mean())
    rel = 1e-4 if dtype == "float32" else 3e-2
    assert proj[1.0] - proj[0.0] == pytest.approx(plan.norms[hook], rel=rel)
