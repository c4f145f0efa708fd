"""Task-tuned expert folders: cache key, evaluation, save and reuse (``build_expert``).

``steer_lens.finetune`` trains; this module decides where a tuned expert lives
(``cache_dir()/experts/<base>-<dataset>-<settings hash>``), evaluates the saved weights on train /
validation / test (``steer_lens.evaluate`` scoring), writes the folder atomically with an
``expert_card.json`` (base, data, settings, steps, wall/CPU time, accuracy) and reuses it when the same
settings ask for it again. ``load_model(folder)`` loads the result like any local HF model.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from .data import Item, MCDataset, load_dataset
from .finetune import OBJECTIVES, FinetuneResult, FinetuneSettings, _data_hash, finetune, training_items
from .io import atomic_dir, write_json
from .models import REGISTRY, cache_dir, load_model

CARD = "expert_card.json"
CARD_FORMAT = 1

def settings_key(base: str | os.PathLike, dataset: str | MCDataset, settings: FinetuneSettings,
                 data_sha256: str | None = None) -> str:
    """Hash of what determines the tuned weights: base model, dataset (and its rows), settings."""
    ident = str(base) if str(base) in REGISTRY else str(Path(base).expanduser().resolve())
    name = dataset if isinstance(dataset, str) else dataset.name
    fields = asdict(settings)
    for name_, default in (("dtype", "float32"), ("objective", "answer")):
        if fields[name_] == default:  # defaults of settings added later stay out of older keys
            del fields[name_]
    blob = json.dumps({"format": CARD_FORMAT, "base": ident, "dataset": str(name),
                       "data": data_sha256, "settings": fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def expert_folder(base: str | os.PathLike, dataset: str | MCDataset, settings: FinetuneSettings,
                  root: Path | None = None) -> Path:
    """Where ``build_expert`` keeps this expert: ``<root>/<base>-<dataset>-<hash>``."""
    ds = load_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    items, _ = training_items(ds, settings.train_splits, limit=settings.train_limit, seed=settings.seed)
    base_name = str(base) if str(base) in REGISTRY else Path(base).expanduser().name or "model"
    key = settings_key(base, ds.name, settings, _data_hash(items))
    return Path(root or cache_dir() / "experts") / f"{base_name}-{ds.name}-{key}"


def _accuracy(model, items: Sequence[Item], chat_template: bool | None = None) -> dict:
    from .evaluate import evaluate

    res = evaluate(model, items, chat_template=chat_template)
    return {"accuracy": round(res.accuracy, 4), "ci95": [round(res.ci_low, 4), round(res.ci_high, 4)],
            "n": res.n, "majority_rate": round(res.majority_rate, 4)}


def evaluate_splits(model, dataset: MCDataset, train_items: Sequence[Item], *, train_eval: int = 200,
                    eval_limit: int | None = None, seed: int = 0,
                    chat_template: bool | None = None) -> dict[str, dict]:
    """Accuracy (length-normalised scoring, ``steer_lens.evaluate``) on a seeded subsample of
    ``train_eval`` training rows, and on validation and test (all rows unless ``eval_limit``)."""
    idx = torch.randperm(len(train_items), generator=torch.Generator().manual_seed(seed))[:train_eval]
    out = {"train": _accuracy(model, [train_items[i] for i in sorted(idx.tolist())], chat_template)}
    for split in ("validation", "test"):
        if split in dataset.splits:
            out[split] = _accuracy(model, dataset.split(split, limit=eval_limit, seed=seed), chat_template)
    return out


def save_expert(result: FinetuneResult, folder: str | os.PathLike, *, dataset: MCDataset | None = None,
                train_eval: int = 200, eval_limit: int | None = None, base_validation: dict | None = None,
                log: Callable[[str], None] | None = print, device: str | None = None) -> dict:
    """Write the tuned model as a local HF folder (safetensors, config, tokenizer) plus
    ``expert_card.json``, atomically: the weights go to a temporary sibling, are reloaded with
    ``load_model`` and evaluated there, and the folder is renamed into place. Returns the card."""
    folder = Path(folder)
    ds = dataset or load_dataset(result.dataset)
    with atomic_dir(folder) as tmp:
        result.hf.save_pretrained(tmp, safe_serialization=True)
        result.tokenizer.save_pretrained(tmp)
        t0 = time.perf_counter()
        accuracy = evaluate_splits(load_model(tmp, device=device, dtype=result.settings.dtype), ds, result.items, train_eval=train_eval,
                                   eval_limit=eval_limit, seed=result.settings.seed,
                                   chat_template=result.settings.chat_template)
        eval_seconds = time.perf_counter() - t0
        losses = result.losses
        tail = losses[-min(len(losses), 20):]
        card = {
            "format": CARD_FORMAT, "base_model": result.base, "dataset": result.dataset,
            "train_splits": list(result.splits), "rows": result.rows, "data_sha256": result.data_sha256,
            "settings": asdict(result.settings),
            "objective": OBJECTIVES[result.settings.objective],
            "frozen": "input embeddings and LM head (tied)" + (
                f", blocks below the last {result.settings.train_layers}" if result.settings.train_layers else ""),
            "optimizer": "AdamW, linear warm-up/decay, clip 1.0",
            "trainable_params": result.trainable_params, "frozen_params": result.frozen_params,
            "train_seconds": round(result.train_seconds, 1),
            "train_cpu_seconds": round(result.train_cpu_seconds, 1), "eval_seconds": round(eval_seconds, 1),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.machine(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loss_first": round(losses[0], 4), "loss_last20_mean": round(sum(tail) / len(tail), 4),
            "loss_every_10_steps": [round(sum(losses[i:i + 10]) / len(losses[i:i + 10]), 4)
                                    for i in range(0, len(losses), 10)],
            "accuracy": accuracy,
            "scoring": "mean log-prob per answer token (steer_lens.evaluate), train = seeded "
                       f"subsample of {min(train_eval, result.rows)} training rows",
        }
        if base_validation is not None:
            card["base_validation"] = base_validation
        write_json(tmp / CARD, card)
    if log:
        acc = card["accuracy"]
        log(f"saved {folder}: accuracy " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in acc.items()))
    return card


def read_card(folder: str | os.PathLike) -> dict | None:
    """The expert card of a complete expert folder, or None."""
    path = Path(folder) / CARD
    if not (path.is_file() and (Path(folder) / "model.safetensors").is_file()):
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def build_expert(base: str | os.PathLike, dataset: str | MCDataset, settings: FinetuneSettings | None = None,
                 *, root: Path | None = None, force: bool = False, train_eval: int = 200,
                 eval_limit: int | None = None, eval_base: bool = True,
                 log: Callable[[str], None] | None = print, device: str | None = None,
                 checkpoint_every: int = 25, checkpoint_dir: str | os.PathLike | None = None
                 ) -> tuple[Path, dict, bool]:
    """Fine-tune, evaluate and save an expert, or reuse the cached one built with the same
    settings. Returns ``(folder, card, reused)``; ``load_model(folder)`` loads the expert.

    Training state is checkpointed every ``checkpoint_every`` steps (``.<folder name>.ckpt``,
    beside the folder or in ``checkpoint_dir``, e.g. a disk that outlives the machine): an
    interrupted build run again with the same settings resumes there; the checkpoint is deleted
    once the expert is saved (``force`` starts afresh). The base model is scored on validation
    (``eval_base``) after training, so a resumed build scores it once."""
    settings = settings or FinetuneSettings()
    ds = load_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    folder = expert_folder(base, ds, settings, root)
    card = read_card(folder)
    if card is not None and not force:
        if log:
            log(f"reusing cached expert {folder}")
        return folder, card, True
    ckpt = checkpoint_path(folder, checkpoint_dir)
    if force and ckpt.exists():
        ckpt.unlink()
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    result = finetune(base, ds, settings, log=log, device=device, checkpoint=ckpt,
                      checkpoint_every=checkpoint_every)
    base_validation = None
    if eval_base and "validation" in ds.splits:
        base_validation = _accuracy(load_model(base, device=device), ds.split("validation", limit=eval_limit, seed=settings.seed),
                                    settings.chat_template)
        if log:
            log(f"base {base} validation accuracy {base_validation['accuracy']:.3f}")
    card = save_expert(result, folder, dataset=ds, train_eval=train_eval, eval_limit=eval_limit,
                       base_validation=base_validation, log=log, device=device)
    ckpt.unlink(missing_ok=True)
    return folder, card, False


def checkpoint_path(folder: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """Where ``build_expert`` keeps the training checkpoint of the expert bound for ``folder``:
    ``.<folder name>.ckpt`` in ``checkpoint_dir`` (default: beside the folder)."""
    folder = Path(folder)
    return Path(checkpoint_dir or folder.parent) / f".{folder.name}.ckpt"
