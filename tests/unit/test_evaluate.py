"""evaluate: planted items, shared-prompt scoring vs full rows, "ab" letter bias, bootstrap CIs,
paired tests, steering at strength 0."""

import math

import numpy as np
import pytest
import torch

from steer_lens.data import Item, MCDataset
from steer_lens.evaluate import (bootstrap_ci, evaluate, mcnemar, paired_bootstrap, score_items,
                                 summarise)


def _greedy_next(model, text: str, chat: bool) -> str:
    """The tiny model's own greedy continuation (one byte token) after ``text + ' '``."""
    from steer_lens.tokens import batch_encode

    batch = batch_encode(model, [text], chat_template=chat)
    with torch.no_grad():
        logits = model(batch.tokens, attention_mask=batch.attention_mask)[0, -1]
    return logits


def _item(i, question, choices, answer, fmt="mc"):
    return Item(id=f"t{i}", question=question, choices=choices, answer=answer, domain="general",
                source="unit", format=fmt)


def _planted(model, n=6):
    """Items whose correct choice is the one the model itself scores highest."""
    items = []
    for i in range(n):
        q = f"Question {i}: pick"
        choices = ["a", "zz", "q", "7"]
        probe = [_item(i, q, choices, 0)]
        sums, counts = score_items(model, probe)[0]
        means = [s / c for s, c in zip(sums, counts)]
        items.append(_item(i, q, choices, int(np.argmax(means))))
    return items


def test_planted_items_are_scored_right(tiny_model):
    items = _planted(tiny_model)
    res = evaluate(tiny_model, items)
    assert res.accuracy == 1.0 and res.n == len(items)
    assert all(m > 0 for m in res.margins)
    assert (res.ci_low, res.ci_high) == (1.0, 1.0)


def test_shared_prompt_matches_full_rows(tiny_model):
    items = [_item(i, f"Q{i} " + "x" * (i * 3), ["yes", "no way", "maybe"], i % 3) for i in range(5)]
    a = score_items(tiny_model, items, batch_size=2, share_prompt=True)
    b = score_items(tiny_model, items, batch_size=3, share_prompt=False)
    for (sa, ca), (sb, cb) in zip(a, b):
        assert ca == cb
        assert np.allclose(sa, sb, atol=1e-4)


def test_strength_zero_equals_unsteered(tiny_llama):
    items = [_item(i, f"Q{i}?", ["yes", "no"], i % 2) for i in range(6)]
    vec = {"blocks.1.hook_resid_post": torch.randn(tiny_llama.cfg.d_model)}
    base = evaluate(tiny_llama, items)
    zero = evaluate(tiny_llama, items, vectors=vec, strength=0.0, norms={"blocks.1.hook_resid_post": 1.0})
    big = evaluate(tiny_llama, items, vectors=vec, strength=5.0, norms={"blocks.1.hook_resid_post": 1.0})
    assert zero.correct == base.correct and zero.margins == base.margins
    assert big.margins != base.margins


def test_ab_letter_bias_and_behaviour_prob():
    # a model that always prefers "A" by 2 nats, plus a true signal of +/-1 towards the answer
    items = [_item(i, "(A) x (B) y", ["A", "B"], i % 2, fmt="ab") for i in range(10)]
    scores = []
    for it in items:
        signal = 1.0 if it.answer == 0 else -1.0
        scores.append(([2.0 + signal, 0.0], [2, 2]))
    res = summarise(items, scores, majority_rate=0.5)
    assert res.accuracy == 0.5  # raw: "A" always wins
    assert res.letter_bias == pytest.approx(2.0)
    assert res.debiased_accuracy == 1.0
    expected = np.mean([1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(1.0))])
    assert res.behaviour_prob == pytest.approx(expected)
    assert res.behaviour_rate == res.accuracy


def test_sum_vs_length_normalised_scoring():
    items = [_item(0, "q", ["short", "a much longer one"], 1)]
    # correct choice: -6 over 6 tokens (mean -1); wrong: -3 over 1 token (mean -3)
    res = summarise(items, [([-3.0, -6.0], [1, 6])], majority_rate=1.0)
    assert res.accuracy == 1.0 and res.accuracy_sum == 0.0


def test_bootstrap_ci_known_cases():
    assert bootstrap_ci([True] * 20) == (1.0, 1.0)
    assert bootstrap_ci([False] * 20) == (0.0, 0.0)
    x = np.r_[np.ones(700), np.zeros(300)].astype(bool)
    lo, hi = bootstrap_ci(x, n_boot=4000, seed=1)
    half = 1.96 * math.sqrt(0.7 * 0.3 / 1000)
    assert lo == pytest.approx(0.7 - half, abs=0.006) and hi == pytest.approx(0.7 + half, abs=0.006)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)


def test_paired_tests():
    a = [True] * 30 + [False] * 10
    same = paired_bootstrap(a, a)
    assert same["diff"] == 0 and same["ci_low"] == 0 == same["ci_high"]
    assert mcnemar(a, a) == {"only_a": 0, "only_b": 0, "p": 1.0}
    b = [False] * 10 + [True] * 20 + [False] * 10
    m = mcnemar(a, b)
    assert (m["only_a"], m["only_b"]) == (10, 0)
    assert m["p"] == pytest.approx(2 / 2 ** 10)
    pb = paired_bootstrap(a, b)
    assert pb["diff"] == pytest.approx(0.25) and pb["ci_low"] > 0
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:-1])


def test_dataset_split_and_majority(tiny_llama):
    items = [_item(i, f"Q{i}", ["yes", "no"], 0 if i < 3 else 1) for i in range(4)]
    ds = MCDataset("toy", {"test": items, "validation": items[:2]})
    res = evaluate(tiny_llama, ds, split="test")
    assert res.n == 4 and res.majority_rate == 0.75 and res.ids == [it.id for it in items]
    assert evaluate(tiny_llama, ds, split="validation").n == 2
    with pytest.raises(ValueError):
        evaluate(tiny_llama, items, plan=object(), vectors={})


def test_eval_result_from_a_row_with_more_keys():
    from steer_lens.evaluate import EvalResult

    r = EvalResult(accuracy=0.5, ci_low=0.0, ci_high=1.0, n=2, majority_rate=0.5, accuracy_sum=0.5, ids=["a", "b"],
                   correct=[True, False], margins=[0.3, -0.1], predictions=[1, 1])
    row = {**r.to_dict(), "method": "caa", "strength": 0.2, "layers": [3]}
    assert EvalResult.from_dict(row) == r
