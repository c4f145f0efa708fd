"""Multiple-choice datasets: one JSONL item format, loaders with line-level validation, and the
shared prompt/completion formatting used both for evaluation and for fitting steering vectors.

Item format (one JSON object per line): required ``id`` str (unique), ``question`` str,
``choices`` list[str] (>= 2), ``answer`` int (0-based index of the correct / behaviour-matching
choice); optional ``context`` str, ``domain`` str (any label; the bundled datasets use DOMAINS),
``source`` str, ``format`` "mc" (default) | "ab", ``split`` str (single-file datasets only).

Splits: ``train``, ``validation``, ``test``; bundled sets may add ``train_extra`` (more training
rows) and ``confirm`` (fresh items no other split has seen, scored only in a locked run, see
``steer_lens.ledger``). Every scoring of a ``test`` or ``confirm`` split is recorded in the test
ledger.

* "mc": choice-text scoring. prompt = [context + blank line] + question + "\\nAnswer:", and
  completion k = " " + choices[k].
* "ab": CAA-style A/B items whose question already lists "(A) ..." / "(B) ...". prompt = the
  question as given; completion k = " (" + choices[k], e.g. " (A". This mirrors CAA, which
  appends "(A)" after the "[/INST]" and reads activations at the answer-letter token: the letter
  is the last token of the completion, so pooling over the completion span covers it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOMAINS = ("medical", "finance", "math", "general", "behaviour")  # of the bundled datasets; user data may use any
FORMATS = ("mc", "ab")
SPLITS = ("train", "validation", "test")
# Splits whose every scoring is recorded in the test ledger (steer_lens.ledger); "confirm" holds
# fresh items scored only inside a locked run (ledger.locked_run).
SCORED_SPLITS = ("test", "confirm")
BUNDLED_DIR = Path(__file__).resolve().parent / "datasets"
# one bundled dataset per domain: the compact benchmark (``steer-lens demo``, ``main_results.py --compact``)
COMPACT_DATASETS = ("mmlu_medical_2way", "mmlu_finance_2way", "arithmetic_2way", "sst2", "caa_myopic_reward")


@dataclass(frozen=True)
class Item:
    """One multiple-choice item (choices stored as a tuple)."""

    id: str
    question: str
    choices: Sequence[str]
    answer: int
    domain: str | None = None
    source: str | None = None
    format: str = "mc"
    context: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))

    def prompt(self) -> str:
        """The user-facing text; the model continues it with one of ``completions()``."""
        if self.format == "ab":
            body = self.question
            return f"{self.context}\n\n{body}" if self.context else body
        body = f"{self.question}\nAnswer:"
        return f"{self.context}\n\n{body}" if self.context else body

    def completions(self) -> list[str]:
        """Text appended after ``prompt()`` for each choice (same order as ``choices``)."""
        if self.format == "ab":
            return [f" ({c}" for c in self.choices]
        return [f" {c}" for c in self.choices]

    def to_dict(self) -> dict[str, Any]:
        """The JSONL form of this item."""
        d: dict[str, Any] = {"id": self.id, "question": self.question,
                             "choices": list(self.choices), "answer": self.answer}
        if self.context is not None:
            d["context"] = self.context
        d.update({k: v for k, v in (("domain", self.domain), ("source", self.source)) if v is not None})
        d["format"] = self.format
        return d


@dataclass
class MCDataset:
    """A named dataset: items per split plus metadata (meta.json for bundled datasets)."""

    name: str
    splits: dict[str, list[Item]]
    metadata: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str, limit: int | None = None, seed: int = 0) -> list[Item]:
        """Items of a split; with ``limit``, a seeded subsample kept in file order."""
        if name not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {name!r}; "
                           f"available: {sorted(self.splits)}")
        items = self.splits[name]
        if limit is None or limit >= len(items):
            return list(items)
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        keep = set(random.Random(seed).sample(range(len(items)), limit))
        return [it for i, it in enumerate(items) if i in keep]

    def majority_rate(self, split: str) -> float:
        """Share of the most common answer index: the always-same-position baseline."""
        items = self.split(split)
        if not items:
            return 0.0
        return max(Counter(it.answer for it in items).values()) / len(items)

    def __repr__(self) -> str:
        sizes = {k: len(v) for k, v in self.splits.items()}
        return f"MCDataset({self.name!r}, {sizes})"


_REQUIRED: dict[str, type] = {"id": str, "question": str, "choices": list, "answer": int}
_OPTIONAL: dict[str, type] = {"format": str, "context": str, "domain": str, "source": str}


def _error(where: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"{where}: {problem}. Fix: {fix}.")


def _parse_line(obj: Any, where: str) -> Item:
    if not isinstance(obj, dict):
        raise _error(where, f"expected a JSON object, got {type(obj).__name__}",
                  "write one object per line: {\"id\": ..., \"question\": ..., ...}")
    for key, typ in _REQUIRED.items():
        if key not in obj:
            raise _error(where, f"missing field {key!r}", f"add {key!r} ({typ.__name__}) to the item")
    obj = {k: v for k, v in obj.items() if not (k in _OPTIONAL and v is None)}  # null = left out
    for key, typ in (_REQUIRED | _OPTIONAL).items():
        val = obj.get(key)
        if key in obj and (not isinstance(val, typ) or (typ is int and isinstance(val, bool))):
            hint = "or leave it out" if key in _OPTIONAL else "(it is required)"
            raise _error(where, f"field {key!r} must be {typ.__name__}, got {type(val).__name__} {val!r:.60}",
                      f"give {key!r} as a JSON {'string' if typ is str else typ.__name__} {hint}")
    obj = {"format": "mc", **obj}  # plain multiple choice unless stated
    choices = obj["choices"]
    if len(choices) < 2:
        raise _error(where, f"'choices' has {len(choices)} entr{'y' if len(choices) == 1 else 'ies'}",
                  "give at least two choices")
    if not all(isinstance(c, str) for c in choices):
        raise _error(where, "every choice must be a string", "quote each choice")
    if not 0 <= obj["answer"] < len(choices):
        raise _error(where, f"answer index {obj['answer']} out of range for {len(choices)} choices",
                  f"use a 0-based index in 0..{len(choices) - 1}")
    if obj["format"] not in FORMATS:
        raise _error(where, f"unknown format {obj['format']!r}", "use 'mc' (choice text) or 'ab' (letters)")
    if obj["format"] == "ab" and not all(len(c) == 1 and c.isupper() for c in choices):
        raise _error(where, f"'ab' choices must be single capital letters, got {choices!r:.60}",
                  "use choices like [\"A\", \"B\"] with the options written into the question")
    return Item(id=obj["id"], question=obj["question"], choices=choices, answer=obj["answer"],
                domain=obj.get("domain"), source=obj.get("source"), format=obj["format"],
                context=obj.get("context"))


def _read_jsonl(path: Path, seen: dict[str, str]) -> list[tuple[Item, Any]]:
    """Parse and validate a JSONL file; ``seen`` maps ids to where they were first found."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: malformed JSON ({e.msg} at column {e.colno}). Fix: "
                                 "write exactly one complete JSON object per line.") from None
            it = _parse_line(obj, where)
            if it.id in seen:
                raise ValueError(f"{where}: duplicate id {it.id!r} (first at {seen[it.id]}). "
                                 "Fix: give every item a unique 'id'.")
            seen[it.id] = where
            out.append((it, obj.get("split") if isinstance(obj, dict) else None))
    return out


def content_hash(items: Sequence[Item]) -> str:
    """sha256 of the items' JSONL form (``Item.to_dict``, one line each): for a bundled split
    file it equals the file's own sha256, so it names exactly the items that were scored."""
    h = hashlib.sha256()
    for it in items:
        h.update((json.dumps(it.to_dict(), ensure_ascii=False) + "\n").encode("utf-8"))
    return h.hexdigest()


# Items loaded from a folder's scored split (test, confirm) -> (dataset, split, content hash), so
# that evaluate() can tell a list of such items by its origin (see ``origin``).
_ORIGIN: dict[Item, tuple[str, str, str]] = {}


def _remember(name: str, split: str, items: list[Item]) -> None:
    if split in SCORED_SPLITS and items:
        digest = content_hash(items)
        for it in items:
            _ORIGIN[it] = (name, split, digest)


def origin(items: Sequence[Item]) -> tuple[str, str, str] | None:
    """(dataset, split, content hash of the whole split) when every item comes from the same
    scored split (test or confirm) of a dataset loaded with ``load_dataset``; else None."""
    found = {_ORIGIN.get(it) for it in items}
    if len(found) != 1:
        return None
    return next(iter(found))


def list_datasets() -> list[str]:
    """Names of the datasets bundled with steer_lens."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir() and any(p.glob("*.jsonl")))


# Parsed folders of this process, keyed by folder, name and each file's (name, size, mtime): a folder
# is parsed again only when a file changed. Items are frozen; each load gets its own lists and dicts.
_PARSED: dict[tuple, tuple[dict[str, list[Item]], dict]] = {}


def _load_folder(folder: Path, name: str) -> MCDataset:
    order = {s: i for i, s in enumerate(SPLITS)}
    files = sorted(folder.glob("*.jsonl"), key=lambda f: (order.get(f.stem, len(order)), f.stem))
    if not files:
        raise ValueError(f"{folder}: no *.jsonl split files. Fix: add train.jsonl / "
                         "validation.jsonl / test.jsonl.")
    meta_path = folder / "meta.json"
    stats = [(f.name, st.st_size, st.st_mtime_ns) for f in [*files, meta_path] if f.exists()
             for st in [f.stat()]]
    key = (str(folder.resolve()), name, tuple(stats))
    if key not in _PARSED:
        seen: dict[str, str] = {}
        splits = {f.stem: [it for it, _ in _read_jsonl(f, seen)] for f in files}
        for split, items in splits.items():
            _remember(name, split, items)
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
        _PARSED[key] = (splits, meta)
    splits, meta = _PARSED[key]
    return MCDataset(name, {k: list(v) for k, v in splits.items()}, copy.deepcopy(meta))


def load_dataset(name_or_path: str | Path) -> MCDataset:
    """Load a bundled dataset by name, a folder of ``<split>.jsonl`` files, or one JSONL file
    (items go to split "test" unless a line has a ``split`` field)."""
    if isinstance(name_or_path, str) and name_or_path in list_datasets():
        return _load_folder(BUNDLED_DIR / name_or_path, name_or_path)
    path = Path(name_or_path)
    if path.is_dir():
        return _load_folder(path, path.name)
    if path.is_file():
        splits: dict[str, list[Item]] = {}
        for it, split in _read_jsonl(path, {}):
            splits.setdefault(split if isinstance(split, str) and split else "test", []).append(it)
        for split, items in splits.items():
            _remember(path.stem, split, items)
        return MCDataset(path.stem, splits, {})
    raise ValueError(f"unknown dataset {str(name_or_path)!r}: not a bundled name "
                     f"({', '.join(list_datasets())}) and no such file or folder.")


CONTRASTS = ("correct", "label")


def contrast_prompts(
    items: Sequence[Item], *, seed: int = 0, by: str = "correct", label: int = 1,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(positives, negatives) for steering-vector fitting; activations are meant to be pooled over
    the completion span (or read at its last token).

    ``by="correct"``: each prompt with its correct completion vs a seeded wrong one (the same for
    the same seed and id). On a balanced two-way set this averages the two label directions
    against each other. ``by="label"``: each prompt with choice ``label`` vs a seeded other choice
    (for two-way sets: choice 1 vs choice 0 on every item), so the direction is "answer X minus
    answer Y" whatever the right answer is; steering along it with a signed strength moves the
    share of X answers."""
    if by not in CONTRASTS:
        raise ValueError(f"by must be one of {CONTRASTS}, got {by!r}")
    pos, neg = [], []
    for it in items:
        comps = it.completions()
        rng = random.Random(f"{seed}:{it.id}")
        if by == "label" and not 0 <= label < len(comps):
            raise ValueError(f"item {it.id!r} has {len(comps)} choices; label {label} does not exist. "
                             f"Fix: pass label in 0..{len(comps) - 1}")
        keep = it.answer if by == "correct" else label
        other = rng.choice([k for k in range(len(comps)) if k != keep])
        pos.append((it.prompt(), comps[keep]))
        neg.append((it.prompt(), comps[other]))
    return pos, neg
