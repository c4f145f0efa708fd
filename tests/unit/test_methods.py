"""The method registry: every benchmark recipe a named object with its control; a user's method in a
few lines, through the runner with its random control, CSV row and report line; the PCA recipe."""

import json

import numpy as np
import pytest
import torch

import steer_lens as sl
from steer_lens import methods as M
from steer_lens.bench import Bench
from steer_lens.bench.report import write_report
from steer_lens.data import Item, MCDataset

BENCHMARK_METHODS = ["unsteered", "expert_unsteered", "calibration", "caa", "label_caa", "self_rfm", "iti", "pca",
                     "expertsteer_autoencoder", "expertsteer_ridge", "expertsteer_procrustes",
                     "expertsteer_highest_mi", "expertsteer_hybrid", "expertsteer_label",
                     "expertsteer_label_lowest_mi", "expertsteer_ridge_field", "expertsteer_label_field",
                     "reverse_expertsteer_autoencoder"]
# the control names every committed row was written under
CONTROLS = {"expertsteer_autoencoder": "random", "expertsteer_label": "random_label", "label_caa": "random_label_caa",
            "caa": "random_caa", "self_rfm": "random_self_rfm", "expertsteer_ridge": "random_ridge",
            "expertsteer_procrustes": "random_procrustes", "expertsteer_hybrid": "random_hybrid",
            "expertsteer_label_lowest_mi": "random_label_lowest_mi", "expertsteer_ridge_field": "random_field",
            "expertsteer_label_field": "random_label_field", "reverse_expertsteer_autoencoder": "reverse_random"}


def test_registry_holds_every_benchmark_method_with_its_control():
    names = M.available()
    assert set(BENCHMARK_METHODS) <= set(names)
    for name, ctrl in CONTROLS.items():
        assert M.control_of(name) == ctrl and M.get(ctrl).matched == name
    for name in BENCHMARK_METHODS:
        m = M.get(name)
        assert m.name == name and len(m.doc) > 40, name  # a one-paragraph docstring
        assert m.needs_expert == (name.startswith(("expert", "reverse_"))), name
        if not m.reference:  # every steering method has a registered random control, listed right after it
            ctrl = M.control_of(name)
            assert isinstance(M.get(ctrl), M.RandomControl) and names.index(ctrl) == names.index(name) + 1
    assert M.control_of("unsteered") is None and M.control_of("calibration") is None
    assert M.get(M.PAPER).variant == M.Variant("autoencoder", "lowest", "correct", "fixed")
    assert "paper's specification" in M.get(M.PAPER).doc
    assert M.get("expertsteer_label").variant.pair_rule == "validation" and M.get("expertsteer_label").signed
    assert M.with_controls(["caa", "unsteered"]) == ["caa", "random_caa", "unsteered"]
    with pytest.raises(KeyError, match="unknown method 'cca'.*caa"):
        M.get("cca")


def test_register_rejects_bad_and_duplicate_methods():
    class Nameless(M.Method):
        pass

    with pytest.raises(ValueError, match="no name"):
        M.register(Nameless)
    with pytest.raises(TypeError, match="Method"):
        M.register(object)

    class Twin(M.Method):
        name = "caa"

    with pytest.raises(ValueError, match="already registered"):
        M.register(Twin)
    assert type(M.get("caa")).__name__ == "CAA"


def test_rule_set_hash_names_the_rules():
    r = M.RuleSet()
    assert r.hash == M.RuleSet().hash and len(r.hash) == 10
    assert r.replace(refine_rounds=2).hash != r.hash and r.replace(extend_flat=True).hash != r.hash
    assert r.replace(expert_layers=(14, 17)).to_dict()["expert_layers"] == [14, 17]
    assert M.RuleSet.fast().limit_test == 8
    ref = M.RuleSet.reference()
    assert ref.hash == "abca3c4a0a"  # the committed benchmark rows' rule set: keys must not drift
    assert r.strategy == "flips" and r.hash != ref.hash and r == ref.replace(strategy="flips")
    assert r.search().strategy == "flips" and ref.search().strategy == "reference"
    halving = ref.replace(strategy="halving")
    assert halving.hash not in (r.hash, ref.hash) and halving.search(signed=True).strategy == "halving"
    with pytest.raises(ValueError, match="strategy"):
        M.RuleSet(strategy="bisect")
    with pytest.raises(ValueError, match="limit_val"):
        M.RuleSet(limit_val=0)
    with pytest.raises(ValueError, match="positive"):
        M.RuleSet(grid=(-0.1,))


def _items(n, split):
    return [Item(id=f"{split}{i}", question=f"{i} + {i} =", choices=[str(2 * i), str(2 * i + 1)],
                 answer=i % 2, domain="math", source="unit") for i in range(n)]


def _dataset_folder(path, n=(20, 6, 8)):
    path.mkdir(parents=True, exist_ok=True)
    for split, k in zip(("train", "validation", "test"), n):
        with open(path / f"{split}.jsonl", "w") as f:
            for it in _items(k, split):
                f.write(json.dumps({"id": it.id, "question": it.question, "choices": list(it.choices),
                                    "answer": it.answer, "domain": "math"}) + "\n")
    return path


def test_a_users_method_runs_through_the_bench_with_its_control_csv_row_and_report_line(tiny_llama, tiny_gemma,
                                                                                      tmp_path, one_thread):
    # the whole user-side definition: a class, a docstring, candidates fitted on train
    @M.register
    class LastTokenCAA(M.Method):
        """CAA read at the completion's last token, at the target's middle layer."""

        name = "user_last_token_caa"

        def candidates(self, ctx):
            layer = ctx.target.cfg.n_layers // 2
            return {layer: sl.baselines.fit_caa(ctx.target, *ctx.contrast("correct"), layer, position="last")}

    try:
        assert M.control_of("user_last_token_caa") == "random_user_last_token_caa"
        data = _dataset_folder(tmp_path / "mine")
        bench = Bench(tiny_llama, tiny_gemma, cache=tmp_path / "cache", rules=M.RuleSet.fast())
        rows = bench.run([str(data)], ["unsteered", "user_last_token_caa", "random_user_last_token_caa"])
        by = {r["method"]: r for r in rows}
        mine, ctrl = by["user_last_token_caa"], by["random_user_last_token_caa"]
        assert mine["layers"] == [2] == ctrl["layers"] and ctrl["strength"] == mine["strength"]
        assert ctrl["matched_to"] == "user_last_token_caa" and mine["n"] == 8 and mine["val_curve"]
        assert {r["rule_set"] for r in rows} == {M.RuleSet.fast().hash}
        readme = write_report(bench.cached_rows([str(data)]), tmp_path / "report", config={"target": "tiny"})
        csv = (tmp_path / "report" / "main_results.csv").read_text()
        assert ",user_last_token_caa," in csv and ",random_user_last_token_caa," in csv
        section = readme.read_text().split("## Each method against its own random control")[1].split("##")[0]
        assert "| user_last_token_caa | random_user_last_token_caa |" in section
    finally:
        M.unregister("user_last_token_caa")
    assert "user_last_token_caa" not in M.available() and "random_user_last_token_caa" not in M.available()


def test_pca_direction_is_the_top_singular_vector_of_the_centred_differences(tiny_llama, one_thread):
    items = _items(16, "train")
    pos, neg = sl.contrast_prompts(items)
    acts = sl.baselines.pooled_activations(tiny_llama, pos, neg, [2])
    p, n = acts[0][:, 0], acts[1][:, 0]
    v = M.pca_direction(p, n).double()
    d = (p - n).double().numpy()
    _, _, vt = np.linalg.svd(d - d.mean(0), full_matrices=False)
    assert abs(float(np.dot(v.numpy(), vt[0]))) == pytest.approx(1.0, abs=1e-6)
    assert float((torch.as_tensor(d) @ v).mean()) > 0  # oriented towards the positives
    # a planted axis of variation among the differences is recovered
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 8, generator=g)
    spread = torch.randn(40, 1, generator=g) * 5 + 3
    planted = base.clone()
    planted[:, 3] += spread[:, 0]
    u = M.pca_direction(planted, torch.zeros(40, 8) + 0.01 * base)
    assert abs(float(u[3])) > 0.95 and float(u[3]) > 0 and float(u.norm()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="paired"):
        M.pca_direction(p[:1], n[:1])  # one pair has no variance to speak of


def test_pca_method_plan_is_a_unit_vector_at_a_shortlisted_layer(tiny_llama, tmp_path, one_thread):
    ds = MCDataset("toy", {"train": _items(20, "train"), "validation": _items(6, "validation")})
    plan, choice = M.fit_method("pca", tiny_llama, ds, rules=M.RuleSet.fast())
    (hook, vec), = plan.vectors.items()
    assert plan.settings["method"] == "pca" and float(vec.norm()) == pytest.approx(1.0, abs=1e-5)
    assert M.plan_layers(plan)[0] in (1, 2) and choice["n_val"] == 6 and choice["val_curve"]
    with pytest.raises(ValueError, match="needs an expert"):
        M.fit_method("expertsteer_label", tiny_llama, ds, rules=M.RuleSet.fast())
    with pytest.raises(ValueError, match="fits nothing"):
        M.fit_method("random_caa", tiny_llama, ds, rules=M.RuleSet.fast())


def test_context_train_seed_draws_another_train_subsample(tiny_llama):
    from steer_lens.data import load_dataset

    ds, rules = load_dataset("sst2"), M.RuleSet.fast()
    ids = lambda ctx: [it.id for it in ctx.train]  # noqa: E731
    a, b = M.Context(ds, tiny_llama, None, rules), M.Context(ds, tiny_llama, None, rules, train_seed=1)
    assert len(a.train) == len(b.train) == rules.limit_train < len(ds.split("train"))
    assert ids(a) != ids(b) and ids(a) == ids(M.Context(ds, tiny_llama, None, rules, train_seed=0))


def test_plan_at_refits_at_a_rows_layers_on_other_train_items(tiny_llama, tiny_gemma, one_thread):
    from steer_lens.data import load_dataset
    from steer_lens.methods.base import plan_layers

    ds, rules = load_dataset("sst2"), M.RuleSet.fast(limit_train=12)
    for name in ("label_caa", "expertsteer_label", M.PAPER):
        m = M.get(name)
        ctx = M.Context(ds, tiny_llama, tiny_gemma, rules)
        key, plan = next(iter(m.candidates(ctx).items()))
        row = {"layers": plan_layers(plan), "pairs": [p.__dict__ for p in plan.pairs]}
        same = m.plan_at(ctx, row)  # the same items: the candidate's own vectors
        assert plan_layers(same) == row["layers"]
        for h, v in plan.vectors.items():
            assert torch.allclose(same.vectors[h], v, atol=1e-5), (name, h)
        other = m.plan_at(M.Context(ds, tiny_llama, tiny_gemma, rules, train_seed=1), row)
        assert plan_layers(other) == row["layers"]  # other train items: the row's layers, another fit
        assert any(not torch.allclose(other.vectors[h], v, atol=1e-5) for h, v in plan.vectors.items()), name
