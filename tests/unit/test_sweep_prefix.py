"""A shared prompt prefix (k-shot examples, a long instruction) runs once as one row and every item continues
from its KV cache: equal to evaluate() per strength (predictions, margins) on every tiny family, in both
layouts (last token differs; choices differ earlier), for item subsets (``only=``), for a level reached from
a lower kept one, and for k-shot items made by steer_lens.prompting; prompts without such a prefix keep the
plain path."""

import dataclasses

import pytest

from steer_lens.data import Item
from steer_lens.block_runs import sliding_window
from steer_lens.sweep import SweepInputs, common_prefix, sweep

from test_sweep import AB, ITEMS, MULTI, assert_same, make_plan

SHARED = "Here are worked examples of the task, read them carefully before you answer. " * 2


def _with_context(items):
    return [dataclasses.replace(it, context=SHARED + (it.context or "")) for it in items]


def test_common_prefix_leaves_each_prompt_a_token_of_its_own():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 6]]) == 3
    assert common_prefix([[1, 2], [1, 2, 3]]) == 1  # the shorter prompt keeps its last token
    assert common_prefix([[7, 1], [8, 1]]) == 0


@pytest.mark.parametrize("kind", ["llama3", "qwen2", "gemma2", "gemma3", "mistral", "phi3"])
def test_prefix_path_equals_evaluate_on_every_family(family_dirs, kind):
    from steer_lens.models import load_model

    model = load_model(family_dirs[kind])
    plan = make_plan(model, ["blocks.1.hook_resid_pre"])
    strengths = [0.0, 1.5, -2.0]
    window = sliding_window(model)
    for items in (_with_context(ITEMS + AB), _with_context(MULTI)):
        inputs = SweepInputs(model, items, batch_size=4, min_prefix=8)
        # a window shorter than the prompts (the tiny Gemma 2/3 and Mistral: 4-8 tokens) keeps the plain path:
        # padding between prefix and item would put other keys in the window than evaluate's rows
        assert inputs.prefix >= 8 if window is None else inputs.prefix == 0
        assert_same(sweep(model, items, plan, strengths, batch_size=4, inputs=inputs), items, model, plan,
                    strengths, batch_size=4)


def test_prefix_path_for_subsets_and_a_level_reached_from_below(tiny_llama):
    for items in (_with_context(ITEMS), _with_context(MULTI)):
        inputs = SweepInputs(tiny_llama, items, batch_size=4, min_prefix=8)
        low = make_plan(tiny_llama, ["blocks.1.hook_resid_post"], 1)
        high = make_plan(tiny_llama, ["blocks.2.hook_resid_pre"], 2)
        assert_same(sweep(tiny_llama, items, low, [0.7], batch_size=4, inputs=inputs), items, tiny_llama, low, [0.7],
                    batch_size=4)
        # block 2's level continues from the kept block-1 level (prefix and items alike)
        assert_same(sweep(tiny_llama, items, high, [-1.2], batch_size=4, inputs=inputs), items, tiny_llama, high,
                    [-1.2], batch_size=4)
        assert sorted(inputs._levels) == sorted(inputs._prefix_levels) == [1, 2]
        only = [[3, 0, 5], [len(items) - 1]]
        got = sweep(tiny_llama, items, low, [0.7, 2.0], batch_size=4, inputs=inputs, only=only)
        for r, idx, s in zip(got, only, [0.7, 2.0]):
            assert_same([r], [items[i] for i in idx], tiny_llama, low, [s], batch_size=4)


def test_kshot_items_share_their_examples_and_steer_them(tiny_llama):
    from steer_lens.data import MCDataset
    from steer_lens.prompting import prompted_dataset

    def items(prefix, numbers):
        return [Item(f"{prefix}{i}", f"Is {i} an even number?", ("no", "yes"), int(i % 2 == 0)) for i in numbers]

    ds = prompted_dataset(MCDataset("parity", {"train": items("tr", range(100, 108)),
                                               "validation": items("va", range(9))}), 4)
    val = ds.split("validation")
    inputs = SweepInputs(tiny_llama, val, batch_size=4, min_prefix=16)
    assert inputs.prefix >= 16
    plan = make_plan(tiny_llama, ["blocks.1.hook_resid_post"])
    swept = sweep(tiny_llama, val, plan, [0.0, 3.0], batch_size=4, inputs=inputs)
    assert_same(swept, val, tiny_llama, plan, [0.0, 3.0], batch_size=4)
    assert swept[0].margins != pytest.approx(swept[1].margins, abs=1e-3)  # the steering reaches the items


def test_short_shared_prefixes_keep_the_plain_path(tiny_llama, monkeypatch):
    assert SweepInputs(tiny_llama, ITEMS, batch_size=4).prefix == 0  # default min_prefix: 64 tokens
    assert SweepInputs(tiny_llama, _with_context(ITEMS), batch_size=4, share_prefix=False).prefix == 0
    import steer_lens.sweep as S

    monkeypatch.setattr(S.SweepInputs, "_prefix_pass", lambda *a, **k: pytest.fail("prefix path used"))
    plan = make_plan(tiny_llama, ["blocks.1.hook_resid_post"])
    assert_same(sweep(tiny_llama, ITEMS, plan, [1.0], batch_size=4), ITEMS, tiny_llama, plan, [1.0], batch_size=4)
