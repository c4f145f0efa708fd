"""Bundled datasets and the JSONL loader (steer_lens.data)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from steer_lens.data import (BUNDLED_DIR, DOMAINS, Item, MCDataset, contrast_prompts, list_datasets,
                             load_dataset)

SOURCES_MD = Path(__file__).resolve().parents[2] / "data" / "SOURCES.md"
NAMES = list_datasets()


def _sources_table() -> dict[str, dict[str, int]]:
    text = SOURCES_MD.read_text(encoding="utf-8")
    block = text.split("<!-- sizes:start -->")[1].split("<!-- sizes:end -->")[0]
    out = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = {"train": int(cells[3]), "validation": int(cells[4]), "test": int(cells[5])}
        if int(cells[7]):  # train_extra: more training rows for fine-tuning, where the source has them
            out[cells[0]]["train_extra"] = int(cells[7])
        if int(cells[8]):  # confirm: fresh items scored only in a locked run
            out[cells[0]]["confirm"] = int(cells[8])
    return out


def _norm(it: Item) -> str:
    return re.sub(r"\s+", " ", f"{it.context or ''} || {it.question}").strip().lower()


def test_expected_datasets_are_bundled():
    expected = {"mmlu_medical_4way", "mmlu_medical_2way", "mmlu_finance_2way",
                "financial_phrasebank", "svamp_2way", "arithmetic_2way", "arc_easy", "sst2"}
    assert expected <= set(NAMES)
    assert set(NAMES) == set(_sources_table()), "SOURCES.md size table out of date"


@pytest.mark.parametrize("name", NAMES)
def test_bundled_dataset_is_consistent(name):
    ds = load_dataset(name)
    assert set(ds.splits) - {"train_extra", "confirm"} == {"train", "validation", "test"}
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sizes == _sources_table()[name] == ds.metadata["sizes"]
    assert 0 < sizes["test"] <= 500 and sizes["train"] >= 30
    items = [it for s in ds.splits.values() for it in s]
    assert len({it.id for it in items}) == len(items)
    assert {it.domain for it in items} <= set(DOMAINS)
    assert len({it.domain for it in items}) == 1 and len({it.format for it in items}) == 1
    train, test = {_norm(i) for i in ds.split("train")}, {_norm(i) for i in ds.split("test")}
    val = {_norm(i) for i in ds.split("validation")}
    assert not train & test and not val & test and not train & val
    if "train_extra" in ds.splits:
        extra = {_norm(i) for i in ds.split("train_extra")}
        assert len(extra) == len(ds.split("train_extra")) and not extra & (train | val | test)
    if "confirm" in ds.splits:  # fuller freshness checks: tests/unit/test_confirm.py
        confirm = {_norm(i) for i in ds.split("confirm")}
        others = {_norm(i) for s, items in ds.splits.items() if s != "confirm" for i in items}
        assert len(confirm) == len(ds.split("confirm")) and not confirm & others
    for split in ds.splits:
        rate = ds.majority_rate(split)
        assert rate == pytest.approx(ds.metadata["majority_rate"][split], abs=1e-4)
        balanced = split != "train_extra" or name != "financial_phrasebank"  # its negatives run out
        if ("2way" in name or name in ("financial_phrasebank", "sst2")) and balanced:
            assert 0.4 <= rate <= 0.6, (split, rate)
    assert (BUNDLED_DIR / name / "LICENSE").is_file()


def test_two_way_and_binary_items_have_two_distinct_choices():
    for name in NAMES:
        for it in load_dataset(name).split("test"):
            assert len(set(it.choices)) == len(it.choices) >= 2
            if "2way" in name:
                assert len(it.choices) == 2


def test_prompt_and_completions_formats():
    mc = Item("x", "What is 2 + 2?", ["4", "5"], 0, "math", "t", context="Some context.")
    assert mc.prompt() == "Some context.\n\nWhat is 2 + 2?\nAnswer:"
    assert mc.completions() == [" 4", " 5"]
    ab = Item("y", "Pick one.\n\nChoices:\n (A) yes\n (B) no", ["A", "B"], 1, "behaviour", "t", "ab")
    assert ab.prompt() == "Pick one.\n\nChoices:\n (A) yes\n (B) no"
    assert ab.completions() == [" (A", " (B"]
    assert isinstance(mc.choices, tuple) and hash(mc) == hash(Item(**{**mc.__dict__}))


def test_split_limit_is_seeded_subsample():
    ds = load_dataset("arithmetic_2way")
    a, b = ds.split("test", limit=20, seed=3), ds.split("test", limit=20, seed=3)
    assert a == b and len(a) == 20 and len({i.id for i in a}) == 20
    assert a != ds.split("test", limit=20, seed=4)
    full = ds.split("test")
    assert [i.id for i in a] == [i.id for i in full if i.id in {j.id for j in a}]
    assert ds.split("test", limit=10_000) == full
    with pytest.raises(KeyError, match="no split"):
        ds.split("dev")


def test_contrast_prompts_pairs_are_well_formed_and_deterministic():
    items = load_dataset("mmlu_medical_4way").split("train", limit=30)
    pos, neg = contrast_prompts(items, seed=0)
    assert len(pos) == len(neg) == len(items)
    for it, (pp, pc), (np_, nc) in zip(items, pos, neg):
        assert pp == np_ == it.prompt()
        assert pc == it.completions()[it.answer] and nc in it.completions() and nc != pc
    assert contrast_prompts(items, seed=0) == (pos, neg)
    assert contrast_prompts(items[::-1], seed=0)[1] == neg[::-1]  # per-item, order-independent
    assert contrast_prompts(items, seed=1)[1] != neg  # 3 wrong options: seed matters


def test_contrast_prompts_ab_items():
    ab = [n for n in NAMES if n.startswith("caa_")]
    assert ab, "the CAA behaviour datasets should be bundled"
    items = load_dataset(ab[0]).split("test", limit=5)
    pos, neg = contrast_prompts(items)
    for it, (_, pc), (_, nc) in zip(items, pos, neg):
        assert {pc, nc} == {" (A", " (B"} and pc == f" ({it.choices[it.answer]}"


GOOD = {"id": "a", "question": "Q?", "choices": ["x", "y"], "answer": 1, "domain": "general",
        "source": "unit", "format": "mc"}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("bad_line, message", [
    ('{"id": "b", "question": ', "malformed JSON"),
    ({k: v for k, v in GOOD.items() if k != "answer"} | {"id": "b"}, "missing field 'answer'"),
    (GOOD | {"id": "b", "answer": 2}, "answer index 2 out of range"),
    (GOOD | {"id": "b", "answer": "1"}, "field 'answer' must be int"),
    (GOOD | {"id": "b", "choices": ["only"], "answer": 0}, "'choices' has 1 entry"),
    (GOOD | {"id": "b", "domain": 3}, "field 'domain' must be str"),
    (GOOD | {"id": "b", "source": ["x"]}, "field 'source' must be str"),
    (GOOD | {"id": "b", "context": 1.5}, "field 'context' must be str"),
    (GOOD | {"id": "b", "format": 1}, "field 'format' must be str"),
    (GOOD | {"id": "b", "format": "open"}, "unknown format 'open'"),
    (GOOD | {"id": 7}, "field 'id' must be str"),
    (GOOD | {"id": "b", "answer": True}, "field 'answer' must be int"),
    (GOOD | {"id": "b", "answer": -1}, "answer index -1 out of range"),
    (GOOD | {"id": "b", "choices": ["x", 2]}, "every choice must be a string"),
    ({k: v for k, v in GOOD.items() if k != "question"} | {"id": "b"}, "missing field 'question'"),
    (GOOD | {"id": "b", "format": "ab"}, "single capital letters"),
    (GOOD, "duplicate id 'a'"),
])
def test_malformed_lines_name_file_line_and_fix(tmp_path, bad_line, message):
    path = _write(tmp_path / "bad.jsonl", [GOOD, bad_line])
    with pytest.raises(ValueError, match=re.escape(message)) as exc:
        load_dataset(path)
    text = str(exc.value)
    assert str(path) in text and "line 2" in text and "Fix:" in text


def test_user_jsonl_needs_only_id_question_choices_answer(tmp_path):
    """Own data: the four required fields suffice; domain/source are optional and free-form."""
    rows = [{"id": "q1", "question": "2 + 2 =", "choices": ["3", "4"], "answer": 1},
            {"id": "q2", "question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": 0,
             "domain": "geography", "source": None, "split": "train"}]
    ds = load_dataset(_write(tmp_path / "mine.jsonl", rows))
    (q1,), (q2,) = ds.split("test"), ds.split("train")
    assert (q1.id, q1.choices, q1.answer, q1.domain, q1.source, q1.format) == ("q1", ("3", "4"), 1, None, None, "mc")
    assert (q2.domain, q2.source, q2.choices[q2.answer]) == ("geography", None, "Paris")
    assert q1.prompt() == "2 + 2 =\nAnswer:" and q1.completions() == [" 3", " 4"]
    assert q1.to_dict() == rows[0] | {"format": "mc"}  # no invented domain/source on the way back
    assert load_dataset(_write(tmp_path / "again.jsonl", [q1.to_dict(), q2.to_dict()])).split("test") == [q1, q2]
    pos, neg = contrast_prompts([q1, q2])
    assert pos[1] == (q2.prompt(), " Paris") and neg[1][1] in (" Rome", " Oslo")


def test_duplicate_ids_across_split_files(tmp_path):
    _write(tmp_path / "train.jsonl", [GOOD])
    _write(tmp_path / "test.jsonl", [GOOD | {"id": "b"}, GOOD])
    with pytest.raises(ValueError, match=r"test\.jsonl, line 2: duplicate id 'a' \(first at .*train\.jsonl, line 1\)"):
        load_dataset(tmp_path)


def test_round_trip_single_file_and_folder(tmp_path):
    src = load_dataset("svamp_2way").split("validation", limit=7) + \
        load_dataset("sst2").split("train", limit=3)
    ctx = Item("ctx-1", "Q?", ["a", "b", "c"], 2, "general", "unit", context="C.")
    rows = [it.to_dict() | {"split": "validation"} for it in src] + [ctx.to_dict()]
    ds = load_dataset(_write(tmp_path / "mine.jsonl", rows))
    assert isinstance(ds, MCDataset) and ds.name == "mine"
    assert ds.split("validation") == src and ds.split("test") == [ctx]
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder / "test.jsonl", [it.to_dict() for it in src])
    assert load_dataset(folder).split("test") == src
    assert load_dataset(str(folder)).name == "folder"


def test_unknown_dataset_error_lists_names():
    with pytest.raises(ValueError, match="not a bundled name"):
        load_dataset("no_such_dataset")


def test_a_folder_is_parsed_once_until_a_file_changes(tmp_path, monkeypatch):
    """load_dataset parses a folder once per process: later loads equal the first, own their lists,
    and a changed file is parsed again."""
    import steer_lens.data as D

    def write(n):
        lines = [json.dumps({"id": f"q{i}", "question": f"Is {i} even?", "choices": ["yes", "no"], "answer": i % 2})
                 for i in range(n)]
        (tmp_path / "d" / "test.jsonl").write_text("\n".join(lines) + "\n")

    (tmp_path / "d").mkdir()
    write(4)
    first = load_dataset(tmp_path / "d")
    calls = []
    monkeypatch.setattr(D, "_read_jsonl", lambda *a: calls.append(a) or pytest.fail("parsed again"))
    second = load_dataset(tmp_path / "d")
    assert second.splits == first.splits and second.splits["test"] is not first.splits["test"]
    second.splits["test"].pop()
    assert len(load_dataset(tmp_path / "d").splits["test"]) == 4
    monkeypatch.undo()
    write(6)
    assert len(load_dataset(tmp_path / "d").splits["test"]) == 6
