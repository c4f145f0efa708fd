"""The search store: a validation search interrupted and run again replays the points it had scored and makes
the same choice; points are reused only under the same model, items and plan; scored splits are refused;
the benchmark runner keeps a store per row and deletes it once the row is written."""

import json

import pytest

from steer_lens import methods as M
from steer_lens.bench import Bench
from steer_lens.data import MCDataset
from steer_lens.protocol import StrengthSearch, choose
from steer_lens.search_store import SearchStore, plan_hash

from test_methods import _dataset_folder
from test_protocol import _items

SEARCH = StrengthSearch(grid=(0.5, 2.0), refine_rounds=2, extend=(4.0,))


@pytest.fixture(scope="module")
def setup(tiny_llama):
    from steer_lens.baselines import fit_caa
    from steer_lens.data import contrast_prompts

    ds = MCDataset("parity", {"train": _items(8, "tr"), "validation": _items(6, "va"), "test": _items(6, "te")})
    pos, neg = contrast_prompts(ds.split("train"))
    return ds, {layer: fit_caa(tiny_llama, pos, neg, layer) for layer in (1, 2)}


class Interrupt(Exception):
    pass


def _counting(model, stop_after=None):
    """``score_items`` on ``model`` that counts the (strength, item count) it scores and raises ``Interrupt``
    after ``stop_after`` calls."""
    from steer_lens.evaluate import evaluate

    calls = []

    def score_items(plan, items, strengths):
        if stop_after is not None and len(calls) >= stop_after:
            raise Interrupt
        calls.append((tuple(strengths), len(items)))
        return [evaluate(model, items, plan=plan, strength=s) for s in strengths]

    return score_items, calls


@pytest.mark.parametrize("strategy", ["reference", "flips"])
def test_an_interrupted_search_resumes_with_the_same_choice(tiny_llama, setup, tmp_path, one_thread, strategy):
    ds, plans = setup
    val, search = ds.split("validation"), StrengthSearch(**{**SEARCH.__dict__, "strategy": strategy})
    full, calls = _counting(tiny_llama)
    whole = choose(tiny_llama, val, plans, search=search, score_items=full)
    path = tmp_path / "points.jsonl"
    cut, _ = _counting(tiny_llama, stop_after=3)
    with pytest.raises(Interrupt):
        choose(tiny_llama, val, plans, search=search, score_items=cut, store=SearchStore(path))
    kept = len(path.read_text().splitlines())
    assert kept >= 3  # what was scored before the interruption is on disk
    store = SearchStore(path)
    rest, rest_calls = _counting(tiny_llama)
    again = choose(tiny_llama, val, plans, search=search, score_items=rest, store=store)
    assert (again.key, again.strength, again.best) == (whole.key, whole.strength, whole.best)
    assert again.curves == whole.curves
    assert _strengths(rest_calls) == _strengths(calls) - kept and store.reused >= kept
    # a third run scores no steered point at all (the reference rule scores the unsteered point itself)
    none, none_calls = _counting(tiny_llama)
    third = choose(tiny_llama, val, plans, search=search, score_items=none, store=SearchStore(path))
    assert [s for s, _ in none_calls if s != (0.0,)] == [] and third.curves == whole.curves


def _strengths(calls) -> int:
    return sum(len(s) for s, _ in calls)


def test_points_are_reused_only_for_the_same_plan_items_and_settings(tiny_llama, setup, tmp_path, one_thread):
    ds, plans = setup
    val = ds.split("validation")
    path = tmp_path / "points.jsonl"
    one = {1: plans[1]}
    score, _ = _counting(tiny_llama)
    choose(tiny_llama, val, one, search=SEARCH, score_items=score, store=SearchStore(path))
    changed = {1: plans[1].scaled(-1.0)}  # other vectors
    assert plan_hash(changed[1]) != plan_hash(plans[1])
    for kwargs in ({"candidates": changed, "items": val}, {"candidates": one, "items": val[:5]},
                   {"candidates": one, "items": val, "batch_size": 3}):
        score, calls = _counting(tiny_llama)
        store = SearchStore(path)
        choose(tiny_llama, kwargs.pop("items"), kwargs.pop("candidates"), search=SEARCH, score_items=score,
               store=store, **kwargs)
        assert calls and store.reused == 0


def test_a_store_refuses_scored_splits_and_skips_a_cut_line(tiny_llama, setup, tmp_path, one_thread):
    from steer_lens.data import load_dataset

    ds, plans = setup
    test_items = load_dataset("sst2").split("test", limit=4)
    with pytest.raises(ValueError, match="validation points only"):
        choose(tiny_llama, test_items, {1: plans[1]}, search=SEARCH, store=SearchStore(tmp_path / "p.jsonl"))
    path = tmp_path / "cut.jsonl"
    score, _ = _counting(tiny_llama)
    choose(tiny_llama, ds.split("validation"), {1: plans[1]}, search=SEARCH, score_items=score,
           store=SearchStore(path))
    n = len(path.read_text().splitlines())
    with open(path, "a") as f:
        f.write('{"key": "abc", "val')  # a write cut short by a kill
    assert len(SearchStore(path)) == n


def test_the_runner_keeps_a_store_per_row_until_the_row_is_written(tiny_llama, tmp_path, one_thread, monkeypatch):
    data = str(_dataset_folder(tmp_path / "mine"))
    rules = M.RuleSet.fast().replace(strategy="reference")
    bench = Bench(tiny_llama, None, cache=tmp_path / "cache", rules=rules, target_id="t")
    store_path = bench.points_path(data, "caa")
    assert store_path.parent == bench.row_path(data, "caa").parent
    seen = []
    real_put = SearchStore._put

    def spy(self, key, value):
        seen.append((self.path, key, value))
        real_put(self, key, value)

    monkeypatch.setattr(SearchStore, "_put", spy)
    row = bench.run([data], ["caa"])[0]
    assert seen and {p for p, _, _ in seen} == {store_path}  # the search wrote its points beside the row ...
    assert not store_path.exists()  # ... and they went once the row was written
    # a store left by an interrupted run is replayed: the same row, no point scored again
    store_path.write_text("".join(json.dumps({"key": k, "value": v}) + "\n" for _, k, v in seen))
    bench.row_path(data, "caa").unlink()
    seen.clear()
    again = Bench(tiny_llama, None, cache=tmp_path / "cache", rules=rules, target_id="t").run([data], ["caa"])[0]
    assert seen == [] and again["val_curve"] == row["val_curve"] and again["strength"] == row["strength"]
    off = Bench(tiny_llama, None, cache=tmp_path / "other", rules=rules, target_id="t", resume_searches=False)
    assert off.search_store(data, "caa") is None



def test_a_model_fingerprint_follows_its_weights_and_survives_offloading():
    import types

    import torch

    from steer_lens.search_store import model_hash

    def model(device=None):
        m = torch.nn.Linear(4, 3, device=device)
        m.cfg = types.SimpleNamespace(model_name="m")
        return m

    a = model()
    before = model_hash(a)
    with torch.no_grad():
        a.weight[0, 0] += 1.0
    assert model_hash(a) != before
    assert model_hash(model("meta")) != before  # weights offloaded to "meta": no data to sample, still a key
