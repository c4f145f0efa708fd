"""The protocol: strength search on validation (coarse grid, upward extension, refinement, signs),
the ranking rule, choosing among candidate plans, and the test-once comparison."""

import pytest

from steer_lens.data import Item, MCDataset
from steer_lens.protocol import StrengthSearch, choose, compare, rank, search_strength


def _curve(acc_of, share_of=lambda s: 0.5):
    """A fake validation scorer: accuracy and the share of choice 1 from functions of strength."""
    calls = []

    def score(s):
        calls.append(s)
        a, x = acc_of(s), share_of(s)
        return {"strength": s, "accuracy": a, "mean_margin": 0.0, "shares": [1 - x, x]}

    return score, calls


def test_refinement_finds_a_window_between_grid_steps():
    # the SST-2 shape measured in issue 12 (label direction, 40 items): the share of "positive"
    # answers flips from ~0.1 to ~1 between 0.1 and 0.175, and accuracy peaks (0.75) near 0.125
    def share(s):
        return min(1.0, max(0.0, (s - 0.1) / 0.05))

    def acc(s):
        return 0.75 if 0.115 <= s <= 0.135 else (0.58 if 0 < s <= 0.1 else 0.5)

    old_best, _ = search_strength(_curve(acc, share)[0], StrengthSearch.fixed([0.025, 0.05, 0.1, 0.2]))
    best, curve = search_strength(_curve(acc, share)[0], StrengthSearch(grid=(0.025, 0.05, 0.1, 0.2)))
    assert old_best["accuracy"] == 0.58  # the fixed grid jumps over the window
    assert best["accuracy"] == 0.75 and best["strength"] == pytest.approx(0.125)
    assert [p["strength"] for p in curve] == sorted(p["strength"] for p in curve)


def test_search_extends_upward_when_the_best_is_the_largest():
    score, calls = _curve(lambda s: min(abs(s), 1.0))  # better and better up to 1
    best, _ = search_strength(score, StrengthSearch(grid=(0.1, 0.2), refine_rounds=0))
    assert best["strength"] == 1.0
    assert 0.5 in calls and 1.0 in calls and 2.0 in calls  # 2 tried, not better (tie -> smaller)
    score, calls = _curve(lambda s: 0.6 if s == 0.1 else 0.5)
    search_strength(score, StrengthSearch(grid=(0.1, 0.2), refine_rounds=0))
    assert max(calls) == 0.2  # the best is inside the grid: no extension


def test_flat_curve_extends_only_with_extend_flat():
    """The blind spot measured with the SST-2-tuned Gemma: a direction that changes no answer up to
    the grid's top (0.4) has a flat curve whose best point is 0, so the default rule never tries it
    stronger. With ``extend_flat`` the search climbs the ladder (both signs when signed) until the
    answers move, then stops climbing once the best point is inside the curve."""
    def share(s):  # answers move only from |s| = 1 on, towards choice 1 for s > 0
        return 0.0 if abs(s) < 1 else (1.0 if s > 0 else 0.0)

    def acc(s):
        return 0.7 if s >= 1 else 0.5

    grid = StrengthSearch(grid=(0.1, 0.2, 0.4), refine_rounds=0, signed=True)
    score, calls = _curve(acc, share)
    best, _ = search_strength(score, grid)
    assert best["strength"] == 0.0 and max(calls) == 0.4  # flat: never tried stronger
    score, calls = _curve(acc, share)
    best, _ = search_strength(score, StrengthSearch(grid=(0.1, 0.2, 0.4), refine_rounds=0, signed=True,
                                                    extend_flat=True))
    assert best["strength"] == 1.0 and best["accuracy"] == 0.7
    assert {0.5, -0.5, 1.0, -1.0} <= set(calls) and 2.0 in calls  # 2 tried: the best was the largest
    assert -2.0 not in calls  # once the answers moved, only the best sign extends
    score, calls = _curve(lambda s: 0.5)  # truly inert: the whole ladder, then 0 keeps the tie
    best, _ = search_strength(score, StrengthSearch(grid=(0.1,), refine_rounds=0, extend_flat=True))
    assert best["strength"] == 0.0 and calls == [0.0, 0.1, 0.5, 1.0, 2.0]
    # one answer of 100 flips (and turns wrong) at 0.4: movement, as in the tuned-Gemma 16 -> 27 run
    score, calls = _curve(lambda s: 0.49 if s >= 0.4 else 0.5, lambda s: 0.01 if s >= 0.4 else 0.0)
    search_strength(score, StrengthSearch(grid=(0.1, 0.2, 0.4), refine_rounds=0, extend_flat=True))
    assert max(calls) == 0.4
    score, calls = _curve(lambda s: 0.5, lambda s: min(1.0, 0.5 + s))  # answers move within the grid
    search_strength(score, StrengthSearch(grid=(0.1, 0.2), refine_rounds=0, extend_flat=True))
    assert max(calls) == 0.2


def test_zero_is_always_a_candidate_and_wins_ties():
    score, calls = _curve(lambda s: 0.5)
    best, _ = search_strength(score, StrengthSearch(grid=(0.1,), refine_rounds=2))
    assert calls[0] == 0.0 and best["strength"] == 0.0


def test_signed_search_finds_negative_strengths():
    score, calls = _curve(lambda s: 0.9 if -0.5 < s < -0.3 else 0.5)
    best, _ = search_strength(score, StrengthSearch(grid=(0.1, 0.4), signed=True))
    assert best["accuracy"] == 0.9 and best["strength"] < 0
    unsigned, _ = search_strength(_curve(lambda s: 0.9 if -0.5 < s < -0.3 else 0.5)[0], StrengthSearch(grid=(0.1, 0.4)))
    assert unsigned["strength"] == 0.0


def test_rank_orders_accuracy_then_margin_then_small_strength():
    a = {"strength": 0.2, "accuracy": 0.6, "mean_margin": 0.1}
    b = {"strength": 0.1, "accuracy": 0.6, "mean_margin": 0.1}
    c = {"strength": 0.4, "accuracy": 0.6, "mean_margin": 0.3}
    assert max([a, b, c], key=rank) is c and max([a, b], key=rank) is b


def test_bad_search_settings_are_refused():
    with pytest.raises(ValueError, match="positive strengths"):
        StrengthSearch(grid=(0.1, -0.2))
    with pytest.raises(ValueError, match="empty"):
        StrengthSearch(grid=())


def _items(n, prefix):
    return [Item(id=f"{prefix}{i}", question=f"Is {i} even?", choices=["no", "yes"], answer=int(i % 2 == 0),
                 domain="math", source="unit") for i in range(n)]


@pytest.fixture(scope="module")
def tiny_setup(tiny_llama):
    from steer_lens.baselines import fit_caa
    from steer_lens.data import contrast_prompts

    ds = MCDataset("parity", {"train": _items(8, "tr"), "validation": _items(6, "va"), "test": _items(6, "te")})
    pos, neg = contrast_prompts(ds.split("train"))
    plans = {layer: fit_caa(tiny_llama, pos, neg, layer) for layer in (1, 2)}
    return ds, plans


def test_choose_keeps_the_best_candidate_and_reports_every_curve(tiny_llama, tiny_setup, one_thread):
    ds, plans = tiny_setup
    search = StrengthSearch(grid=(0.5, 2.0), refine_rounds=1, extend=())
    choice = choose(tiny_llama, ds.split("validation"), plans, search=search)
    assert set(choice.curves) == {1, 2}
    best_of = {k: max(c, key=rank) for k, c in choice.curves.items()}
    top = max(rank(best_of[1]), rank(best_of[2]))
    assert rank(choice.best) == top and choice.strength == choice.best["strength"]
    assert rank(best_of[choice.key]) == top


def test_compare_scores_test_once_with_the_validation_choice(tiny_llama, tiny_setup, one_thread, monkeypatch):
    import steer_lens.comparison as protocol  # where compare scores TEST

    ds, plans = tiny_setup
    seen = []
    real = protocol.evaluate

    def spy(model, data, **kw):
        seen.append((kw.get("split"), kw.get("strength", 0.0), kw.get("plan") is not None))
        return real(model, data, **kw)

    monkeypatch.setattr(protocol, "evaluate", spy)
    search = StrengthSearch(grid=(0.5, 2.0), refine_rounds=1, extend=())
    res = compare(tiny_llama, ds, plans[1], search=search, limit=None, val_limit=None)
    tests = [s for s in seen if s[0] == "test"]
    s = res["strength"]
    # unsteered once, then (unless validation chose 0) steered and random once each, at the chosen strength
    assert tests[0] == ("test", 0.0, False)
    assert tests[1:] == ([] if s == 0 else [("test", s, True), ("test", s, True)])
    assert res["n_val"] == 6 and res["val_split"] == "validation"
    assert {p["strength"] for p in res["val_curve"]} >= {0.0, 0.5, 2.0}
    assert set(res["steered_vs_random"]) >= {"diff", "ci_low", "ci_high", "p", "mcnemar_p"}


def test_screening_refines_only_the_best_candidate(monkeypatch):
    import steer_lens.protocol as protocol

    peaks = {"a": 0.3, "b": 0.8}  # candidate b is better at every strength

    def fake_scorer(model, items, plan, **kw):
        def score(s):
            calls.append((plan, s))
            acc = 0.5 + (peaks[plan] - 0.5) * (0 < s <= 0.2)
            return {"strength": s, "accuracy": acc, "mean_margin": 0.0, "shares": [0.5, 0.5]}
        return score

    calls = []
    monkeypatch.setattr(protocol, "validation_scorer", fake_scorer)
    zero = {"strength": 0.0, "accuracy": 0.5, "mean_margin": 0.0, "shares": [0.5, 0.5]}
    screen = StrengthSearch(grid=(0.1, 0.4), refine_rounds=0, extend=())
    choice = choose(None, [], {"a": "a", "b": "b"}, search=StrengthSearch(grid=(0.1, 0.4)), screen=screen,
                    zero=zero)
    assert choice.key == "b" and choice.best["accuracy"] == 0.8
    assert sorted(s for p, s in calls if p == "a") == [0.1, 0.4]  # screened only
    assert len([s for p, s in calls if p == "b"]) > 2  # refined
    assert len({s for p, s in calls if p == "b"}) == len([s for p, s in calls if p == "b"])  # none twice
