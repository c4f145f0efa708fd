"""Contrasts by label and CAA's own recipe (answer-letter token, steering after the prompt),
checked position by position on a tiny model; explicit ExpertSteer layer pairs."""

import pytest
import torch

from steer_lens.data import Item, contrast_prompts
from steer_lens.tokens import batch_encode


def _ab(i, answer):
    q = f"Item {i}: do you agree?\n\nChoices:\n (A) Yes\n (B) No"
    return Item(id=f"ab{i}", question=q, choices=["A", "B"], answer=answer, domain="behaviour",
                source="unit", format="ab")


def test_label_contrast_is_choice_x_versus_y_whatever_the_answer():
    items = [Item(id=f"s{i}", question=f"Review {i}", choices=["negative", "positive"], answer=i % 2,
                  domain="general", source="unit") for i in range(6)]
    pos, neg = contrast_prompts(items, by="label", label=1)
    assert all(c == " positive" for _, c in pos) and all(c == " negative" for _, c in neg)
    cpos, cneg = contrast_prompts(items)  # by correctness: half of each
    assert [c for _, c in cpos] == [" negative", " positive"] * 3
    assert [c for _, c in cneg] == [" positive", " negative"] * 3
    with pytest.raises(ValueError, match="label 2 does not exist"):
        contrast_prompts(items, by="label", label=2)
    with pytest.raises(ValueError, match="by must be one of"):
        contrast_prompts(items, by="sentiment")


def test_caa_last_position_reads_the_answer_letter(tiny_llama):
    from steer_lens.baselines import fit_caa

    items = [_ab(i, i % 2) for i in range(6)]
    pos, neg = contrast_prompts(items)
    plan = fit_caa(tiny_llama, pos, neg, 2, position="last")
    # reference: the residual after block 2 at each completion's last real token (the letter)
    name = "blocks.2.hook_resid_post"

    def letters(prompts):
        batch = batch_encode(tiny_llama, prompts)
        _, cache = tiny_llama.run_with_cache(batch.tokens, attention_mask=batch.attention_mask,
                                             names_filter=[name])
        last = batch.lengths - 1
        toks = batch.tokens[torch.arange(len(prompts)), last]
        assert all(tiny_llama.tokenizer.decode([int(t)]) in ("A", "B") for t in toks)  # the letter token
        return cache[name][torch.arange(len(prompts)), last]

    ref = letters(pos).mean(0) - letters(neg).mean(0)
    assert torch.allclose(plan.vectors[name], ref / ref.norm(), atol=1e-5)
    # today's span mean over " (" + letter gives the same direction: the tokens before the letter
    # are identical in both completions and (causal attention) so are their residuals, so the mean
    # difference is the letter's difference divided by the span length
    mean_plan = fit_caa(tiny_llama, pos, neg, 2)
    assert float(mean_plan.vectors[name] @ plan.vectors[name]) > 0.99999  # cosine of unit vectors


def test_generated_positions_in_scoring_steer_only_the_completion(tiny_llama):
    """evaluate(..., positions="generated") steers every position after the prompt (the " (" that
    predicts the letter, and the letter), never the question: CAA's steering positions."""
    from steer_lens.evaluate import evaluate

    items = [_ab(i, i % 2) for i in range(3)]
    vec = torch.randn(tiny_llama.cfg.d_model)
    name = "blocks.1.hook_resid_post"
    seen = []

    def record(x, hook):
        seen.append(x.detach().clone())
        return x

    def run(positions):
        seen.clear()
        with tiny_llama.hooks(fwd_hooks=[("blocks.2.hook_resid_pre", record)]):
            evaluate(tiny_llama, items, vectors={name: vec}, strength=0.5 if positions else 0.0,
                     positions=positions or "all", batch_size=8)
        return [t.clone() for t in seen]

    base, gen, every = run(None), run("generated"), run("all")
    # first call: the shared prompts; second: the continuations (" (" + letter) from the KV cache
    assert torch.equal(gen[0], base[0]) and not torch.equal(every[0], base[0])
    diff = gen[1] - base[1]  # blocks 0-1 see an unsteered cache, so the difference is the delta itself
    norms = diff.norm(dim=-1)
    assert diff.shape[:2] == (6, 3) and bool((norms > 1e-3).all())  # 3 items x 2 choices, " (" + letter: all steered
    assert torch.allclose(norms, norms[0, 0].expand_as(norms), rtol=1e-4)
    cos = torch.nn.functional.cosine_similarity(diff.reshape(-1, diff.shape[-1]), vec[None], dim=-1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-4)


def test_explicit_pairs_skip_the_mi_rule(tiny_llama, tiny_gemma):
    from steer_lens import ExpertSteer

    items = [Item(id=f"p{i}", question=f"Is {i} even?", choices=["no", "yes"], answer=int(i % 2 == 0),
                  domain="math", source="unit") for i in range(12)]
    pos, neg = contrast_prompts(items)
    plan = ExpertSteer(alignment="ridge", pairs=[(1, 2)]).fit(tiny_gemma, tiny_llama, pos, neg)
    assert [(p.expert_layer, p.target_layer) for p in plan.pairs] == [(1, 2)]
    assert list(plan.vectors) == ["blocks.2.hook_resid_post"]
    assert plan.pairs[0].mi == pytest.approx(float(plan.mi[1, 2]))
    with pytest.raises(ValueError, match="outside the captured layers"):
        ExpertSteer(alignment="ridge", pairs=[(7, 2)]).fit(tiny_gemma, tiny_llama, pos, neg)
