"""A method's TEST pass and its random control's share the unsteered blocks below their hooks
(``Context(share_test=True)``, the default): same predictions and margins as one ``evaluate`` per
pass, fewer blocks run."""

import pytest

import steer_lens.methods as M
from steer_lens.baselines import random_plan
from steer_lens.data import load_dataset
from steer_lens.profiling import ForwardCounter
from test_search import _plans

RULES = M.RuleSet.fast(limit_test=12)


def _two_passes(ctx, model, plan):
    with ForwardCounter(model) as fc:
        rows = [ctx.test(model, plan, 0.8), ctx.test(model, random_plan(plan, seed=0), 0.8)]
    return rows, fc.totals()["block_tokens"]


def test_a_method_and_its_control_share_the_lower_blocks(tiny_llama, one_thread):
    from steer_lens import ledger

    ds = load_dataset("sst2")
    before = len(ledger.read())
    plan = _plans(tiny_llama)["b"]  # steers block 2: blocks 0-1 are shared
    shared, n_shared = _two_passes(M.Context(ds, tiny_llama, None, RULES), tiny_llama, plan)
    alone, n_alone = _two_passes(M.Context(ds, tiny_llama, None, RULES, share_test=False), tiny_llama, plan)
    assert n_shared < n_alone
    lines = ledger.read()[before:]  # the shared passes are recorded in the test ledger as evaluate's are
    assert [(x["dataset"], x["split"], x["n"]) for x in lines] == [("sst2", "test", RULES.limit_test)] * 4
    for a, b in zip(shared, alone):
        assert a["n"] == b["n"] == RULES.limit_test and a["ids"] == b["ids"]
        assert a["predictions"] == b["predictions"] and a["accuracy"] == b["accuracy"]
        assert a["margins"] == pytest.approx(b["margins"], abs=1e-4)
    unsteered = M.Context(ds, tiny_llama, None, RULES).test(tiny_llama)  # strength 0: evaluate, no sweep
    assert unsteered["n"] == RULES.limit_test and "sweep_from_block" not in unsteered["meta"]


def test_a_sweep_refuses_confirm_items_outside_a_locked_run(tiny_llama, one_thread):
    from steer_lens.ledger import ConfirmLockedError
    from steer_lens.sweep import sweep

    items = load_dataset("sst2").split("confirm", limit=4)
    with pytest.raises(ConfirmLockedError, match="outside a locked run"):
        sweep(tiny_llama, items, _plans(tiny_llama)["a"], [0.5])


def test_a_prompted_context_keeps_the_runner_settings(tiny_llama):
    from steer_lens.methods.prompting import prompted_context

    def store(name):
        return None

    ds = load_dataset("sst2")
    for share in (True, False):
        ctx = M.Context(ds, tiny_llama, None, RULES, share_test=share, search_store=store)
        p = prompted_context(ctx, 4)
        assert p.share_test is share and p.search_store is store and p.test_split == ctx.test_split
