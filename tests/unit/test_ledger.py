"""The test ledger (steer_lens.ledger): one line per scoring of a test/confirm split, from any
entry point; method and rule set from ledger.scoring; summary; atomic appends; backfill."""

import json
import multiprocessing
import subprocess

import pytest

from steer_lens import ledger, ledger_backfill
from steer_lens.data import Item, MCDataset, content_hash, load_dataset, origin
from steer_lens.evaluate import evaluate


@pytest.fixture()
def led(tmp_path, monkeypatch):
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(ledger.ENV, str(path))
    return path


def _items(n=4, tag="t"):
    return [Item(f"{tag}{i}", f"Question {i}?", ["yes", "no"], i % 2, "general", "unit") for i in range(n)]


def _dataset(tmp_path, name="toy"):
    folder = tmp_path / name
    folder.mkdir()
    for split, tag in (("train", "a"), ("validation", "b"), ("test", "c")):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps(it.to_dict()) + "\n" for it in _items(4, tag)), encoding="utf-8")
    return load_dataset(folder)


def test_ledger_path_under_pytest_is_not_the_committed_file(monkeypatch):
    monkeypatch.delenv(ledger.ENV, raising=False)
    assert ledger.ledger_path() != ledger.DEFAULT_PATH
    monkeypatch.setenv(ledger.ENV, "/x/y.jsonl")
    assert str(ledger.ledger_path()) == "/x/y.jsonl"


def test_one_line_per_evaluate_of_a_test_split(tiny_llama, tmp_path, led):
    ds = _dataset(tmp_path)
    evaluate(tiny_llama, ds, split="test", batch_size=1)  # 4 batches, one line
    evaluate(tiny_llama, ds, split="validation")  # not scored into the ledger
    evaluate(tiny_llama, ds.split("train"))
    lines = ledger.read(led)
    assert len(lines) == 1
    line = lines[0]
    assert set(ledger.FIELDS) <= set(line)
    assert (line["dataset"], line["split"], line["n"]) == ("toy", "test", 4)
    assert line["method"] == line["rule_set"] == "unspecified"
    assert line["split_hash"] == content_hash(ds.split("test"))
    assert line["model"] == tiny_llama.cfg.model_name and line["source"] == "evaluate"


def test_scoring_context_names_method_and_rule_set(tiny_llama, tmp_path, led):
    ds = _dataset(tmp_path)
    with ledger.scoring(method="caa", rule_set="abc123"):
        evaluate(tiny_llama, ds, split="test", limit=2)
        evaluate(tiny_llama, ds.split("test"))  # items of a loaded test split: recorded too
    evaluate(tiny_llama, ds, split="test")
    lines = ledger.read(led)
    assert [(l["method"], l["rule_set"], l["n"]) for l in lines] == [
        ("caa", "abc123", 2), ("caa", "abc123", 4), ("unspecified", "unspecified", 4)]
    assert len({l["split_hash"] for l in lines}) == 1  # the whole split's hash, also for a subset


def test_hand_made_items_are_not_recorded(tiny_llama, led):
    evaluate(tiny_llama, _items(3, "loose"))
    evaluate(tiny_llama, MCDataset("mem", {"validation": _items(3, "v")}), split="validation")
    assert ledger.read(led) == []


def test_in_memory_dataset_test_split_is_recorded(tiny_llama, led):
    evaluate(tiny_llama, MCDataset("mem", {"test": _items(3, "m")}), split="test")
    assert [l["dataset"] for l in ledger.read(led)] == ["mem"]


def test_bundled_split_hash_is_the_file_hash():
    import hashlib

    from steer_lens.data import BUNDLED_DIR

    items = load_dataset("sst2").split("test")
    assert content_hash(items) == hashlib.sha256((BUNDLED_DIR / "sst2" / "test.jsonl").read_bytes()).hexdigest()
    assert origin(items[:5])[:2] == ("sst2", "test")
    assert origin(load_dataset("sst2").split("validation")) is None


def test_scoring_rejects_bad_names():
    with pytest.raises(ValueError, match="method must be"):
        with ledger.scoring(method=""):
            pass
    with pytest.raises(ValueError, match="rule_set must be"):
        with ledger.scoring(method="caa", rule_set="a\nb"):
            pass


def test_summary_marks_splits_scored_under_several_rule_sets(led):
    for ds, split, rs in [("a", "test", "r1"), ("a", "test", "r1"), ("b", "test", "r1"),
                          ("b", "test", "r2"), ("b", "confirm", "r3")]:
        ledger.record(ds, split, "h", n=10, model="m", method="x", rule_set=rs)
    s = ledger.summary(led)
    assert s[("a", "test")]["n_rule_sets"] == 1 and s[("a", "test")]["status"] == "single rule set"
    assert s[("b", "test")]["rule_sets"] == ["r1", "r2"] and s[("b", "test")]["status"] == "exploratory"
    assert s[("b", "confirm")]["lines"] == 1
    assert "| b | test | 2 | 2 | 1 | exploratory |" in ledger.format_summary(s)


def test_read_names_a_malformed_line(led):
    led.write_text('{"dataset": "a", "split": "test", "rule_set": "r"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2: malformed"):
        ledger.read(led)


def _append_many(args):
    path, k = args
    for i in range(50):
        ledger.record("d", "test", "h" * 64, n=i, model="m" * 200, method=f"w{k}", rule_set="r", path=path)


def test_concurrent_appends_give_whole_lines(tmp_path):
    path = tmp_path / "l.jsonl"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_append_many, [(path, k) for k in range(4)])
    lines = ledger.read(path)
    assert len(lines) == 200 and {l["method"] for l in lines} == {"w0", "w1", "w2", "w3"}


def test_append_after_a_torn_line_starts_a_new_line(led):
    led.write_text('{"dataset": "a", "split": "test", "rule_set": "r"}\n{"dataset": "tor')
    ledger.record("b", "test", "h", n=1, model="m")
    assert json.loads(led.read_text().splitlines()[-1])["dataset"] == "b"


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_backfill_from_committed_caches(tmp_path, led):
    ids = [it.id for it in load_dataset("sst2").split("test")][:7]
    cache = tmp_path / "results" / "benchmark" / "cache" / "abc123def0"
    cache.mkdir(parents=True)
    row = {"accuracy": 0.5, "ids": ids, "correct": [True] * 7, "model": "m1", "dataset": "sst2", "method": "caa"}
    (cache / "sst2__caa.json").write_text(json.dumps(row))
    (cache / "config.json").write_text("{}")
    (cache / "arc_easy__random.json").write_text(json.dumps({**row, "dataset": "arc_easy"}))  # ids not there
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "results")
    _git(tmp_path, "commit", "-q", "-m", "rows")
    added = ledger_backfill.backfill(tmp_path, led)
    assert len(added) == 1
    line = ledger.read(led)[0]
    assert (line["dataset"], line["split"], line["method"], line["rule_set"], line["model"], line["n"]) == (
        "sst2", "test", "caa", "abc123def0", "m1", 7)
    assert line["split_hash"] == content_hash(load_dataset("sst2").split("test"))
    assert line["date"][:4].isdigit() and line["source"].startswith("backfill:results/benchmark/cache/")
    assert ledger_backfill.backfill(tmp_path, led) == []  # idempotent
    (cache.parent / "renamed0000").mkdir()
    (cache.parent / "renamed0000" / "sst2__caa.json").write_text(json.dumps(row))
    assert ledger_backfill.backfill(tmp_path, led, ref=None) == []  # the same row under another folder
    assert len(ledger.read(led)) == 1


def test_backfill_skips_rows_their_scoring_recorded_and_names_the_rows_rule_set(tmp_path, led):
    """A row scored since the ledger existed has the line its scoring wrote (no row_hash): backfill
    finds it by dataset, split, method, model, rule set and size, also when the cache folder's name
    is not the rule set (a cache key hashes the target too)."""
    ids = [it.id for it in load_dataset("sst2").split("test")][:5]
    cache = tmp_path / "results" / "benchmark" / "cache" / "cachekey00"
    cache.mkdir(parents=True)
    row = {"ids": ids, "correct": [True] * 5, "model": "m1", "dataset": "sst2", "rule_set": "rules00001"}
    (cache / "sst2__caa.json").write_text(json.dumps({**row, "method": "caa"}))
    (cache / "sst2__pca.json").write_text(json.dumps({**row, "method": "pca"}))
    split_hash = content_hash(load_dataset("sst2").split("test"))
    ledger.record("sst2", "test", split_hash, n=5, model="m1", method="caa", rule_set="rules00001")
    added = ledger_backfill.backfill(tmp_path, led, ref=None, dry_run=True)
    assert [(x["method"], x["rule_set"]) for x in added] == [("pca", "rules00001")]
    # a live line of another rule set is another scoring: the row is backfilled
    led.write_text("")
    ledger.record("sst2", "test", split_hash, n=5, model="m1", method="caa", rule_set="other0000")
    assert {x["method"] for x in ledger_backfill.backfill(tmp_path, led, ref=None, dry_run=True)} == {"caa", "pca"}


def test_backfill_names_a_bad_ref(tmp_path, led):
    with pytest.raises(ValueError, match="cannot list"):
        ledger_backfill.backfill(tmp_path, led, ref="nope")


def test_split_section_counts_rule_sets_per_split_and_marks_exploratory_ones(led):
    for rs in ("r1", "r2", "r2"):
        ledger.record("a", "test", "h", n=1, model="m", rule_set=rs)
    ledger.record("b", "test", "h", n=1, model="m", rule_set="r1")
    ledger.record("b", "confirm", "h", n=1, model="m", rule_set="r9")
    text = ledger.split_section(["b", "a", "c", "a"], "test")
    rows = [x for x in text.splitlines() if x.startswith("| ") and not x.startswith("| dataset")]
    assert rows == ["| a | 2 | 3 | exploratory |", "| b | 1 | 1 | single rule set |", "| c | 0 | 0 | no line in the ledger |"]
    assert "| b | 1 | 1 | single rule set |" in ledger.split_section(["b"], "confirm")


def test_cli_summary(led, capsys):
    ledger.record("a", "test", "h", n=1, model="m", rule_set="r")
    assert ledger.main(["summary"]) == 0
    assert "| a | test | 1 | 1 |" in capsys.readouterr().out


def test_fast_benchmarks_write_a_scratch_ledger(monkeypatch):
    """Benchmarks in --fast mode (tiny random models) never append to results/ledger.jsonl."""
    import importlib.util
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("_common", root / "benchmarks" / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    monkeypatch.delenv("STEER_LENS_LEDGER", raising=False)
    common.setup(type("A", (), {"threads": 1, "fast": True})())
    path = Path(os.environ["STEER_LENS_LEDGER"])
    assert path.name == "ledger.jsonl" and root not in path.parents
    monkeypatch.setenv("STEER_LENS_LEDGER", "/x/kept.jsonl")
    common.scratch_ledger()
    assert os.environ["STEER_LENS_LEDGER"] == "/x/kept.jsonl"
