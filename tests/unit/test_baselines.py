"""Baselines on tiny models: unit vectors of the target width at the right hooks, the random
control matches a plan's hooks/norms, ITI reads per-head outputs, and the runner never touches
TEST while fitting or selecting."""

import json
import sys
from pathlib import Path

import pytest
import torch

from steer_lens.baselines import (choose_layer, fit_caa, fit_iti, fit_self_rfm, pooled_activations,
                                  random_plan, shortlist_layers)
from steer_lens.baselines.iti import head_activations
from steer_lens.data import Item, MCDataset, contrast_prompts


def _items(n, split="train"):
    return [Item(id=f"{split}{i}", question=f"{i} + {i} =", choices=[str(2 * i), str(2 * i + 1)],
                 answer=i % 2, domain="math", source="unit") for i in range(n)]


@pytest.fixture(scope="module")
def contrast():
    return contrast_prompts(_items(12))


def _check_unit(plan, model, method):
    assert plan.vectors and plan.settings["method"] == method
    for name, v in plan.vectors.items():
        assert name in model.hook_dict and v.shape == (model.cfg.d_model,)
        assert float(v.norm()) == pytest.approx(1.0, abs=1e-5)
        assert plan.norms[name] > 0


def test_caa_is_the_mean_difference(tiny_llama, contrast):
    pos, neg = contrast
    plan = fit_caa(tiny_llama, pos, neg, 2)
    _check_unit(plan, tiny_llama, "caa")
    p, n = pooled_activations(tiny_llama, pos, neg, [2])
    d = p[:, 0].mean(0) - n[:, 0].mean(0)
    assert torch.allclose(plan.vectors["blocks.2.hook_resid_post"], d / d.norm(), atol=1e-5)


def test_self_rfm_and_layer_choice(tiny_model, contrast):
    pos, neg = contrast
    layers = list(range(tiny_model.cfg.n_layers))
    acts = pooled_activations(tiny_model, pos, neg, layers)
    layer, scores = choose_layer(*acts, layers, candidates=layers[1:])
    assert layer in layers[1:] and set(scores) == set(layers[1:])
    plan = fit_self_rfm(tiny_model, pos, neg, layer, acts=acts, acts_layers=layers)
    _check_unit(plan, tiny_model, "self_rfm")
    (v,) = plan.vectors.values()
    i = layers.index(layer)
    assert float((acts[0][:, i].mean(0) - acts[1][:, i].mean(0)) @ v) > 0  # oriented to positives


def test_shortlist_spreads_saturated_ties_over_depth():
    """A saturated train score (every layer 1.0, as for SST-2's label contrast in layers 7-22 of
    SmolLM2) carries no depth information: the shortlist spreads over the window instead of
    taking its first layers; real score differences still rank first."""
    window = {layer: 1.0 for layer in range(7, 23)}
    assert shortlist_layers(window, 2) == [11, 19] and shortlist_layers(window, 1) == [15]
    assert shortlist_layers(window, 2, ties="lowest") == [7, 8]  # the rule before
    assert shortlist_layers({1: 0.9, 2: 0.8, 3: 0.8, 4: 0.8, 5: 0.7}, 2) == [1, 3]  # tie only at the cut-off
    assert shortlist_layers({1: 0.6, 2: 0.9, 3: 0.7}, 2) == [2, 3]  # distinct scores: best first
    assert shortlist_layers({4: 0.5}, 3) == [4]
    with pytest.raises(ValueError, match="ties must be"):
        shortlist_layers(window, 2, ties="random")


def test_iti_heads_project_into_the_residual(tiny_llama, contrast):
    pos, neg = contrast
    z = head_activations(tiny_llama, pos[:3], [0, 1])
    assert z.shape == (3, 2, tiny_llama.cfg.n_heads, tiny_llama.cfg.d_head)
    plan = fit_iti(tiny_llama, pos, neg, k=3)
    _check_unit(plan, tiny_llama, "iti")
    assert all(name.endswith("hook_attn_out") for name in plan.vectors)
    assert len(plan.settings["heads"]) == 3


def test_iti_shift_reaches_the_residual_after_attention(tiny_llama, contrast):
    """Adding at attn_out moves the residual after attention (read at hook_resid_mid) by exactly
    strength x norm x vector; adding at hook_resid_mid itself is refused (it never reaches it)."""
    from steer_lens.steer import steer
    from steer_lens.tokens import batch_encode

    pos, neg = contrast
    plan = fit_iti(tiny_llama, pos, neg, k=2)
    hook = next(iter(plan.vectors))
    layer = int(hook.split(".")[1])
    mid = f"blocks.{layer}.hook_resid_mid"
    batch = batch_encode(tiny_llama, pos[:2])

    def read():
        _, cache = tiny_llama.run_with_cache(batch.tokens, attention_mask=batch.attention_mask, names_filter=[mid])
        return cache[mid]

    base = read()
    with plan.apply(tiny_llama, 0.5):
        moved = read()
    real = batch.attention_mask.bool()
    want = 0.5 * plan.norms[hook] * plan.vectors[hook]
    assert torch.allclose((moved - base)[real], want.expand(int(real.sum()), -1), atol=1e-4)
    with pytest.raises(ValueError, match="never reaches the residual stream"):
        with steer(tiny_llama, {mid: plan.vectors[hook]}, 0.5):
            pass


def test_random_control_matches_plan(tiny_llama, contrast):
    pos, neg = contrast
    plan = fit_caa(tiny_llama, pos, neg, 1)
    rnd = random_plan(plan, seed=3)
    assert rnd.vectors.keys() == plan.vectors.keys() and rnd.norms == plan.norms
    for name, v in rnd.vectors.items():
        assert float(v.norm()) == pytest.approx(1.0, abs=1e-5)
        assert abs(float(v @ plan.vectors[name])) < 0.6
    assert torch.equal(random_plan(plan, seed=3).vectors[name], v)
    assert not torch.equal(random_plan(plan, seed=4).vectors[name], v)


def test_rotation_control_keeps_the_cosines_between_hooks():
    """A plan adding one direction at two layers is matched by one random direction at both (its
    cosines between hooks kept exactly), each hook's vector still random and unit."""
    from steer_lens.plan import SteeringPlan

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, generator=gen), torch.randn(32, generator=gen)
    vecs = {"blocks.1.hook_resid_post": a / a.norm(), "blocks.2.hook_resid_post": a / a.norm(),
            "blocks.3.hook_resid_post": b / b.norm()}
    plan = SteeringPlan(vectors=vecs, pairs=[], mi=None, expert={"name": "x"}, target={}, norms={h: 2.0 for h in vecs})
    gram = lambda p: torch.stack([v for v in p.vectors.values()]) @ torch.stack([v for v in p.vectors.values()]).T  # noqa: E731
    rot = random_plan(plan, seed=1, structure="rotation")
    assert torch.allclose(gram(rot), gram(plan), atol=1e-5) and rot.norms == plan.norms
    assert rot.settings["structure"] == "rotation"
    assert all(abs(float(rot.vectors[h] @ vecs[h])) < 0.9 for h in vecs)  # not the plan's own directions
    ind = random_plan(plan, seed=1)
    assert abs(float(ind.vectors["blocks.1.hook_resid_post"] @ ind.vectors["blocks.2.hook_resid_post"])) < 0.9
    # over seeds, a rotated unit vector has no preferred direction (mean near 0, unlike the plan's)
    mean = torch.stack([random_plan(plan, seed=s, structure="rotation").vectors["blocks.3.hook_resid_post"]
                        for s in range(200)]).mean(0)
    assert float(mean.norm()) < 0.2
    with pytest.raises(ValueError, match="structure must be one of"):
        random_plan(plan, structure="shuffle")


class _GuardedDataset(MCDataset):
    """Raises if TEST is read while ``locked``."""

    locked = True

    def split(self, name, limit=None, seed=0):
        if name == "test" and self.locked:
            raise AssertionError("test split touched during fitting/selection")
        return super().split(name, limit, seed)


def _bench_main(argv):
    """``steer-lens bench`` (the library's runner and report), one torch thread."""
    from steer_lens.bench.cli import main

    return main([*argv, "--threads", "1"])


def _row(path):
    return json.loads(Path(path).read_text())


def test_runner_never_touches_test_during_selection(tiny_llama, tiny_gemma, tmp_path, monkeypatch, one_thread):
    import steer_lens.bench.runner as runner
    import steer_lens.methods.base as base
    from steer_lens.bench import Bench
    from steer_lens.methods import RuleSet

    ds = _GuardedDataset("guard", {"train": _items(20), "validation": _items(6, "val"), "test": _items(8, "test")})
    monkeypatch.setattr(runner, "load_dataset", lambda name: ds)
    real = base.Context.test

    def test_pass(self, *args, **kw):  # TEST is only read inside Context.test (evaluate, or the shared sweep)
        ds.locked = False
        try:
            return real(self, *args, **kw)
        finally:
            ds.locked = True

    monkeypatch.setattr(base.Context, "test", test_pass)
    rules = RuleSet.fast()
    bench = Bench(tiny_llama, tiny_gemma, cache=tmp_path, rules=rules, target_id="tiny-target", expert_id="tiny-expert")
    rows = bench.run(["guard"], ["unsteered", "caa", "self_rfm", "calibration"])
    assert [r["method"] for r in rows] == ["unsteered", "caa", "self_rfm", "calibration"]
    cal = rows.pop()  # the bias is fitted on validation; test answers come from the unsteered row
    assert cal["ids"] == rows[0]["ids"] and cal["val_curve"][0]["accuracy"] >= rows[1]["val_curve"][0]["accuracy"]
    shifted = [m + cal["bias"] if a == 1 else -m + cal["bias"]
               for m, a in zip(rows[0]["margins"], [int(i.removeprefix("test")) % 2 for i in rows[0]["ids"]])]
    assert cal["correct"] == [(v > 0) == (int(i.removeprefix("test")) % 2 == 1) for v, i in zip(shifted, cal["ids"])]
    assert all(r["n"] == 8 for r in rows) and rows[1]["val_curve"]
    for r in rows[1:]:  # layer AND strength chosen on validation among the train-shortlisted layers
        assert len(r["layer_val"]) == min(rules.layer_shortlist, len(r["layer_scores"]))
        strengths = [c["strength"] for c in r["val_curve"]]
        assert 0.0 in strengths and set(rules.grid) <= set(strengths) and strengths == sorted(strengths)
        assert r["n_val"] == 6
        assert str(r["layers"][0]) in r["layer_val"]
        if r["strength"] == 0:  # "don't steer" won on validation: the unsteered test row is reused
            assert r["correct"] == rows[0]["correct"]
    # cached rows are reused, never recomputed (a fresh runner on the same cache reads them)
    again = Bench(tiny_llama, tiny_gemma, cache=tmp_path, rules=rules, target_id="tiny-target", expert_id="tiny-expert")
    assert again.run(["guard"], ["caa"])[0]["seconds"] == rows[1]["seconds"]
    assert ds.locked


def test_report_from_rows(tmp_path):
    from steer_lens.bench.report import write_report

    def row(method, correct, model="t", strength=0.3):
        return {"dataset": "d", "domain": "math", "method": method, "accuracy": sum(correct) / len(correct),
                "ci_low": 0.0, "ci_high": 1.0, "n": len(correct), "majority_rate": 0.5, "layers": [3],
                "strength": strength, "model": model, "accuracy_sum": 0.5, "ids": list("abcd"),
                "correct": correct, "seconds": 1.0,
                "val_curve": [{"strength": s, "accuracy": 0.5, "ci_low": 0.2, "ci_high": 0.8} for s in (0.1, 0.3)]}

    rows = [row("unsteered", [True, False, False, False], strength=0.0),
            row("expertsteer_autoencoder", [True, True, True, False]), row("random", [True, False, True, False]),
            row("calibration", [True, True, False, False], strength=0.0)]
    rows[0]["val_curve"] = []
    readme = write_report(rows, tmp_path, config={"limit_test": 4})
    text = readme.read_text()
    # every steering method is paired with the zero-cost calibration baseline; the baseline is a reference
    section = text.split("## Each method against the calibration baseline")[1].split("##")[0]
    assert "| d | expertsteer_autoencoder | calibration | 0.25 |" in section and "| random |" not in section
    assert "expertsteer_autoencoder" in text and "vs" in text and (tmp_path / "strength_curves.png").exists()
    lines = (tmp_path / "main_results.csv").read_text().splitlines()
    assert lines[0].startswith("dataset,domain,method,accuracy,ci_low,ci_high,n,majority_rate,layers,strength")
    assert lines[2].split(",")[14] == "0.5"  # delta vs unsteered
    # per-item correctness of every row, for paired comparisons across runs (analyses/tuned_experts.py)
    items = json.loads((tmp_path / "items.json").read_text())
    assert items["d"]["random"] == {"ids": list("abcd"), "correct": [True, False, True, False]}
    assert set(items["d"]) == {"unsteered", "expertsteer_autoencoder", "random", "calibration"}


def test_fast_runner_end_to_end(tmp_path):
    from steer_lens.bench import Bench
    from steer_lens.methods import RuleSet

    methods = ["unsteered", "expert_unsteered", "caa", "random_caa", "expertsteer_autoencoder", "random"]
    readme = _bench_main(["--fast", "--out", str(tmp_path), "--reverse", "--methods", *methods])
    lines = (tmp_path / "main_results.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in lines[1:]] == [*methods, "reverse_expertsteer_autoencoder", "reverse_random"]
    rows = {line.split(",")[2]: line.split(",") for line in lines[1:]}
    assert rows["random"][9] == rows["expertsteer_autoencoder"][9]  # the control copies the strength
    # CAA's own control: random unit vectors at CAA's chosen layer, norm and strength, cached with the
    # target-only rows (it does not depend on the expert)
    bench = Bench(None, None, cache=tmp_path / "cache", rules=RuleSet.fast(), target_id="tiny-target",
                  expert_id="tiny-expert")
    own, caa = (_row(bench.row_path("arithmetic_2way", m)) for m in ("random_caa", "caa"))
    assert own["matched_to"] == "caa" and (own["layers"], own["strength"]) == (caa["layers"], caa["strength"])
    assert [p.name for p in (tmp_path / "cache").glob("*/arithmetic_2way__random_caa.json")] == [
        "arithmetic_2way__random_caa.json"]
    other = Bench(None, None, cache=tmp_path / "cache", rules=RuleSet.fast(), target_id="tiny-target",
                  expert_id="another-expert")
    assert other.row_path("arithmetic_2way", "random_caa") == bench.row_path("arithmetic_2way", "random_caa")
    assert other.row_path("arithmetic_2way", "random_caa").parent == other.row_path("arithmetic_2way", "caa").parent
    assert other.row_path("arithmetic_2way", "random") != bench.row_path("arithmetic_2way", "random")
    assert other.row_path("arithmetic_2way", "random").parent != other.row_path("arithmetic_2way", "caa").parent
    assert rows["reverse_random"][9] == rows["reverse_expertsteer_autoencoder"][9]
    assert "caa" in readme.read_text()
    again = _bench_main(["--fast", "--out", str(tmp_path), "--methods", *methods, "--report-only"])
    assert (tmp_path / "main_results.csv").read_text().splitlines() == lines and again == readme
    # a later run over fewer methods (all cached here) rewrites the report from the whole cache,
    # so it never drops the rows other runs wrote
    _bench_main(["--fast", "--out", str(tmp_path), "--methods", "unsteered"])
    assert (tmp_path / "main_results.csv").read_text().splitlines() == lines


def test_fast_runner_label_methods_and_validation_pairs(tmp_path):
    from steer_lens.bench import Bench
    from steer_lens.methods import RuleSet

    _bench_main(["--fast", "--out", str(tmp_path), "--methods", "unsteered", "label_caa", "random_label_caa",
                 "expertsteer_label", "random_label"])
    bench = Bench(None, None, cache=tmp_path / "cache", rules=RuleSet.fast(), target_id="tiny-target",
                  expert_id="tiny-expert")
    rows = {m: _row(bench.row_path("arithmetic_2way", m))
            for m in ("label_caa", "random_label_caa", "expertsteer_label", "random_label")}
    unsteered = bench.row_path("arithmetic_2way", "unsteered")
    cache = bench.row_path("arithmetic_2way", "label_caa").parent
    assert unsteered.parent != cache  # selects nothing: shared by every rule set
    own = rows["random_label_caa"]  # the target's label direction has its own random control
    assert own["matched_to"] == "label_caa" and own["layers"] == rows["label_caa"]["layers"]
    assert own["strength"] == rows["label_caa"]["strength"]
    for m in ("label_caa", "expertsteer_label"):  # label directions: signed strengths searched
        assert min(c["strength"] for c in rows[m]["val_curve"]) < 0 < max(c["strength"] for c in rows[m]["val_curve"])
    es = rows["expertsteer_label"]
    assert len(es["candidate_val"]) == 2  # --fast shortlists 2 pairs on train, validation picks one
    # every candidate is refined beyond the coarse grid (0, +-0.5, +-1), not just the best
    assert all(len(curve) > 5 for curve in es["candidate_val"].values())
    assert len(es["pairs"]) == 1 and str((es["pairs"][0]["expert_layer"], es["pairs"][0]["target_layer"])) in es["candidate_val"]
    assert es["plan_settings"]["alignment"] == "ridge"
    ctrl = rows["random_label"]
    assert ctrl["strength"] == es["strength"] and ctrl["layers"] == es["layers"] and ctrl["matched_to"] == "expertsteer_label"
    # another rule set (another number of refinement rounds) has its own cache key, and reuses the unsteered row
    before = unsteered.stat().st_mtime_ns
    _bench_main(["--fast", "--out", str(tmp_path), "--refine-rounds", "2", "--methods", "unsteered", "label_caa"])
    two = Bench(None, None, cache=tmp_path / "cache", rules=RuleSet.fast(refine_rounds=2), target_id="tiny-target")
    other = two.row_path("arithmetic_2way", "label_caa")
    assert other.parent != cache and other.is_file() and two.row_path("arithmetic_2way", "unsteered") == unsteered
    assert unsteered.stat().st_mtime_ns == before
    assert len(list((tmp_path / "cache").glob("*/arithmetic_2way__unsteered.json"))) == 1
    assert _row(other)["rule_set"] == RuleSet.fast(refine_rounds=2).hash != es["rule_set"]
    assert len(_row(other)["layer_val"]) == 2


def test_another_expert_shares_the_target_only_rows(tmp_path):
    """A run with another expert (e.g. a tuned one) reuses the target-only rows (unsteered, CAA, ...)
    of the same target and settings, and keeps its expert-dependent rows apart."""
    from steer_lens.testing import make_tiny_model

    cache = tmp_path / "cache"
    _bench_main(["--fast", "--out", str(tmp_path / "main"), "--cache", str(cache), "--methods",
                 "unsteered", "expertsteer_autoencoder"])
    before = {p: p.stat().st_mtime_ns for p in cache.glob("*/*__unsteered.json")}
    other = make_tiny_model(tmp_path / "other_expert", "gemma3", d_model=32, n_layers=2, seed=7)
    _bench_main(["--fast", "--out", str(tmp_path / "other"), "--cache", str(cache), "--expert", str(other),
                 "--methods", "unsteered", "expert_unsteered", "expertsteer_autoencoder"])
    configs = {f: json.loads((f / "config.json").read_text()) for f in cache.iterdir()}
    folders = {c.get("expert"): f for f, c in configs.items() if "rules" in c}  # selection rules
    assert set(folders) == {"tiny-expert", "other_expert"}  # no target-only selection row was run
    main, tuned = folders["tiny-expert"], folders["other_expert"]
    assert configs[main]["rules"] == configs[tuned]["rules"] and configs[main]["target"] == configs[tuned]["target"]
    assert {p.name for p in main.glob("*__*.json")} == {"arithmetic_2way__expertsteer_autoencoder.json"}
    assert {p.name for p in tuned.glob("*__*.json")} == {"arithmetic_2way__expertsteer_autoencoder.json"}
    # the unsteered rows select nothing: one folder for the target (computed once), one per expert model
    (unsteered,) = [f for f, c in configs.items() if c.get("rows") == "unsteered test" and c["model"] == "tiny-target"]
    assert {p.name for p in unsteered.glob("*__*.json")} == {"arithmetic_2way__unsteered.json"}
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*/*__unsteered.json")} == before
    (expert_rows,) = [f for f, c in configs.items()
                      if c.get("rows") == "unsteered test" and c["model"] == "other_expert"]
    assert {p.name for p in expert_rows.glob("*__*.json")} == {"arithmetic_2way__expert_unsteered.json"}
    plans = [_row(f / "arithmetic_2way__expertsteer_autoencoder.json")["plan_settings"] for f in (main, tuned)]
    assert plans[0] == plans[1]  # same settings, different expert models (separate rows)
    lines = (tmp_path / "other" / "main_results.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in lines[1:]] == ["unsteered", "expert_unsteered", "expertsteer_autoencoder"]


def test_fast_runner_field_methods_and_their_random_field_control(tmp_path):
    from steer_lens.bench import Bench
    from steer_lens.methods import RuleSet

    _bench_main(["--fast", "--out", str(tmp_path), "--methods", "unsteered", "expertsteer_ridge_field",
                 "random_field"])
    bench = Bench(None, None, cache=tmp_path / "cache", rules=RuleSet.fast(), target_id="tiny-target",
                  expert_id="tiny-expert")
    es, ctrl = (_row(bench.row_path("arithmetic_2way", m)) for m in ("expertsteer_ridge_field", "random_field"))
    assert es["plan_settings"]["mode"] == "field" and es["plan_settings"]["alignment"] == "ridge"
    assert ctrl["matched_to"] == "expertsteer_ridge_field" and ctrl["strength"] == es["strength"]
    assert ctrl["layers"] == es["layers"] and ctrl["plan_settings"]["control"] == "shuffled_labels"  # a field, not vectors


def test_shortlist_pairs_window_picks_the_planted_layer_inside_it():
    """The validation pair rule's expert-layer window: the separating layer is found when the
    window holds it, ignored when it does not, and a window outside the model is refused."""
    from types import SimpleNamespace

    from steer_lens.pipeline import depth_match, shortlist_pairs

    g = torch.Generator().manual_seed(0)
    acts = torch.randn(40, 8, 16, generator=g)
    acts[:20, 7, 0] += 5.0  # only expert layer 7 (outside the middle half 2..6) separates
    expert, target = SimpleNamespace(cfg=SimpleNamespace(n_layers=8)), SimpleNamespace(cfg=SimpleNamespace(n_layers=16))
    assert shortlist_pairs(acts, 20, expert, target, 1, window=(6, 7)) == [(7, depth_match(7, 8, 16))]
    assert all(e in range(2, 7) for e, _ in shortlist_pairs(acts, 20, expert, target, 3))
    with pytest.raises(ValueError, match="--expert-layers"):
        shortlist_pairs(acts, 20, expert, target, 1, window=(6, 8))


def _main_results():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))
    import main_results

    return main_results


def _bench_of(a):
    """The row locator of parsed ``analyses/main_results.py`` options (no models)."""
    from steer_lens.bench import Bench
    from steer_lens.bench.cli import finish_args, ids_of

    finish_args(a)
    target_id, expert_id = ids_of(a)
    return Bench(None, None, cache=a.cache, rules=a.rules, target_id=target_id, expert_id=expert_id)


def test_expert_layers_runs_report_apart_but_share_the_cache():
    """A pair-window run must not overwrite the default table; its rows stay in the shared cache
    (the window is part of the rules, so of the expert-dependent rows' keys)."""
    mr = _main_results()
    default = mr.parse(["--datasets", "sst2"])
    window = mr.parse(["--datasets", "sst2", "--expert-layers", "14", "17"])
    assert Path(window.out) == Path(default.out) / "expert_layers_14_17"
    assert Path(window.cache) == Path(default.out) / "cache" and default.cache is None
    tuned = mr.parse(["--expert", "/x/gemma-tuned", "--expert-layers", "14", "17"])
    assert Path(tuned.out).parts[-2:] == ("gemma-tuned", "expert_layers_14_17")
    assert Path(tuned.cache) == Path(default.out) / "cache"  # target-only rows still shared
    b0, b1 = _bench_of(default), _bench_of(window)
    assert Path(b0.cache.root) == Path(b1.cache.root) and b1.rules.expert_layers == (14, 17)
    assert b1.row_path("sst2", "expertsteer_label") != b0.row_path("sst2", "expertsteer_label")
    assert b1.row_path("sst2", "unsteered") == b0.row_path("sst2", "unsteered")


def test_extend_flat_runs_report_apart_with_their_own_keys():
    """``--extend-flat`` changes what every searched row may select: its own table and cache keys,
    the unsteered rows (nothing selected) shared; without it the keys of the committed rows are the
    ones the default rules compute (the benchmark's rows are found)."""
    mr = _main_results()
    default = mr.parse(["--datasets", "sst2"])
    flat = mr.parse(["--datasets", "sst2", "--extend-flat"])
    assert Path(flat.out) == Path(default.out) / "extend_flat" and Path(flat.cache) == Path(default.out) / "cache"
    both = mr.parse(["--datasets", "sst2", "--extend-flat", "--expert-layers", "14", "17"])
    assert Path(both.out) == Path(default.out) / "expert_layers_14_17" / "extend_flat"
    b0, b1 = _bench_of(default), _bench_of(flat)
    assert (b0.target_id, b0.expert_id) == ("smollm2-135m-instruct", "gemma-3-270m")
    for m in ("expertsteer_label", "caa"):  # expert-dependent and target-only selection rows
        assert b1.row_path("sst2", m).parent != b0.row_path("sst2", m).parent
    for m in ("unsteered", "expert_unsteered"):
        assert b1.row_path("sst2", m) == b0.row_path("sst2", m)
    assert b1.rules.search().extend_flat and not b0.rules.search().extend_flat
    rows = {r["method"]: r for r in b0.cached_rows(["sst2"]) if r["dataset"] == "sst2"}  # the committed rows, current keys
    assert rows["expertsteer_label"]["accuracy"] == 0.682 and rows["expertsteer_label"]["rule_set"] == b0.rules.hash
    assert {"unsteered", "random_label", "calibration"} <= set(rows)


def test_label_section_compares_the_field_with_its_control_and_the_fixed_vector():
    from steer_lens.bench.report import label_section

    def row(method, correct):
        return {"dataset": "d", "method": method, "ids": list(range(len(correct))), "correct": correct}

    n = 40
    rows = [row("unsteered", [False] * n), row("expertsteer_label", [True] * 20 + [False] * 20),
            row("random_label", [False] * n), row("expertsteer_label_field", [True] * n),
            row("random_label_field", [False] * n)]
    lines = {tuple(x.split(" | ")[1:3]): x for x in label_section(rows).splitlines() if x.startswith("| d |")}
    assert set(lines) == {("expertsteer_label", "random_label"), ("expertsteer_label", "unsteered"),
                          ("expertsteer_label_field", "random_label_field"),
                          ("expertsteer_label_field", "expertsteer_label"), ("expertsteer_label_field", "unsteered")}
    assert " | 1.0 | " in lines[("expertsteer_label_field", "random_label_field")]  # 40 of 40 vs 0 of 40
    assert " | 0.5 | " in lines[("expertsteer_label_field", "expertsteer_label")]


def test_alternatives_section_pairs_every_method_with_what_a_user_would_do_instead():
    """Prompting, the fine-tuned target and the expert are each tested against the unsteered target, and
    every steering method against each of them, BH-adjusted as their own family (the report's family is
    left as it was); the fine-tuned row's delta is against the unsteered target it was tuned from."""
    from steer_lens.bench.report import alternatives_section, csv_rows, report_family

    def row(method, correct, **extra):
        return {"dataset": "d", "domain": "math", "method": method, "accuracy": sum(correct) / len(correct),
                "ci_low": 0.0, "ci_high": 1.0, "n": len(correct), "majority_rate": 0.5, "model": "t",
                "accuracy_sum": 0.5, "ids": list(range(len(correct))), "correct": correct, **extra}

    n = 40
    rows = [row("unsteered", [False] * n), row("caa", [True] * 10 + [False] * 30),
            row("random_caa", [False] * n), row("calibration", [True] * 5 + [False] * 35),
            row("kshot_4", [True] * 30 + [False] * 10),
            row("finetune_target", [True] * n, model="t-tuned", finetune={"folder": "t-tuned"}),
            row("expert_unsteered", [True] * 20 + [False] * 20, model="e")]
    lines = {tuple(x.split(" | ")[1:3]): x for x in alternatives_section(rows).splitlines() if x.startswith("| d |")}
    alts = ("kshot_4", "finetune_target", "expert_unsteered")
    assert set(lines) == {*((a, "unsteered") for a in alts), *(("caa", a) for a in alts)}
    assert " | -0.5 | " in lines[("caa", "kshot_4")] and " | 1.0 | " in lines[("finetune_target", "unsteered")]
    assert not {("d", "caa", a) for a in alts} & set(report_family(rows))
    assert set(report_family(rows)) == {("d", "caa", "random_caa"), ("d", "caa", "calibration")}
    p = {k: float(lines[k].split(" | ")[-2]) for k in lines}  # p_mcnemar (rounded), then p_bh over the section
    assert float(lines[("caa", "kshot_4")].split(" | ")[-1].strip(" |")) >= p[("caa", "kshot_4")]
    delta = {r["method"]: r["delta_vs_unsteered"] for r in csv_rows(rows)}
    assert delta["finetune_target"] == 1.0 and delta["kshot_4"] == 0.75


def test_margin_bias_recovers_a_ranking_hidden_by_a_constant_shift():
    from steer_lens.baselines import calibrated, fit_bias, signed_margins
    from steer_lens.evaluate import summarise

    rng = torch.Generator().manual_seed(0)
    items = _items(40, "validation")
    answers = torch.tensor([it.answer for it in items], dtype=torch.float32)
    # choice-1 score minus choice-0 score: informative (answer-dependent) but shifted far below zero
    margin = (answers - 0.5) + 0.3 * torch.randn(40, generator=rng) - 3.0
    scores = [([0.0, float(m)], [1, 1]) for m in margin]
    res = summarise(items, scores, majority_rate=0.5)
    assert res.accuracy == 0.5 and set(res.predictions) == {0}  # every item answered with choice 0
    assert torch.allclose(torch.as_tensor(signed_margins(res, items)), margin.double(), atol=1e-6)
    b = fit_bias(signed_margins(res, items), [it.answer for it in items])
    cal = calibrated(res, items, b)
    best = max(((margin + c > 0).float() == answers).float().mean() for c in torch.linspace(-5, 5, 2001))
    assert 2.5 < b < 3.5 and cal.accuracy == pytest.approx(float(best)) and cal.accuracy > 0.85
    assert cal.ids == res.ids and cal.meta["bias"] == b and len(cal.correct) == 40
    assert [m > 0 for m in cal.margins] == cal.correct
    assert (signed_margins(res) == signed_margins(res, items)).all()  # answers implied by a two-way result
    assert calibrated(res, None, b).correct == cal.correct
    assert fit_bias([1.0, -1.0], [1, 0]) == 0.0  # already calibrated: no shift
    with pytest.raises(ValueError, match="two-way"):
        three = [Item(id="x", question="q", choices=["a", "b", "c"], answer=0)]
        signed_margins(summarise(three, [([0.0, 1.0, 2.0], [1, 1, 1])], majority_rate=1.0), three)
    with pytest.raises(ValueError, match="same split"):
        signed_margins(res, items[:3])


def test_every_alignment_has_its_own_random_control(tmp_path):
    """Ridge and Procrustes are judged against random vectors at their own hooks, norms and
    strength (not the auto-encoder's); an unknown method name is an error, not silently dropped."""
    from steer_lens import methods as M
    from steer_lens.bench import Bench
    from steer_lens.bench.views import CONTROL_OF
    from steer_lens.methods import RuleSet

    assert CONTROL_OF["expertsteer_ridge"] == "random_ridge" and CONTROL_OF["expertsteer_procrustes"] == "random_procrustes"
    assert CONTROL_OF["expertsteer_label_lowest_mi"] == "random_label_lowest_mi"  # not expertsteer_label's hooks
    assert all(M.control_of(m) == c for m, c in CONTROL_OF.items())
    pairs = {"expertsteer_ridge": "random_ridge", "expertsteer_label_lowest_mi": "random_label_lowest_mi"}
    _bench_main(["--fast", "--out", str(tmp_path), "--methods", "unsteered", *pairs, *pairs.values()])
    bench = Bench(None, None, cache=tmp_path / "cache", rules=RuleSet.fast(), target_id="tiny-target",
                  expert_id="tiny-expert")
    rows = {m: _row(bench.row_path("arithmetic_2way", m)) for pair in pairs.items() for m in pair}
    for method, control in pairs.items():
        ctrl = rows[control]
        assert ctrl["matched_to"] == method
        assert (ctrl["layers"], ctrl["strength"]) == (rows[method]["layers"], rows[method]["strength"])
        assert control in (tmp_path / "main_results.csv").read_text()
    with pytest.raises(ValueError, match="unknown method.*random_rigde"):
        _bench_main(["--fast", "--out", str(tmp_path), "--methods", "unsteered", "random_rigde"])
