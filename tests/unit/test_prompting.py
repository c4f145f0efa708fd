"""Prompting baselines (steer_lens.prompting, steer_lens.methods.prompting): k-shot examples as chat turns
(plain text without a chat template), drawn from train only and seeded; a zero-shot instruction; the
baseline rows through the runner, paired with the unsteered row; fine-tuning the target."""

import json
from collections import Counter

import pytest

from steer_lens import ledger
from steer_lens import methods as M
from steer_lens.bench import Bench
from steer_lens.data import Item, MCDataset, load_dataset
from steer_lens.evaluate import evaluate
from steer_lens.finetune import FinetuneSettings
from steer_lens.prompting import (DEFAULT_INSTRUCTION, ChatPrompt, PromptedItem, few_shot_examples,
                                  instructed_item, instruction_for, kshot_item, prompted_dataset)
from steer_lens.tokens import encode, format_prompt

from test_methods import _dataset_folder, _items

RULES = M.RuleSet.fast()


def _split(prefix, n, question=lambda i: f"{i} + {i} ="):
    return [Item(id=f"{prefix}{i}", question=question(i), choices=[str(2 * i), str(2 * i + 1)], answer=i % 2)
            for i in range(n)]


def test_examples_are_seeded_balanced_and_never_an_excluded_item():
    train = _split("t", 30)
    a = few_shot_examples(train, 4, seed=0)
    assert [x.id for x in a] == [x.id for x in few_shot_examples(train, 4, seed=0)]  # same seed, same examples
    assert [x.id for x in a] != [x.id for x in few_shot_examples(train, 4, seed=1)]  # another seed, others
    for seed in range(5):
        assert Counter(x.answer for x in few_shot_examples(train, 4, seed=seed)) == {0: 2, 1: 2}
        assert len({x.id for x in few_shot_examples(train, 8, seed=seed)}) == 8
    # excluded by id, and by text whatever the id
    ex = few_shot_examples(train, 20, seed=0, exclude_ids=[f"t{i}" for i in range(5)],
                           exclude=[Item("other", "7 + 7 =", ["14", "15"], 0)])
    assert not {x.id for x in ex} & {"t0", "t1", "t2", "t3", "t4", "t7"}
    three_way = [Item(f"m{i}", f"q{i}", ["a", "b", "c"], i % 3) for i in range(3)] + _split("x", 6)
    assert Counter(x.answer for x in few_shot_examples(three_way, 3, seed=0)) == {0: 1, 1: 1, 2: 1}
    with pytest.raises(ValueError, match="only 2 train items remain"):
        few_shot_examples(train[:4], 3, exclude=train[:2])


def test_kshot_examples_are_chat_turns_in_order(tiny_llama):
    train, item = _split("t", 10), Item("q", "5 + 5 =", ["10", "11"], 0, context="Arithmetic.")
    ex = few_shot_examples(train, 4, seed=3)
    p = kshot_item(item, ex)
    assert isinstance(p, PromptedItem) and p.id == "q" and p.completions() == item.completions()
    assert p.shot_ids == tuple(x.id for x in ex)
    prompt = p.prompt()
    assert isinstance(prompt, ChatPrompt) and prompt.last == item.prompt()
    prefix, completion = format_prompt(tiny_llama, (prompt, " 10"), chat=True)
    turns = "".join(f"<|user|>{x.question}\nAnswer:<eos><|assistant|> {x.choices[x.answer]}<eos>" for x in ex)
    assert prefix == f"{turns}<|user|>Arithmetic.\n\n5 + 5 =\nAnswer:<eos><|assistant|>" and completion == " 10"
    # what evaluation scores: those tokens, then the completion's
    ids, start = encode(tiny_llama, (prompt, " 10"), chat=True)
    assert ids == tiny_llama.tokenizer(prefix + " 10", add_special_tokens=False)["input_ids"]
    assert start == len(ids) - 3
    # a plain item still makes one user turn
    assert format_prompt(tiny_llama, item.prompt(), chat=True)[0] == (
        "<|user|>Arithmetic.\n\n5 + 5 =\nAnswer:<eos><|assistant|>")
    with pytest.raises(ValueError, match="its own example"):
        kshot_item(train[0], train[:3])


def test_without_a_chat_template_the_examples_are_plain_text_before_the_question(tiny_gemma):
    train = _split("t", 10)
    ab = Item("ab", "Pick one\n (A) yes\n (B) no", ["A", "B"], 1, format="ab")
    ex = few_shot_examples(train, 2, seed=0) + [Item("abx", "Or\n (A) x\n (B) y", ["A", "B"], 0, format="ab")]
    prompt = kshot_item(ab, ex).prompt()
    shots = "".join(f"{x.question}\nAnswer: {x.choices[x.answer]}\n\n" for x in ex[:2])
    assert prompt == shots + "Or\n (A) x\n (B) y (A)\n\nPick one\n (A) yes\n (B) no"
    prefix, _ = format_prompt(tiny_gemma, (prompt, " (B"), chat=False)
    assert prefix == str(prompt)
    ids, _ = encode(tiny_gemma, (prompt, " (B"), chat=False)
    assert ids[0] == tiny_gemma.tokenizer.bos_token_id  # the model's BOS rule, once, before the examples


def test_zero_shot_instruction_comes_first():
    item = Item("q", "5 + 5 =", ["10", "11"], 0, context="Arithmetic.")
    assert instructed_item(item).prompt() == f"{DEFAULT_INSTRUCTION}\n\nArithmetic.\n\n5 + 5 =\nAnswer:"
    assert instructed_item(item, "Add.").plain() == item
    assert instruction_for(MCDataset("d", {}, {"instruction": "Add the numbers."})) == "Add the numbers."
    assert instruction_for(MCDataset("d", {}, {})) == DEFAULT_INSTRUCTION


def test_prompted_dataset_draws_from_train_only_even_when_ids_collide():
    # train ids equal the test ids; one train question is a test question
    train = _split("q", 12, question=lambda i: f"train {i} ?")
    train[5] = Item("q5", "test 1 ?", ["a", "b"], 1)
    test = _split("q", 6, question=lambda i: f"test {i} ?")
    val = _split("v", 4, question=lambda i: f"val {i} ?")
    ds = MCDataset("collide", {"train": train, "validation": val, "test": test})
    p = prompted_dataset(ds, 4, seed=0)
    shots = p.metadata["prompting"]["shots"]
    assert len(shots) == 4 and not set(shots) & {it.id for it in test}  # colliding ids left out
    assert all(q.startswith("train") for q, _ in p.splits["test"][0].shots)
    for split in ("validation", "test"):
        assert [it.id for it in p.splits[split]] == [it.id for it in ds.splits[split]]
        assert all(it.shot_ids == tuple(shots) for it in p.splits[split])
    # train items carry the same examples, except the examples themselves (k others, never themselves)
    for it in p.splits["train"]:
        assert it.id not in it.shot_ids and len(it.shot_ids) == 4
        assert (it.shot_ids == tuple(shots)) == (it.id not in shots)
    assert prompted_dataset(ds, 4, seed=0).splits == p.splits
    assert prompted_dataset(ds, 4, seed=1).metadata["prompting"]["shots"] != shots


def test_prompted_test_items_stay_in_the_ledger_and_confirm_stays_locked(tiny_llama, tmp_path, monkeypatch,
                                                                          one_thread):
    monkeypatch.setenv("STEER_LENS_LEDGER", str(tmp_path / "ledger.jsonl"))
    ds = load_dataset("arithmetic_2way")
    p = prompted_dataset(ds, 2, seed=0)
    evaluate(tiny_llama, p.splits["test"][:2])
    line = ledger.read(tmp_path / "ledger.jsonl")[-1]
    assert (line["dataset"], line["split"], line["n"]) == ("arithmetic_2way", "test", 2)
    with pytest.raises(ledger.ConfirmLockedError):
        evaluate(tiny_llama, p.splits["confirm"][:2])


def test_prompting_rows_pair_with_the_unsteered_row(tiny_llama, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("STEER_LENS_LEDGER", str(tmp_path / "ledger.jsonl"))
    data = _dataset_folder(tmp_path / "mine")
    names = ["unsteered", "zero_shot", "kshot_4", "kshot_8", "kshot_4_label_caa", "random_kshot_4_label_caa"]
    bench = Bench(tiny_llama, None, cache=tmp_path / "cache", rules=RULES, target_id="t")
    by = {r["method"]: r for r in bench.run([str(data)], names)}
    assert set(by) == set(names)
    ids = by["unsteered"]["ids"]
    assert len(ids) == 8 and all(by[m]["ids"] == ids for m in names)
    train_ids = {it.id for it in _items(20, "train")}
    for m, k in (("kshot_4", 4), ("kshot_8", 8), ("kshot_4_label_caa", 4), ("random_kshot_4_label_caa", 4)):
        assert len(by[m]["prompting"]["shots"]) == k and set(by[m]["prompting"]["shots"]) <= train_ids, m
    assert by["zero_shot"]["prompting"]["instruction"] == DEFAULT_INSTRUCTION
    assert by["kshot_4"]["correct"] != by["unsteered"]["correct"] or by["kshot_4"]["margins"] != by["unsteered"]["margins"]
    # prompt + steering: fitted and chosen on prompted items; its control at the same layers and strength
    steer, ctrl = by["kshot_4_label_caa"], by["random_kshot_4_label_caa"]
    assert M.control_of("kshot_4_label_caa") == "random_kshot_4_label_caa" and M.control_of("kshot_4") is None
    assert ctrl["matched_to"] == "kshot_4_label_caa" and ctrl["layers"] == steer["layers"]
    assert ctrl["strength"] == steer["strength"] and steer["val_curve"]
    if steer["strength"] == 0:  # no steering chosen: kshot_4's own row
        assert steer["correct"] == by["kshot_4"]["correct"]
    lines = ledger.read(tmp_path / "ledger.jsonl")
    assert {ln["method"] for ln in lines} >= {"kshot_4", "zero_shot"}
    # cached: the same rows again without recomputing
    again = Bench(tiny_llama, None, cache=tmp_path / "cache", rules=RULES, target_id="t").run([str(data)], names)
    assert [r["seconds"] for r in again] == [by[r["method"]]["seconds"] for r in again]


def test_prompt_plus_steering_fits_on_prompted_train_contrasts(tiny_llama, one_thread):
    ds = MCDataset("toy", {"train": _items(20, "train"), "validation": _items(6, "validation"),
                           "test": _items(8, "test")})
    ctx = M.Context(ds, tiny_llama, None, RULES)
    p = M.get("kshot_4_label_caa").context(ctx)
    assert p is M.get("kshot_4_label_caa").context(p)  # shared and not prompted twice
    pos, _ = p.contrast("label")
    assert all(isinstance(q, ChatPrompt) and len(q.turns) == 4 for q, _ in pos)
    assert [it.id for it in p.train] == [it.id for it in ctx.train]
    m = M.get("kshot_4_label_caa")
    assert m.candidates(ctx) is m.candidates(p)  # fitted once, on the prompted train contrasts
    assert ("contrast", "label") not in ctx._memo


def test_kshot_8_only_where_prompts_stay_short(tmp_path):
    long = [Item(f"t{i}", "word " * 120 + str(i), ["a", "b"], i % 2) for i in range(12)]
    ds = MCDataset("long", {"train": long, "validation": long[:0], "test": _split("x", 3)})
    assert M.get("kshot_4").applies(ds) and not M.get("kshot_8").applies(ds)
    assert M.get("kshot_8").applies(load_dataset(_dataset_folder(tmp_path / "short")))


def test_finetune_target_row_pairs_with_unsteered_and_reuses_the_tuned_weights(tiny_llama, tmp_path, monkeypatch,
                                                                               one_thread):
    monkeypatch.setenv("STEER_LENS_CACHE", str(tmp_path / "steer_cache"))
    monkeypatch.setenv("STEER_LENS_LEDGER", str(tmp_path / "ledger.jsonl"))
    method = M.get("finetune_target")
    assert method.settings == FinetuneSettings(train_splits=("train",))  # finetune's defaults, the train split
    monkeypatch.setattr(method, "settings", FinetuneSettings(steps=2, batch_size=4, train_splits=("train",)))
    data = _dataset_folder(tmp_path / "mine")
    import steer_lens.finetune as F
    from steer_lens.experts import checkpoint_path

    real, checkpoints = F.finetune, []
    monkeypatch.setattr(F, "finetune", lambda *a, **k: checkpoints.append(k["checkpoint"]) or real(*a, **k))
    bench = Bench(tiny_llama, None, cache=tmp_path / "cache", rules=RULES, target_id="t")
    by = {r["method"]: r for r in bench.run([str(data)], ["unsteered", "finetune_target", "finetune_target_extra"])}
    assert "finetune_target_extra" not in by  # no train_extra split
    row = by["finetune_target"]
    assert row["ids"] == by["unsteered"]["ids"] and row["finetune"]["rows"] == 20
    assert row["finetune"]["train_splits"] == ["train"] and row["finetune"]["steps"] == 2
    folders = list((tmp_path / "steer_cache" / "finetuned").iterdir())
    assert [f.name for f in folders] == [row["finetune"]["folder"]] and row["model"] == folders[0].name
    # trained with a checkpoint (an interrupted run resumes from it), deleted once the weights are saved
    assert checkpoints == [checkpoint_path(folders[0])] and not checkpoints[0].exists()
    card = json.loads((folders[0] / "finetune_card.json").read_text())
    # a second run with the row cache gone reuses the tuned weights
    for f in (tmp_path / "cache").rglob("*__finetune_target.json"):
        f.unlink()
    again = Bench(tiny_llama, None, cache=tmp_path / "cache", rules=RULES, target_id="t").row(str(data), "finetune_target")
    assert again["correct"] == row["correct"] and again["margins"] == pytest.approx(row["margins"])
    assert json.loads((folders[0] / "finetune_card.json").read_text()) == card
