"""The benchmark runner: cache keys (rules, model names, dataset content), refusal of rows made under
other rules, user datasets by path, deterministic shards, resuming, and the three commands on tiny models."""

import json
import shutil

import pytest

from steer_lens import methods as M
from steer_lens.bench import Bench, CacheMismatch, compare_method, model_id, render_compare
from steer_lens.cli import main as cli

from test_methods import _dataset_folder

RULES = M.RuleSet.fast()


def test_model_ids_never_hold_absolute_paths(tmp_path):
    folder = tmp_path / "experts" / "gemma-3-270m-sst2-da2e015fa406"
    folder.mkdir(parents=True)
    assert model_id(folder) == "gemma-3-270m-sst2-da2e015fa406"
    assert model_id("/root/.cache/steer_lens/experts/gemma-3-270m-sst2-da2e015fa406") == folder.name
    assert model_id("gemma-3-270m") == "gemma-3-270m" and model_id("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"


def test_keys_separate_rules_models_and_share_the_unsteered_rows(tiny_llama, tiny_gemma, tmp_path):
    a = Bench(tiny_llama, tiny_gemma, cache=tmp_path, rules=RULES, target_id="t", expert_id="e")
    b = Bench(tiny_llama, tiny_gemma, cache=tmp_path, rules=RULES.replace(refine_rounds=2), target_id="t",
              expert_id="e2")
    assert a.config("unsteered") == b.config("unsteered")  # selects nothing: shared by every rule set
    assert a.config("caa") != b.config("caa")  # another rule set
    assert a.config("caa") == {**a.config("caa"), "target": "t"} and "expert" not in a.config("caa")
    assert a.config("expertsteer_label")["expert"] == "e" and a.config("expert_unsteered")["model"] == "e"
    for cfg in (a.config("caa"), a.config("expertsteer_label")):
        assert str(tmp_path) not in json.dumps(cfg)
    with pytest.raises(ValueError, match="needs an expert"):
        Bench(tiny_llama, None, cache=tmp_path, rules=RULES, target_id="t").config("expertsteer_label")


def test_user_dataset_by_path_is_keyed_by_content_inside_the_cache(tiny_llama, tmp_path, one_thread):
    data = _dataset_folder(tmp_path / "data" / "mine")
    cache = tmp_path / "cache"
    bench = Bench(tiny_llama, None, cache=cache, rules=RULES, target_id="t")
    first = bench.run([str(data)], ["unsteered", "caa", "random_caa"])
    files = sorted(p.relative_to(cache) for p in cache.rglob("*__*.json"))
    assert len(files) == 3 and all(str(p.name).startswith("mine-") for p in files)
    assert not list((tmp_path / "data").glob("*.json"))  # nothing written beside the data
    assert {r["dataset"] for r in first} == {files[0].name.split("__")[0]}
    # resumed from the cache: same rows, nothing recomputed
    again = Bench(tiny_llama, None, cache=cache, rules=RULES, target_id="t").run([str(data)], ["caa"])
    assert again[0]["seconds"] == first[1]["seconds"] and again[0]["correct"] == first[1]["correct"]
    # other content, other key: never the old rows
    with open(data / "test.jsonl", "a") as f:
        f.write(json.dumps({"id": "extra", "question": "9 + 9 =", "choices": ["18", "19"], "answer": 0}) + "\n")
    changed = Bench(tiny_llama, None, cache=cache, rules=RULES, target_id="t")
    assert changed.dataset(str(data))[0] != first[0]["dataset"]
    assert changed.run([str(data)], ["unsteered"])[0]["n"] == 8  # limit_test 8 of the 9 items, a fresh row
    assert len(list(cache.rglob("*__unsteered.json"))) == 2
    with pytest.raises(ValueError, match="no 'validation' split"):
        (data / "validation.jsonl").unlink()
        Bench(tiny_llama, None, cache=cache, rules=RULES, target_id="t").run([str(data)], ["caa"])


def test_rows_of_another_rule_set_are_refused(tiny_llama, tmp_path, one_thread):
    data = _dataset_folder(tmp_path / "mine")
    bench = Bench(tiny_llama, None, cache=tmp_path / "cache", rules=RULES, target_id="t")
    bench.run([str(data)], ["unsteered", "caa"])
    other = Bench(tiny_llama, None, cache=tmp_path / "cache", rules=RULES.replace(refine_rounds=0), target_id="t")
    src, dst = bench.row_path(str(data), "caa"), other.row_path(str(data), "caa")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)  # a row of the first rule set, put where the second one looks
    with pytest.raises(CacheMismatch, match="not reused"):
        other.row(str(data), "caa")
    # a folder whose config was made for another configuration is refused too
    (dst.parent / "config.json").write_text(json.dumps({"format": 2, "rules": "something else"}))
    dst.unlink()
    with pytest.raises(CacheMismatch, match="another configuration"):
        other.cached_rows([str(data)], ["caa"])
    # a row of the earlier cache layout (no cache key) is refused, not mixed in
    legacy = json.loads(src.read_text())
    del legacy["cache_key"]
    src.write_text(json.dumps(legacy))
    with pytest.raises(CacheMismatch, match="no cache key"):
        bench.row(str(data), "caa")


def test_shards_partition_the_rows_and_fill_one_cache(tiny_llama, tiny_gemma, tmp_path, one_thread):
    data = str(_dataset_folder(tmp_path / "mine"))
    methods = ["unsteered", "calibration", "caa", "random_caa", "label_caa", "random_label_caa"]
    bench = Bench(tiny_llama, tiny_gemma, cache=tmp_path / "shared", rules=RULES, target_id="t", expert_id="e")
    units = bench.units([data], methods)
    assert [g for _, g in units] == [["unsteered"], ["calibration"], ["caa", "random_caa"],
                                     ["label_caa", "random_label_caa"]]
    parts = [bench.run([data], methods, shard=(i, 2)) for i in range(2)]
    assert [r["method"] for r in parts[0]] == ["unsteered", "caa", "random_caa"]
    assert [r["method"] for r in parts[1]] == ["calibration", "label_caa", "random_label_caa"]
    whole = Bench(tiny_llama, tiny_gemma, cache=tmp_path / "alone", rules=RULES, target_id="t", expert_id="e")
    alone = {r["method"]: r for r in whole.run([data], methods)}
    for r in parts[0] + parts[1]:  # the same numbers as one unsharded run (fits are seeded)
        assert (r["correct"], r["strength"], r["layers"]) == (alone[r["method"]]["correct"],
                                                              alone[r["method"]]["strength"],
                                                              alone[r["method"]]["layers"])
    with pytest.raises(ValueError, match="0 <= I < N"):
        bench.run([data], methods, shard=(2, 2))


def test_compare_method_sets_a_method_beside_its_control_and_baselines(tiny_llama, tmp_path, one_thread):
    data = str(_dataset_folder(tmp_path / "mine"))
    bench = Bench(tiny_llama, None, cache=tmp_path / "cache", rules=RULES, target_id="t")
    res = compare_method(bench, data, "caa")
    assert list(res["rows"]) == ["caa", "random_caa", "unsteered", "calibration"]
    assert set(res["vs"]) == {"random_caa", "unsteered", "calibration"}
    text = render_compare(res)
    assert "caa - random_caa:" in text and "McNemar" in text


def test_the_three_commands_on_tiny_models(tiny_dir, tmp_path, capsys, one_thread):
    target, expert = str(tiny_dir["llama"]), str(tiny_dir["gemma3"])
    data = str(_dataset_folder(tmp_path / "mine"))
    out = tmp_path / "bench"
    assert cli(["bench", "--fast", "--datasets", data, "--methods", "unsteered", "caa", "random_caa",
                "expertsteer_label", "random_label", "--out", str(out), "--threads", "1"]) == 0
    lines = (out / "main_results.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in lines[1:]] == ["unsteered", "caa", "random_caa", "expertsteer_label",
                                                         "random_label"]
    assert "steer-lens bench" in (out / "README.md").read_text()
    assert cli(["bench", "--fast", "--datasets", data, "--out", str(out), "--report-only", "--methods",
                "unsteered"]) == 0
    assert (out / "main_results.csv").read_text().splitlines() == lines  # the cache, whatever --methods says
    assert cli(["bench", "--fast", "--methods", "cca", "--out", str(out)]) == 1
    assert "unknown method(s) cca" in capsys.readouterr().err

    plan_dir = tmp_path / "plan"
    assert cli(["fit", "--method", "label_caa", "--target", target, "--dataset", data, "--limit", "20",
                "--val-limit", "6", "--out", str(plan_dir), "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    choice = json.loads((plan_dir / "choice.json").read_text())
    assert fitted["method"] == choice["method"] == "label_caa" and choice["n_val"] == 6
    assert any(c["strength"] < 0 for c in choice["val_curve"])  # label directions: signed strengths
    assert cli(["fit", "--method", "expertsteer_label", "--target", target, "--dataset", data,
                "--out", str(plan_dir)]) == 2
    assert "needs --expert" in capsys.readouterr().err

    assert cli(["evaluate", "--method", "expertsteer_label", "--model", target, "--expert", expert, "--dataset",
                data, "--limit", "8", "--val-limit", "6", "--limit-train", "20", "--cache",
                str(tmp_path / "cache"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["rows"]) == ["expertsteer_label", "random_label", "unsteered", "calibration"]
    assert res["rows"]["random_label"]["strength"] == res["rows"]["expertsteer_label"]["strength"]
    assert cli(["evaluate", "--method", "caa", "--plan", str(plan_dir), "--model", target, "--dataset", data]) == 2


def test_report_adjusts_every_paired_test_with_benjamini_hochberg(tmp_path):
    from statsmodels.stats.multitest import multipletests

    from steer_lens.bench.report import report_family, write_report

    def row(method, correct, strength=0.3):
        return {"dataset": "d", "domain": "math", "method": method, "accuracy": sum(correct) / len(correct),
                "ci_low": 0.0, "ci_high": 1.0, "n": len(correct), "majority_rate": 0.5, "layers": [3],
                "strength": strength, "model": "t", "accuracy_sum": 0.5, "ids": list(range(len(correct))),
                "correct": correct, "seconds": 1.0, "val_curve": []}

    n = 60
    rows = [row("unsteered", [i % 2 == 0 for i in range(n)], 0.0), row("calibration", [i % 3 == 0 for i in range(n)], 0.0),
            row("caa", [i % 5 != 0 for i in range(n)]), row("random_caa", [i % 2 == 1 for i in range(n)]),
            row("expertsteer_autoencoder", [i % 4 != 0 for i in range(n)]), row("random", [i < 30 for i in range(n)])]
    family = report_family(rows)
    raw = {k: v for k, v in family.items()}
    assert ("d", "caa", "random_caa") in family and ("d", "caa", "calibration") in family
    from steer_lens.bench.report import _unique_tests

    tests = _unique_tests(rows)
    expected = multipletests([c["p"] for c in tests], method="fdr_bh")[1]
    assert [raw[(c["dataset"], c["method"], c["vs"])] for c in tests] == pytest.approx(list(expected))
    text = write_report(rows, tmp_path, config={}).read_text()
    line = next(x for x in text.split("## Each method against its own random control")[1].splitlines()
                if x.startswith("| d | caa | random_caa |"))
    assert line.split(" | ")[-1].rstrip(" |") == str(round(family[("d", "caa", "random_caa")], 3))
    assert f"adjusted over all {len(tests)} paired tests" in text
    assert "## The test splits in the ledger" in text and "| d | 0 | 0 | no line in the ledger |" in text


def test_the_test_accuracy_table_adjusts_each_row_against_unsteered():
    from statsmodels.stats.multitest import multipletests

    from steer_lens.bench.report import csv_rows
    from steer_lens.evaluate import mcnemar

    n = 40
    base = [i % 2 == 0 for i in range(n)]
    runs = {"unsteered": base, "caa": [i % 5 != 0 for i in range(n)], "random_caa": [i % 3 == 0 for i in range(n)],
            "kshot_4": [i < 30 for i in range(n)]}
    rows = [{"dataset": "d", "domain": "math", "method": m, "accuracy": sum(c) / n, "ci_low": 0.0, "ci_high": 1.0,
             "n": n, "majority_rate": 0.5, "model": "t", "accuracy_sum": 0.5, "ids": list(range(n)), "correct": c}
            for m, c in runs.items()]
    # the expert's own unsteered row is a reference of another model: no test against the target's row
    rows.append({**rows[0], "method": "expert_unsteered", "model": "e"})
    table = {r["method"]: r for r in csv_rows(rows)}
    assert table["unsteered"]["p_bh_vs_unsteered"] == "" and table["expert_unsteered"]["p_bh_vs_unsteered"] == ""
    tested = ["caa", "random_caa", "kshot_4"]
    expected = multipletests([mcnemar(runs[m], base)["p"] for m in tested], method="fdr_bh")[1]
    assert [table[m]["p_bh_vs_unsteered"] for m in tested] == pytest.approx(list(expected), abs=1e-4)
    assert all(table[m]["p_bh_vs_unsteered"] >= table[m]["p_mcnemar_vs_unsteered"] for m in tested)


def test_calibration_rows_have_ledger_lines_and_need_a_locked_run_on_confirm(tiny_llama, tmp_path, one_thread,
                                                                           monkeypatch):
    """Calibration runs no model on TEST (its answers are the unsteered row's margins plus a bias), yet
    its row is a scoring of the split: the ledger gets its line, and confirm items need a locked run."""
    from steer_lens import ledger

    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(ledger.ENV, str(path))
    data = _dataset_folder(tmp_path / "mine")
    (data / "confirm.jsonl").write_text((data / "test.jsonl").read_text().replace('"test', '"confirm'))
    Bench(tiny_llama, None, cache=tmp_path / "c", rules=RULES, target_id="t").run([str(data)],
                                                                                 ["unsteered", "calibration"])
    unsteered, cal = ledger.read(path)
    assert (cal["method"], cal["source"], cal["split"], cal["rule_set"]) == ("calibration", "calibration", "test",
                                                                             RULES.hash)
    assert (cal["split_hash"], cal["n"], cal["model"]) == (unsteered["split_hash"], unsteered["n"], unsteered["model"])
    bench = Bench(tiny_llama, None, cache=tmp_path / "c", rules=RULES, target_id="t", test_split="confirm")
    p = tmp_path / "prereg.md"
    p.write_text("x")
    monkeypatch.setattr(ledger, "git_commit_of", lambda path: "f" * 40)
    monkeypatch.setattr(ledger, "git_dirty", lambda path: False)
    with ledger.locked_run(RULES.hash, p):
        bench.run([str(data)], ["unsteered"])
    with pytest.raises(ledger.ConfirmLockedError):  # the unsteered confirm row is cached; calibration is refused
        bench.run([str(data)], ["calibration"])
    with ledger.locked_run(RULES.hash, p):
        bench.run([str(data)], ["calibration"])
    lines = ledger.read(path)[2:]
    assert [(x["method"], x["split"], x.get("locked")) for x in lines] == [("unsteered", "confirm", True),
                                                                             ("calibration", "confirm", True)]


def test_test_runs_never_write_the_committed_ledger():
    import os

    from steer_lens import ledger

    assert os.environ.get("STEER_LENS_LEDGER")  # set by conftest at import, inherited by CLI subprocesses
    assert ledger.ledger_path().resolve() != ledger.DEFAULT_PATH.resolve()


def test_a_confirm_run_reuses_the_test_rows_choices(tiny_llama, tmp_path, one_thread, monkeypatch):
    import steer_lens.methods.base as base
    from steer_lens import ledger

    data = _dataset_folder(tmp_path / "mine")
    (data / "confirm.jsonl").write_text((data / "test.jsonl").read_text().replace('"test', '"confirm'))
    methods = ["unsteered", "caa", "random_caa", "label_caa"]
    Bench(tiny_llama, None, cache=tmp_path / "test", rules=RULES, target_id="t").run([str(data)], methods)
    p = tmp_path / "prereg.md"
    p.write_text("x")
    monkeypatch.setattr(ledger, "git_commit_of", lambda path: "f" * 40)
    monkeypatch.setattr(ledger, "git_dirty", lambda path: False)
    with ledger.locked_run(RULES.hash, p):
        fresh = Bench(tiny_llama, None, cache=tmp_path / "fresh", rules=RULES, target_id="t",
                      test_split="confirm").run([str(data)], methods)
        searches = []
        real = base.choose
        monkeypatch.setattr(base, "choose", lambda *a, **k: searches.append(1) or real(*a, **k))
        reuse = Bench(tiny_llama, None, cache=tmp_path / "confirm", rules=RULES, target_id="t", test_split="confirm",
                      choices_from=tmp_path / "test").run([str(data)], methods)
    assert searches == []  # no validation search: the choices of the test rows are reused
    for a, b in zip(fresh, reuse):  # ... and they are the choices a fresh search makes
        assert (a["method"], a["strength"], a["layers"], a["correct"]) == (b["method"], b["strength"], b["layers"],
                                                                            b["correct"])
    caa = reuse[1]
    assert caa["choice_from"]["rule_set"] == RULES.hash and caa["choice_from"]["cache_key"]
    assert "choice_from" not in fresh[1]
    with pytest.raises(ValueError, match="test_split='confirm'"):
        Bench(tiny_llama, None, cache=tmp_path / "x", rules=RULES, target_id="t", choices_from=tmp_path / "test")
    # choices recorded under another rule set are refused
    other = RULES.replace(refine_rounds=0)
    row = Bench(tiny_llama, None, cache=tmp_path / "test", rules=RULES, target_id="t").row_path(str(data), "caa")
    moved = Bench(tiny_llama, None, cache=tmp_path / "test", rules=other, target_id="t").row_path(str(data), "caa")
    moved.parent.mkdir(parents=True)
    (moved.parent / "config.json").write_text(json.dumps({"format": 2, **Bench(
        tiny_llama, None, rules=other, target_id="t").config("caa")}))
    moved.write_text(json.dumps({**json.loads(row.read_text()), "cache_key": moved.parent.name}))
    with ledger.locked_run(other.hash, p), pytest.raises(CacheMismatch, match="chosen under rule set"):
        Bench(tiny_llama, None, cache=tmp_path / "c2", rules=other, target_id="t", test_split="confirm",
              choices_from=tmp_path / "test").run([str(data)], ["caa"])
