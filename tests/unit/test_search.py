"""The "halving" strength search (steer_lens.halving.choose_halving): it finds a planted narrow
window that a coarse grid misses, scores fewer item-points and runs fewer blocks than the reference
search, its chosen point equals evaluate on every item, and shared sweep inputs give the same
points as separate passes."""

import pytest

from steer_lens.data import Item
from steer_lens.evaluate import evaluate, summarise
from steer_lens.profiling import ForwardCounter
from steer_lens.halving import merge_results
from steer_lens.protocol import StrengthSearch, choose, rank, search_strength


def _window_items(n=100):
    """Items whose answer flips at a threshold: answer-1 items flip (to choice 1, right) between
    0.101 and 0.119, answer-0 items (to choice 1, wrong) between 0.131 and 0.149, so every answer is
    right only in (0.12, 0.13): a window no grid step of (0.025 ... 0.4) hits."""
    items, thresholds = [], {}
    for i in range(n):
        answer = i % 2
        items.append(Item(f"w{i}", f"q{i}", ("a", "b"), answer))
        j = i // 2
        thresholds[f"w{i}"] = (0.101 if answer else 0.131) + 0.018 * (j * 7 % (n // 2)) / max(1, n // 2 - 1)
    return items, thresholds


def _fake_scorer(thresholds, calls):
    """score_items(plan, items, strengths): plan "window" moves answers at the thresholds; plan
    "worse" turns every answer to the wrong choice at any strength."""

    def score_items(plan, items, strengths):
        calls.append((plan, len(items), list(strengths)))
        out = []
        for s in strengths:
            if plan == "window":
                scores = [([0.0, s - thresholds[it.id]], [1, 1]) for it in items]
            else:
                scores = [([0.0, 0.05 * (1 if it.answer == 0 else -1) * min(abs(s), 1) - 0.01], [1, 1]) for it in items]
            out.append(summarise(items, scores, majority_rate=0.5))
        return out

    return score_items


def test_halving_finds_the_window_the_grid_misses_with_fewer_item_points():
    items, thresholds = _window_items()
    grid_only = StrengthSearch.fixed((0.025, 0.05, 0.1, 0.2, 0.4))
    calls = []
    coarse = choose(None, items, {"window": "window"}, search=grid_only, score_items=_fake_scorer(thresholds, calls))
    assert coarse.best["accuracy"] == 0.5  # every grid step sits outside the window

    found = {}
    for name, search in (("reference", StrengthSearch()), ("halving", StrengthSearch.halving())):
        calls = []
        with ForwardCounter() as fc:
            c = choose(None, items, {"worse": "worse", "window": "window"}, search=search,
                       score_items=_fake_scorer(thresholds, calls))
        found[name] = (c, fc.totals()["item_points"], sum(n * len(s) for _, n, s in calls))
    for name, (c, counted, scored) in found.items():
        assert c.key == "window" and c.best["accuracy"] == 1.0, name
        assert 0.12 < c.strength < 0.13 and c.best["n"] == len(items), name
        assert counted == scored  # the counter sees every item-point scored
    assert found["halving"][1] < 0.6 * found["reference"][1]
    # the pruned candidate keeps its screened points only; the chosen one has full points
    c = found["halving"][0]
    assert {p["n"] for p in c.screened["worse"]} == {25}  # a quarter of 100 items
    assert all(p["n"] == len(items) for p in c.curves["window"])


def test_halving_search_strength_stops_when_no_answer_changes():
    """A single score callable: refinement skips intervals whose ends have the same answers and stops
    when none is left; the reference keeps bisecting the neighbours of the best point."""
    def make():
        calls = []

        def score(s):
            calls.append(s)
            return {"strength": s, "accuracy": 0.6 if 0 < s <= 0.2 else 0.5, "mean_margin": 0.0,
                    "shares": [0.4, 0.6] if 0 < s <= 0.2 else [0.5, 0.5]}
        return score, calls

    score, ref_calls = make()
    ref, _ = search_strength(score, StrengthSearch())
    score, new_calls = make()
    new, _ = search_strength(score, StrengthSearch.halving())
    assert rank(ref) == rank(new) or ref["accuracy"] == new["accuracy"]
    assert len(new_calls) < len(ref_calls)


def test_merge_results_equals_the_joined_evaluation(tiny_llama, one_thread):
    items = [Item(f"m{i}", f"Is {i} even?", ("no", "yes"), int(i % 2 == 0)) for i in range(7)]
    whole = evaluate(tiny_llama, items)
    merged = merge_results(evaluate(tiny_llama, items[:3]), evaluate(tiny_llama, items[3:]))
    assert merged.accuracy == whole.accuracy and (merged.ci_low, merged.ci_high) == (whole.ci_low, whole.ci_high)
    assert merged.predictions == whole.predictions and merged.correct == whole.correct
    assert merged.margins == pytest.approx(whole.margins, abs=1e-5)


def _plans(model):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sweep import make_plan

    return {"a": make_plan(model, ["blocks.1.hook_resid_post"], seed=1),
            "b": make_plan(model, ["blocks.2.hook_resid_post"], seed=2)}


ITEMS = [Item(f"i{i}", "why " * (i % 4) + f"is {i} even or odd", ("even", "odd", "both")[: 2 + i % 2], i % 2)
         for i in range(16)]


def test_shared_inputs_give_the_same_points(tiny_llama, one_thread):
    """Every candidate and round sharing one set of lower-block residuals gives the points of
    separate sweeps and of one evaluate per strength (multi-token choices)."""
    plans = _plans(tiny_llama)
    search = StrengthSearch(grid=(0.3, 1.0), extend=(2.0,), refine_rounds=1, signed=True)
    runs = {"shared": choose(tiny_llama, ITEMS, plans, search=search, batch_size=4),
            "separate": choose(tiny_llama, ITEMS, plans, search=search, batch_size=4, share=False),
            "evaluate": choose(tiny_llama, ITEMS, plans, search=search, batch_size=4, use_sweep=False)}
    ref = runs["evaluate"]
    for name, c in runs.items():
        assert (c.key, c.strength) == (ref.key, ref.strength), name
        for key in plans:
            assert [p["strength"] for p in c.curves[key]] == [p["strength"] for p in ref.curves[key]]
            assert [p["accuracy"] for p in c.curves[key]] == [p["accuracy"] for p in ref.curves[key]]
            assert [p["mean_margin"] for p in c.curves[key]] == pytest.approx(
                [p["mean_margin"] for p in ref.curves[key]], abs=1e-5)


def test_halving_runs_fewer_blocks_and_its_point_is_exact(tiny_llama, one_thread):
    plans = _plans(tiny_llama)
    zero = None
    counts, choices = {}, {}
    for name, search, share in (("today", StrengthSearch(), False), ("reference", StrengthSearch(), True),
                                ("halving", StrengthSearch.halving(screen_min=4), True)):
        with ForwardCounter(tiny_llama) as fc:
            choices[name] = choose(tiny_llama, ITEMS, plans, search=search, zero=zero, batch_size=4, share=share)
        counts[name] = fc.totals()
        assert fc.totals("screen")["block_calls"] > 0 if name == "halving" else True
    assert counts["reference"]["block_tokens"] < counts["today"]["block_tokens"]
    assert counts["halving"]["block_tokens"] < counts["reference"]["block_tokens"]
    assert counts["halving"]["item_points"] < counts["reference"]["item_points"]
    c = choices["halving"]
    again = evaluate(tiny_llama, ITEMS, plan=plans[c.key], strength=c.strength, batch_size=4)
    assert c.best["accuracy"] == again.accuracy and c.best["n"] == len(ITEMS)
    assert c.best["mean_margin"] == pytest.approx(sum(again.margins) / len(ITEMS), abs=1e-5)
    assert c.best["accuracy"] >= choices["reference"].best["accuracy"] - 1 / len(ITEMS)


def test_bad_halving_settings_are_refused():
    with pytest.raises(ValueError, match="strategy"):
        StrengthSearch(strategy="fast")
    with pytest.raises(ValueError, match="screen_fraction"):
        StrengthSearch.halving(screen_fraction=0.0)
    assert StrengthSearch() == StrengthSearch(strategy="reference")  # the default is unchanged
