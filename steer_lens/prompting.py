"""Prompting baselines: k-shot examples and a zero-shot task instruction, as items scored like any other.

What a user could do instead of steering, on the same items and through the same scoring
(``steer_lens.evaluate``: the log-likelihood of each choice's completion after the prompt):

* **k-shot prompting.** ``few_shot_examples`` draws k TRAIN items (seeded, balanced over the answer
  indices where the pool allows, never an item of the evaluated split: excluded by id and by text).
  ``kshot_item`` turns an item into a ``PromptedItem`` that carries them: with the model's chat
  template each example is an earlier exchange (user: its prompt, assistant: its right completion,
  exactly the text the scored completion would be), and the item's own prompt is the last user turn;
  without a chat template the examples precede the question as plain text, one blank line apart.
* **Zero-shot instruction.** ``instructed_item`` puts a short task instruction before the question
  (``instruction_for``: the dataset's ``meta.json`` ``"instruction"``, else ``DEFAULT_INSTRUCTION``).

A ``PromptedItem`` keeps the item's id, choices, answer and completions, so its scores pair with the
plain item's (paired tests). ``prompted_dataset`` prompts every split of a dataset at once: every
evaluated split (validation, test, ...) with the same k train examples, and each train item with
those too unless it is one of them (it then gets k others, never itself), so steering fitted on
prompted train contrasts sees the prompts it is scored with. Prompted items of a scored split stay
in the test ledger as that split (``steer_lens.ledger``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

from . import data as _data
from .data import Item, MCDataset

DEFAULT_INSTRUCTION = "Answer with the correct choice."
INSTRUCTION_KEY = "instruction"  # a dataset's own instruction, in its meta.json
TRAIN_SPLITS = ("train", "train_extra")  # never prompted as evaluated splits; examples come from "train"


class ChatPrompt(str):
    """A prompt text with earlier exchanges. The string itself is the plain-text form (each exchange,
    then a blank line, then the last message), which models without a chat template read;
    ``turns`` holds the (user, assistant) exchanges and ``last`` the final user message, which
    ``steer_lens.tokens.format_prompt`` sends through the chat template as separate turns."""

    turns: tuple[tuple[str, str], ...]
    last: str

    def __new__(cls, turns: Iterable[tuple[str, str]], last: str):
        turns = tuple((str(u), str(a)) for u, a in turns)
        obj = super().__new__(cls, "".join(f"{u}{a}\n\n" for u, a in turns) + str(last))
        obj.turns, obj.last = turns, str(last)
        return obj

    def __reduce__(self):
        return ChatPrompt, (self.turns, self.last)


def shot_completion(item: Item) -> str:
    """The text an example's assistant turn holds: its right completion (a closed "(A)" for A/B items)."""
    comp = item.completions()[item.answer]
    return comp + ")" if item.format == "ab" else comp


def shot(item: Item) -> tuple[str, str]:
    """One example as (user message, assistant reply)."""
    return Item.prompt(item), shot_completion(item)


def _text(item: Item) -> tuple[str, str]:
    return " ".join(item.question.split()), " ".join((item.context or "").split())


def few_shot_examples(train_items: Sequence[Item], k: int, seed: int | str = 0, exclude_ids: Iterable[str] = (),
                      exclude: Iterable[Item] = ()) -> list[Item]:
    """``k`` examples from ``train_items``, seeded: the answer indices take turns (in a seeded order)
    so the examples are balanced over answers where the pool allows, then the k are shuffled. Items
    whose id is in ``exclude_ids``, or whose id or text (question and context, whitespace-normalised)
    is that of an item of ``exclude`` (the evaluated split), are never drawn, so an evaluated item
    cannot be its own example even where ids collide across splits."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    exclude = list(exclude)
    ids = set(exclude_ids) | {it.id for it in exclude}
    texts = {_text(it) for it in exclude}
    pool = [it for it in train_items if it.id not in ids and _text(it) not in texts]
    if len(pool) < k:
        raise ValueError(f"{k} examples asked for, but only {len(pool)} train items remain after leaving out the "
                         "evaluated items; lower k or add train items")
    rng = random.Random(f"kshot:{seed}")
    by_answer: dict[int, list[Item]] = {}
    for it in pool:
        by_answer.setdefault(it.answer, []).append(it)
    for group in by_answer.values():
        rng.shuffle(group)
    order = sorted(by_answer)
    rng.shuffle(order)
    picked: list[Item] = []
    while len(picked) < k:
        for a in order:
            if by_answer[a] and len(picked) < k:
                picked.append(by_answer[a].pop())
    rng.shuffle(picked)
    return picked


@dataclass(frozen=True)
class PromptedItem(Item):
    """An item scored with k-shot examples (``shots``: (user, assistant) exchanges, from the train
    items ``shot_ids``) and/or a task ``instruction`` before it; its ``prompt()`` is a
    ``ChatPrompt`` when it has examples. Id, choices, answer and completions are the item's own."""

    shots: tuple[tuple[str, str], ...] = ()
    shot_ids: tuple[str, ...] = ()
    instruction: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "shots", tuple((str(u), str(a)) for u, a in self.shots))
        object.__setattr__(self, "shot_ids", tuple(self.shot_ids))

    def prompt(self) -> str:
        body = super().prompt()
        if self.instruction:
            body = f"{self.instruction}\n\n{body}"
        return ChatPrompt(self.shots, body) if self.shots else body

    def plain(self) -> Item:
        """The item without its prompting."""
        return Item(**{f.name: getattr(self, f.name) for f in fields(Item)})


def _fields(item: Item) -> dict:
    return {f.name: getattr(item, f.name) for f in fields(Item)}


def _keep_origin(new: PromptedItem, old: Item) -> PromptedItem:
    """A prompted item of a scored split (test, confirm) is that split's item in the test ledger."""
    if old in _data._ORIGIN:
        _data._ORIGIN[new] = _data._ORIGIN[old]
    return new


def kshot_item(item: Item, examples: Sequence[Item], instruction: str | None = None) -> PromptedItem:
    """``item`` with ``examples`` as earlier exchanges (see the module docstring); refuses an example
    that is the item itself (same id or text)."""
    if isinstance(item, PromptedItem):
        item = item.plain()
    clash = [ex.id for ex in examples if ex.id == item.id or _text(ex) == _text(item)]
    if clash:
        raise ValueError(f"item {item.id!r} would be its own example ({clash}); draw the examples with "
                         "few_shot_examples(..., exclude=[item])")
    return _keep_origin(PromptedItem(**_fields(item), shots=tuple(shot(ex) for ex in examples),
                                     shot_ids=tuple(ex.id for ex in examples), instruction=instruction), item)


def instruction_for(dataset: MCDataset | None) -> str:
    """The dataset's own task instruction (meta.json ``"instruction"``), else ``DEFAULT_INSTRUCTION``."""
    meta = getattr(dataset, "metadata", None) or {}
    text = meta.get(INSTRUCTION_KEY)
    return text.strip() if isinstance(text, str) and text.strip() else DEFAULT_INSTRUCTION


def instructed_item(item: Item, instruction: str = DEFAULT_INSTRUCTION) -> PromptedItem:
    """``item`` with a task instruction (and a blank line) before its context and question."""
    if isinstance(item, PromptedItem):
        item = item.plain()
    return _keep_origin(PromptedItem(**_fields(item), instruction=instruction), item)


def prompted_dataset(dataset: MCDataset, k: int = 0, *, seed: int = 0, instruction: str | None = None
                     ) -> MCDataset:
    """``dataset`` with every item prompted, same names, ids and order (a ``Context`` on it picks the
    same limited subsets). ``k`` > 0: the k-shot examples, drawn from "train" only, never an item of
    any other split; every evaluated split gets the same k, each train item too unless it is one of
    them (then k others, seeded by its id, never itself). ``instruction``: a task instruction before
    every question. "train_extra" is left out."""
    if k and "train" not in dataset.splits:
        raise ValueError(f"dataset {dataset.name!r} has no train split to draw k-shot examples from")
    train = dataset.splits.get("train", [])
    evaluated = [it for s, items in dataset.splits.items() if s not in TRAIN_SPLITS for it in items]
    examples = few_shot_examples(train, k, seed, exclude=evaluated) if k else []
    chosen = {ex.id for ex in examples}
    splits = {}
    for name, items in dataset.splits.items():
        if name == "train_extra":
            continue
        out = []
        for it in items:
            ex = examples
            if name == "train" and it.id in chosen:
                ex = few_shot_examples(train, k, f"{seed}:{it.id}", exclude=[*evaluated, it])
            out.append(kshot_item(it, ex, instruction) if k else instructed_item(it, instruction or ""))
        splits[name] = out
    meta = {**dataset.metadata, "prompting": {"k": k, "seed": seed, "shots": [ex.id for ex in examples],
                                              "instruction": instruction}}
    return MCDataset(dataset.name, splits, meta)


def longest_prompt(dataset: MCDataset, k: int, *, seed: int = 0, split: str = "test") -> int:
    """Characters of the longest k-shot prompt of ``split`` (plain-text form; chat templates add a few
    tokens per turn): what decides whether k-shot prompts stay short on a dataset."""
    items = dataset.splits.get(split) or []
    if not items:
        return 0
    train = dataset.splits.get("train", [])
    evaluated = [it for s, its in dataset.splits.items() if s not in TRAIN_SPLITS for it in its]
    examples = few_shot_examples(train, k, seed, exclude=evaluated) if k else []
    head = sum(len(u) + len(a) + 2 for u, a in map(shot, examples))
    return head + max(len(it.prompt()) for it in items)


__all__ = ["DEFAULT_INSTRUCTION", "ChatPrompt", "PromptedItem", "few_shot_examples", "instructed_item",
           "instruction_for", "kshot_item", "longest_prompt", "prompted_dataset", "shot", "shot_completion"]
