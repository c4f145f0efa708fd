"""The "flips" strength search (steer_lens.flips): a sweep on some items equals evaluate on them, it
finds a planted narrow window that a coarse grid misses while running fewer item-points, on a tiny
model it runs fewer blocks than the reference and chooses within one item of it, and its chosen point
is measured on every item (never inferred)."""

import pytest

from steer_lens.evaluate import evaluate
from steer_lens.flips import FlipScorer
from steer_lens.profiling import ForwardCounter
from steer_lens.protocol import StrengthSearch, choose
from steer_lens.sweep import SweepInputs, sweep
from test_search import ITEMS, _fake_scorer, _plans, _window_items


def test_a_sweep_on_some_items_equals_evaluate_on_them(tiny_llama, one_thread):
    """Multi-token choices (the choices-differ layout) and one-token choices (last-token layout)."""
    from steer_lens.data import Item

    plan = _plans(tiny_llama)["a"]
    one_token = [Item(f"o{i}", "word " * (i % 5) + f"item {i}", ("yes", "no"), i % 2) for i in range(11)]
    for items in (ITEMS, one_token):
        inputs = SweepInputs(tiny_llama, items, batch_size=4)
        only = [[1, 2, 9], list(range(len(items))), [len(items) - 1]]
        got = sweep(tiny_llama, items, plan, [0.7, 0.7, -1.3], batch_size=4, inputs=inputs, only=only)
        for s, idx, r in zip([0.7, 0.7, -1.3], only, got):
            ref = evaluate(tiny_llama, [items[i] for i in idx], plan=plan, strength=s, batch_size=4)
            assert r.n == len(idx) and r.predictions == ref.predictions and r.ids == ref.ids
            assert r.margins == pytest.approx(ref.margins, abs=1e-4)
    with pytest.raises(ValueError, match="one per strength"):
        sweep(tiny_llama, ITEMS, plan, [0.5, 1.0], only=[[0]])
    with pytest.raises(ValueError, match="item indices"):
        sweep(tiny_llama, ITEMS, plan, [0.5], only=[[]])


def test_flips_finds_the_window_the_grid_misses_with_fewer_item_points():
    items, thresholds = _window_items()
    coarse = choose(None, items, {"window": "window"}, search=StrengthSearch.fixed((0.025, 0.05, 0.1, 0.2, 0.4)),
                    score_items=_fake_scorer(thresholds, []))
    assert coarse.best["accuracy"] == 0.5  # every grid step sits outside the window
    found = {}
    for name in ("reference", "flips"):
        calls = []
        with ForwardCounter() as fc:
            c = choose(None, items, {"worse": "worse", "window": "window"}, search=StrengthSearch(strategy=name),
                       score_items=_fake_scorer(thresholds, calls))
        found[name] = c, fc.totals()["item_points"], sum(n * len(s) for _, n, s in calls)
    for name, (c, counted, scored) in found.items():
        assert c.key == "window" and c.best["accuracy"] == 1.0 and 0.12 < c.strength < 0.13, name
        assert counted == scored, name  # the counter sees every item-point run
    assert found["flips"][1] < 0.6 * found["reference"][1]
    c = found["flips"][0]
    assert c.best["inferred"] == 0 and c.best["n"] == len(items)
    assert any(p["inferred"] > 0 for p in c.curves["window"])  # some points were not run on every item


def test_an_item_that_keeps_its_answer_is_not_run_inside_an_interval():
    """Items 0-2 flip between 0 and 1, items 3-9 never do: the midpoint 0.5 runs items 0-2 only and
    interpolates the others' margins linearly."""
    from steer_lens.data import Item
    from steer_lens.evaluate import summarise

    items = [Item(f"k{i}", "q", ("a", "b"), 0) for i in range(10)]
    asked = []

    def margin(i, s):
        return 1.0 - 2.0 * s if i < 3 else 2.0 + s * s  # items 0-2 flip at 0.5; the others never

    def run(requests):
        asked.extend(requests)
        return [summarise([items[i] for i in idx], [([margin(i, s), 0.0], [1, 1]) for i in idx], majority_rate=1.0)
                for s, idx in requests]

    zero = summarise(items, [([margin(i, 0.0), 0.0], [1, 1]) for i in range(10)], majority_rate=1.0)
    scorer = FlipScorer(run, items, zero)
    scorer.many([1.0])
    assert asked[-1] == (1.0, list(range(10)))  # outside every scored interval: every item
    p = scorer(0.6)
    assert asked[-1] == (0.6, [0, 1, 2]) and p["inferred"] == 7 and p["accuracy"] == 0.7
    inferred_margin = scorer.known[0.6].margins[5]
    assert inferred_margin == pytest.approx(0.4 * 2.0 + 0.6 * 3.0)  # linear between 0 and 1.0
    done = scorer.complete(0.6)
    assert asked[-1][1] == list(range(3, 10)) and done["inferred"] == 0
    assert scorer.known[0.6].margins[5] == pytest.approx(2.36)


def test_flips_runs_fewer_blocks_and_chooses_within_one_item(tiny_llama, one_thread):
    plans = _plans(tiny_llama)
    zero = evaluate(tiny_llama, ITEMS, batch_size=4)
    counts, choices = {}, {}
    for name in ("reference", "flips"):
        with ForwardCounter(tiny_llama) as fc:
            choices[name] = choose(tiny_llama, ITEMS, plans, search=StrengthSearch(strategy=name, signed=True),
                                   zero=zero, batch_size=4)
        counts[name] = fc.totals()
    assert counts["flips"]["block_tokens"] < counts["reference"]["block_tokens"]
    assert counts["flips"]["item_points"] < counts["reference"]["item_points"]
    c = choices["flips"]
    again = evaluate(tiny_llama, ITEMS, plan=plans[c.key], strength=c.strength, batch_size=4)
    assert c.best["accuracy"] == again.accuracy and c.best["n"] == len(ITEMS) and c.best["inferred"] == 0
    assert c.best["mean_margin"] == pytest.approx(sum(again.margins) / len(ITEMS), abs=1e-4)
    assert abs(c.best["accuracy"] - choices["reference"].best["accuracy"]) <= 1 / len(ITEMS)


def test_flips_without_a_per_item_zero_scores_the_unsteered_items_itself(tiny_llama, one_thread):
    from steer_lens.protocol import point

    plans = _plans(tiny_llama)
    zero = evaluate(tiny_llama, ITEMS, batch_size=4)
    search = StrengthSearch(grid=(0.5, 1.0), refine_rounds=1, strategy="flips")
    a = choose(tiny_llama, ITEMS, plans, search=search, zero=zero, batch_size=4)
    b = choose(tiny_llama, ITEMS, plans, search=search, zero=point(0.0, zero), batch_size=4)
    assert (a.key, a.strength, a.best["accuracy"]) == (b.key, b.strength, b.best["accuracy"])
    with pytest.raises(ValueError, match="same 16 items"):
        FlipScorer(lambda r: [], ITEMS, evaluate(tiny_llama, ITEMS[:3], batch_size=4))
