"""Task-tuned experts (steer_lens.finetune) on tiny random models: the answer-token loss, learning
a planted task, frozen embeddings, the saved folder (same logits through load_model) and the cache."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from cli_run import cli
from steer_lens.data import Item, MCDataset
from steer_lens.evaluate import evaluate
from steer_lens.experts import build_expert, expert_folder
from steer_lens.finetune import (FinetuneSettings, answer_batch, answer_loss, choice_loss, finetune, training_items,
                                 _text_side)
from steer_lens.models import load_hf, load_model
from steer_lens.tokens import encode_all



def _planted(n: int, seed: int, prefix: str) -> list[Item]:
    """The first letter of the sentence decides the answer: 'k...' -> " yes", 'q...' -> " no"."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        first = rng.choice("kq")
        word = first + "".join(rng.choice("abcdefghij") for _ in range(4))
        answer = int(first == "q")
        # the right choice sits at a random position, so always picking one position is chance
        choices = ["yes", "no"] if rng.random() < 0.5 else ["no", "yes"]
        out.append(Item(f"{prefix}{i}", f"{word}?", choices, choices.index("no" if answer else "yes"),
                        "general", "planted"))
    return out


@pytest.fixture(scope="module")
def planted():
    return MCDataset("planted", {"train": _planted(96, 0, "tr"), "validation": _planted(24, 1, "va"),
                                 "test": _planted(48, 2, "te")})


def test_answer_loss_equals_full_logits_reference(tiny_dir, one_thread):
    """The truncated-logits loss equals cross-entropy read off full-sequence HF logits of each
    (prompt + answer) row run alone, without padding."""
    hf, tok, name = load_hf(tiny_dir["gemma3"])
    text = _text_side(hf, tok, name)
    rows = [("Sentence: fine\nAnswer:", " positive"), ("Q?\nAnswer:", " no"), ("Longer prompt here", " ab c")]
    encoded = encode_all(text, rows)
    with torch.no_grad():
        got = answer_loss(hf, answer_batch(text, encoded))
        nll, count = 0.0, 0
        for ids, start in encoded:
            logits = hf(torch.tensor([ids])).logits[0]
            lp = torch.log_softmax(logits[start - 1:-1].float(), -1)
            nll -= lp.gather(-1, torch.tensor(ids[start:])[:, None]).sum().item()
            count += len(ids) - start
    assert got.item() == pytest.approx(nll / count, rel=1e-4)


def test_choice_loss_equals_cross_entropy_of_evaluation_scores(tiny_dir, one_thread):
    """The choice objective is the cross-entropy of exactly the scores evaluation ranks: per item,
    softmax over its choices' mean log-prob per completion token (steer_lens.evaluate.score_items on
    the bridged model), including items with different numbers of choices and choice lengths."""
    from steer_lens.evaluate import score_items

    items = [Item("a", "What is 12 + 30?", ["42", "43"], 0, "math", "t"),
             Item("b", "Pick one", ["red", "a long green one", "blue"], 2, "general", "t"),
             Item("c", "Sentence: fine", ["positive", "negative"], 1, "general", "t")]
    hf, tok, name = load_hf(tiny_dir["gemma3"])
    text = _text_side(hf, tok, name)
    encoded = [e for it in items for e in encode_all(text, [(it.prompt(), c) for c in it.completions()])]
    with torch.no_grad():
        got = choice_loss(hf, answer_batch(text, encoded), [len(it.choices) for it in items],
                          [it.answer for it in items])
        ref = []
        for it, (sums, counts) in zip(items, score_items(load_model(tiny_dir["gemma3"]), items)):
            means = torch.tensor([s / c for s, c in zip(sums, counts)])
            ref.append(-torch.log_softmax(means, 0)[it.answer])
    assert got.item() == pytest.approx(torch.stack(ref).mean().item(), rel=1e-4)
    with pytest.raises(ValueError, match="objective must be one of"):
        FinetuneSettings(objective="margin")


def test_choice_objective_learns_a_last_token_task(tiny_dir, one_thread):
    """Choices that share every token but the last (like '1302' / '1304'): the choice objective
    learns which last token the first letter of the question asks for."""
    def rows(n, seed, prefix):
        rng = random.Random(seed)
        out = []
        for i in range(n):
            first = rng.choice("kq")
            word = first + "".join(rng.choice("abcdefghij") for _ in range(4))
            pair = ["red cat", "red dog"] if rng.random() < 0.5 else ["red dog", "red cat"]
            out.append(Item(f"{prefix}{i}", f"{word}?", pair, pair.index("red dog" if first == "q" else "red cat"),
                            "general", "planted"))
        return out

    ds = MCDataset("last_token", {"train": rows(96, 0, "tr"), "test": rows(48, 2, "te")})
    base = load_model(tiny_dir["llama"])
    before = evaluate(base, ds, split="test").accuracy
    res = finetune(tiny_dir["llama"], ds, FinetuneSettings(steps=40, lr=3e-3, batch_size=16, objective="choice"),
                   log=None)
    # ln 2 = 0.69 at chance; the 8 (character) tokens of a choice share one decisive token, so the
    # mean-per-token score difference, and with it the loss, moves slowly
    assert sum(res.losses[-5:]) / 5 < sum(res.losses[:5]) / 5 - 0.2
    after = evaluate(load_model(_save(res, tiny_dir)), ds, split="test").accuracy
    assert before <= 0.7 and after >= 0.9, (before, after)


def test_training_rows_default_to_train_plus_extra():
    from steer_lens.data import load_dataset

    ds = load_dataset("sst2")
    items, splits = training_items(ds)
    assert splits == ("train", "train_extra") and len(items) == len(ds.split("train")) + len(ds.split("train_extra"))
    small, _ = training_items(ds, ["train"], limit=50, seed=3)
    assert len(small) == 50 and small == training_items(ds, ["train"], limit=50, seed=3)[0]
    with pytest.raises(KeyError, match="no split"):
        training_items(ds, ["dev"])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        FinetuneSettings(steps=0)


def test_finetune_learns_a_planted_task_and_freezes_embeddings(tiny_dir, planted, one_thread):
    base = load_model(tiny_dir["llama"])
    before = evaluate(base, planted, split="test").accuracy
    settings = FinetuneSettings(steps=40, lr=3e-3, batch_size=16, warmup=0.1)
    res = finetune(tiny_dir["llama"], planted, settings, log=None)
    assert res.rows == 96 and res.splits == ("train",) and len(res.losses) == 40
    assert sum(res.losses[-5:]) / 5 < sum(res.losses[:5]) / 5 - 0.5  # nats per answer token
    ref, _, _ = load_hf(tiny_dir["llama"])
    emb = res.hf.get_input_embeddings().weight
    assert torch.equal(emb, ref.get_input_embeddings().weight)  # frozen (and the tied head with it)
    assert res.hf.get_output_embeddings().weight is emb
    moved = [n for (n, p), q in zip(res.hf.named_parameters(), ref.parameters()) if not torch.equal(p, q)]
    assert moved and all("embed" not in n and "lm_head" not in n for n in moved)
    assert res.frozen_params == emb.numel()
    after = evaluate(load_model(_save(res, tiny_dir)), planted, split="test").accuracy
    assert before <= 0.7 and after >= 0.9, (before, after)


def _save(res, tiny_dir):
    import tempfile

    folder = tempfile.mkdtemp(prefix="tuned_")
    res.hf.save_pretrained(folder)
    res.tokenizer.save_pretrained(folder)
    return folder


def test_saved_expert_loads_with_same_logits_and_is_cached(tiny_dir, planted, tmp_path, one_thread, monkeypatch):
    settings = FinetuneSettings(steps=6, lr=1e-3, batch_size=8, seed=1)
    folder, card, reused = build_expert(tiny_dir["gemma3"], planted, settings, root=tmp_path, log=None)
    assert not reused and folder == expert_folder(tiny_dir["gemma3"], planted, settings, tmp_path)
    assert folder.name.startswith(f"{tiny_dir['gemma3'].name}-planted-")
    assert json.loads((folder / "expert_card.json").read_text()) == card
    assert card["rows"] == 96 and card["settings"]["steps"] == 6 and card["base_model"] == tiny_dir["gemma3"].name
    assert set(card["accuracy"]) == {"train", "validation", "test"} and card["accuracy"]["test"]["n"] == 48
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
    # the bridge over the saved folder gives the in-memory tuned model's logits
    res = finetune(tiny_dir["gemma3"], planted, settings, log=None)
    bridge = load_model(folder)
    tokens = torch.tensor([[1, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        assert torch.allclose(bridge(tokens), res.hf(tokens).logits, atol=1e-5)
    assert card["accuracy"]["test"]["accuracy"] == pytest.approx(evaluate(bridge, planted, split="test").accuracy, abs=1e-4)
    # same settings: reused without training; other settings: another folder
    monkeypatch.setattr("steer_lens.finetune.finetune", lambda *a, **k: pytest.fail("retrained"))
    again, card2, reused = build_expert(tiny_dir["gemma3"], planted, settings, root=tmp_path, log=None)
    assert reused and again == folder and card2 == card
    assert expert_folder(tiny_dir["gemma3"], planted, FinetuneSettings(steps=7, lr=1e-3, batch_size=8, seed=1),
                         tmp_path) != folder


def test_cli_finetune_fast(tmp_path):
    res = cli("finetune", "--fast", "--dataset", "sst2", "--root", tmp_path / "experts", "--json",
              "--card-copy", tmp_path / "cards" / "tiny-sst2.json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert not info["reused"] and (tmp_path / "experts").is_dir()
    assert json.loads((tmp_path / "cards" / "tiny-sst2.json").read_text()) == info["card"]
    assert info["card"]["settings"]["steps"] == 8 and info["card"]["dataset"] == "sst2"
    again = cli("finetune", "--fast", "--dataset", "sst2", "--root", tmp_path / "experts", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["reused"]
    bad = cli("finetune", "--model", "no-such-model", "--dataset", "sst2")
    assert bad.returncode != 0 and "steer-lens: error:" in bad.stderr and "Traceback" not in bad.stderr
    bad_device = cli("finetune", "--fast", "--dataset", "sst2", "--root", tmp_path / "e2", "--device", "tpu9")
    assert bad_device.returncode != 0 and "device" in bad_device.stderr and "Traceback" not in bad_device.stderr
    # the experts table (analyses/tuned_experts.py) lists it with the command that rebuilds it
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).parents[2] / "analyses"))
    try:
        tuned_experts = importlib.import_module("tuned_experts")
    finally:
        sys.path.pop(0)

    def tables(*extra) -> str:
        """Run analyses/tuned_experts.py (its main) on this test's cards; the steering README's text."""
        tuned_experts.main(list(map(str, ["--cards", tmp_path / "cards", "--out", tmp_path / "experts.md", *extra])))
        return (tmp_path / "README.md").read_text()

    readme = tables()
    text = (tmp_path / "experts.md").read_text()
    assert "| tiny-sst2 | target | sst2 | 32 (train+train_extra) | 8 x 4 |" in text
    assert "--dataset sst2 --steps 8 --batch-size 4 --lr 0.001 --seed 0 --train-limit 32" in text
    assert "no expert has been run through the main protocol yet" in readme
    # README.md: the expert's own rows next to the target-only rows of the main run
    head = "dataset,method,accuracy,ci_low,ci_high,n,layers,strength,model,val_accuracy,p_mcnemar_vs_unsteered,pred_share"
    (tmp_path / "tiny-sst2-0123456789").mkdir()
    (tmp_path / "tiny-sst2-0123456789" / "main_results.csv").write_text(
        head + "\nsst2,expert_unsteered,0.8,0.7,0.9,10,,0.0,tiny-sst2,,1.0,0.5\n"
        "sst2,expertsteer_label,0.7,0.6,0.8,10,14,0.3,target,0.65,0.01,0.5\n")
    (tmp_path / "base.csv").write_text(head + "\nsst2,unsteered,0.5,0.4,0.6,10,,0.0,target,,1.0,1.0\n"
                                       "sst2,expert_unsteered,0.6,0.5,0.7,10,,0.0,base-expert,,1.0,0.5\n"
                                       "sst2,expertsteer_autoencoder,0.64,0.5,0.7,10,18 20,0.2,target,0.6,0.01,0.5\n")
    steering = tables("--base-csv", tmp_path / "base.csv").split("## The experts")[0]
    lines = [x for x in steering.splitlines() if x.startswith("| tiny-sst2 |")]
    # the main run's target-only rows fill in; its expert-dependent rows (the base expert's) never do
    assert [x.split(" | ")[3] for x in lines] == ["expert_unsteered", "unsteered", "expertsteer_label"]
    assert "0.800 [0.700, 0.900]" in lines[0] and "tiny-sst2" in lines[0]  # the tuned expert, not the base one
    # a row the tuned expert has in the main folder is followed by the base expert's, paired
    with (tmp_path / "tiny-sst2-0123456789" / "main_results.csv").open("a") as f:
        f.write("sst2,expertsteer_autoencoder,0.6,0.5,0.7,10,18 20,0.2,target,0.6,0.01,0.5\n")
    steering = tables("--base-csv", tmp_path / "base.csv").split("## The experts")[0]
    lines = [x.split(" | ") for x in steering.splitlines() if x.startswith("| tiny-sst2 |")]
    assert [(x[3], x[5][:5]) for x in lines][-2:] == [("expertsteer_autoencoder", "0.600"),
                                                       ("expertsteer_autoencoder (base expert)", "0.640")]
    # a run with --expert-layers 2 3: its rows, then the base expert's rows in the same window
    for folder, acc in ((tmp_path / "tiny-sst2-0123456789" / "expert_layers_2_3", "0.55"),
                        (tmp_path / "expert_layers_2_3", "0.66")):
        folder.mkdir()
        (folder / "main_results.csv").write_text(head + f"\nsst2,expertsteer_label,{acc},0.5,0.7,10,3,0.3,target,,0.5,0.5\n")
    steering = tables("--base-csv", tmp_path / "base.csv").split("## The experts")[0]
    window = [x.split(" | ") for x in steering.splitlines() if x.startswith("| tiny-sst2 | 2-3 |")]
    assert [(x[3], x[5][:5]) for x in window] == [("expertsteer_label", "0.550"),
                                                   ("expertsteer_label (base expert)", "0.660")]
    assert window[1][-1] == " |"  # no per-item record (items.json): no paired comparison
    # with per-item records (main_report's items.json) the base row carries tuned - base, paired:
    # 10 items, tuned right on 0-5, base right on 0-1 and 6 -> +0.3, 4 items only tuned, 1 only base
    ids = [f"i{k}" for k in range(10)]
    for folder, right in ((tmp_path / "tiny-sst2-0123456789" / "expert_layers_2_3", range(6)),
                          (tmp_path / "expert_layers_2_3", (0, 1, 6))):
        (folder / "items.json").write_text(json.dumps({"sst2": {"expertsteer_label": {
            "ids": ids, "correct": [k in right for k in range(10)]}}}))
    window = [x.split(" | ") for x in tables("--base-csv", tmp_path / "base.csv").splitlines()
              if x.startswith("| tiny-sst2 | 2-3 |")]
    # a family of one comparison: its BH-adjusted p is its raw p
    assert window[0][-1] == " |" and window[1][-1].startswith("+0.300 [") and window[1][-1].endswith(
        "p = 0.375 (4 vs 1), BH 0.375 |"), window[1][-1]
    # a second paired comparison (the main folder's auto-encoder rows): BH over both, as statsmodels adjusts
    from statsmodels.stats.multitest import multipletests

    from steer_lens.evaluate import mcnemar

    tuned_ae, base_ae = [k < 9 for k in range(10)], [k < 2 for k in range(10)]
    for folder, right in ((tmp_path / "tiny-sst2-0123456789", tuned_ae), (tmp_path, base_ae)):
        (folder / "items.json").write_text(json.dumps({"sst2": {"expertsteer_autoencoder": {
            "ids": ids, "correct": right}}}))
    rows = [x.split(" | ") for x in tables("--base-csv", tmp_path / "base.csv").splitlines()
            if x.startswith("| tiny-sst2 |") and "(base expert)" in x]
    raw = [mcnemar(tuned_ae, base_ae)["p"], 0.375]
    adjusted = multipletests(raw, method="fdr_bh")[1]
    assert [float(r[-1].split("BH ")[1].rstrip(" |")) for r in rows] == pytest.approx(list(adjusted), rel=1e-2)
    assert adjusted[0] > raw[0]
    for folder in (tmp_path / "tiny-sst2-0123456789", tmp_path):
        (folder / "items.json").unlink()
    # the same window searched with --extend-flat: listed apart, after the window's own rows
    flat = tmp_path / "tiny-sst2-0123456789" / "expert_layers_2_3" / "extend_flat"
    flat.mkdir()
    (flat / "main_results.csv").write_text(head + "\nsst2,expertsteer_label,0.61,0.5,0.7,10,3,1.0,target,,0.5,0.5\n")
    lines = [x.split(" | ") for x in tables("--base-csv", tmp_path / "base.csv").splitlines()
             if x.startswith("| tiny-sst2 | 2-3")]
    assert [(x[1], x[3], x[5][:5]) for x in lines] == [("2-3", "expertsteer_label", "0.550"),
                                                        ("2-3", "expertsteer_label (base expert)", "0.660"),
                                                        ("2-3, extend-flat search", "expertsteer_label", "0.610")]
    # the base model run as the expert itself (--expert target): its window is the base row, not the main run's
    own = tmp_path / "target" / "expert_layers_2_3"
    own.mkdir(parents=True)
    (own / "main_results.csv").write_text(head + "\nsst2,expertsteer_label,0.70,0.5,0.8,10,3,0.3,target,,0.5,0.5\n")
    text = tables("--base-csv", tmp_path / "base.csv")
    lines = [x.split(" | ") for x in text.splitlines() if x.startswith("| tiny-sst2 | 2-3 |")]
    assert [(x[3], x[5][:5]) for x in lines] == [("expertsteer_label", "0.550"),
                                                  ("expertsteer_label (base expert)", "0.700")]
    assert not [x for x in text.splitlines() if x.startswith("| target |")]  # not listed as an expert of its own


def test_train_layers_trains_only_the_top_blocks(tiny_dir, planted, one_thread):
    res = finetune(tiny_dir["gemma3"], planted, FinetuneSettings(steps=2, lr=1e-3, batch_size=8, train_layers=1),
                   log=None)
    ref, _, _ = load_hf(tiny_dir["gemma3"])
    moved = {n for (n, p), q in zip(res.hf.named_parameters(), ref.parameters()) if not torch.equal(p, q)}
    assert moved and all(n.startswith("model.layers.2.") or n == "model.norm.weight" for n in moved), moved
    with pytest.raises(ValueError, match="has 3 blocks"):
        finetune(tiny_dir["gemma3"], planted, FinetuneSettings(steps=1, train_layers=4), log=None)


def test_cache_keys_of_existing_experts_are_unchanged_and_dtype_is_part_of_the_key():
    """The committed cards' experts keep their cache folders (settings added later default out of the
    key), and another dtype is another expert."""
    import dataclasses

    from steer_lens.experts import expert_folder
    from steer_lens.finetune import FinetuneSettings

    root = Path(__file__).resolve().parents[2] / "results" / "tuned_experts" / "cards"
    card = json.loads((root / "gemma-3-270m-sst2.json").read_text())
    settings = FinetuneSettings(**{k: v for k, v in card["settings"].items()})
    folder = expert_folder(card["base_model"], card["dataset"], settings)
    assert folder.name == "gemma-3-270m-sst2-da2e015fa406"  # the folder it was built into (its log)
    other = expert_folder(card["base_model"], card["dataset"], dataclasses.replace(settings, dtype="bfloat16"))
    assert other.name != folder.name
    choice = expert_folder(card["base_model"], card["dataset"], dataclasses.replace(settings, objective="choice"))
    assert choice.name not in (folder.name, other.name)
    with pytest.raises(ValueError, match="dtype must be"):
        FinetuneSettings(dtype="int8")


def test_interrupted_build_resumes_to_the_weights_of_an_uninterrupted_run(tiny_dir, planted, tmp_path, one_thread):
    from steer_lens.experts import checkpoint_path

    settings = FinetuneSettings(steps=6, lr=1e-3, batch_size=8, seed=2, warmup=0.5)
    full = finetune(tiny_dir["llama"], planted, settings, log=None)

    class Interrupted(Exception):
        pass

    def stop_at_step_5(message: str) -> None:
        if message.startswith("step") and "    5/6" in message:
            raise Interrupted

    folder = expert_folder(tiny_dir["llama"], planted, settings, tmp_path)
    ckpt = checkpoint_path(folder)
    with pytest.raises(Interrupted):  # killed after step 5; the last checkpoint is step 4's
        finetune(tiny_dir["llama"], planted, settings, log=stop_at_step_5, log_every=1, checkpoint=ckpt,
                 checkpoint_every=2)
    assert torch.load(ckpt, weights_only=True)["step"] == 4 and not folder.exists()
    with pytest.raises(ValueError, match="another run"):  # other settings never continue this run
        finetune(tiny_dir["llama"], planted, FinetuneSettings(steps=6, lr=2e-3, batch_size=8, seed=2, warmup=0.5),
                 log=None, checkpoint=ckpt)
    messages: list[str] = []
    folder2, card, reused = build_expert(tiny_dir["llama"], planted, settings, root=tmp_path, log=messages.append,
                                         eval_base=False, checkpoint_every=2)
    assert folder2 == folder and not reused
    assert any(m.startswith("resuming from") and "after step 4" in m for m in messages)
    assert not ckpt.exists() and not list(tmp_path.glob(".*"))  # deleted once the expert is saved
    assert card["loss_every_10_steps"] == [round(sum(full.losses) / 6, 4)]  # steps 1-4 restored, 5-6 rerun
    resumed, _, _ = load_hf(folder)
    for (name, p), q in zip(full.hf.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name


def test_resumed_build_scores_the_base_once_and_keeps_its_checkpoint_where_asked(tiny_dir, planted, tmp_path,
                                                                              one_thread, monkeypatch):
    import steer_lens.experts as experts

    settings = FinetuneSettings(steps=4, lr=1e-3, batch_size=8, seed=3, warmup=0.5)
    scored: list[int] = []
    real = experts._accuracy
    monkeypatch.setattr(experts, "_accuracy", lambda model, items, *a: scored.append(len(items)) or real(model, items, *a))

    class Interrupted(Exception):
        pass

    def stop_at_step_4(message: str) -> None:  # build_expert logs the last step; the checkpoint is step 2's
        if message.startswith("step") and "    4/4" in message:
            raise Interrupted

    keep = tmp_path / "persistent" / "ckpts"  # created on demand
    with pytest.raises(Interrupted):
        experts.build_expert(tiny_dir["llama"], planted, settings, root=tmp_path / "experts", log=stop_at_step_4,
                             eval_limit=4, train_eval=4, checkpoint_every=2, checkpoint_dir=keep)
    folder = expert_folder(tiny_dir["llama"], planted, settings, tmp_path / "experts")
    assert experts.checkpoint_path(folder, keep).exists() and scored == []  # nothing scored before training ends
    messages: list[str] = []
    _, card, reused = experts.build_expert(tiny_dir["llama"], planted, settings, root=tmp_path / "experts",
                                           log=messages.append, eval_limit=4, train_eval=4, checkpoint_dir=keep)
    assert not reused and any(m.startswith("resuming from") and "after step 2" in m for m in messages)
    base_runs = [m for m in messages if m.startswith("base ")]
    assert len(base_runs) == 1 and card["base_validation"] is not None
    assert list(keep.iterdir()) == []  # deleted once the expert is saved
