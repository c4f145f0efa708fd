"""What a user could pick instead of steering, scored on the same TEST items (rows pair with every other).

- ``zero_shot``: a task instruction before each question (``steer_lens.prompting.instruction_for``).
- ``kshot_4``, ``kshot_8``: 4 / 8 seeded, answer-balanced TRAIN examples as earlier chat turns (plain
  text without a chat template; ``steer_lens.prompting``); 8 only where the longest 8-shot TEST prompt
  stays within ``KSHOT_MAX_CHARS`` characters.
- ``kshot_4_label_caa``: prompt + steering. The target's label direction (``label_caa``) fitted on
  4-shot-prompted TRAIN contrasts, its layer and signed strength chosen on 4-shot VALIDATION, scored on
  4-shot TEST; strength 0 is ``kshot_4`` itself. Its random control ``random_kshot_4_label_caa`` is
  scored on the same prompted items.
- ``finetune_target``: the target fine-tuned on the TRAIN split (``steer_lens.finetune`` defaults, the
  whole "train" split); ``finetune_target_extra``: the same on "train" + "train_extra" (finetune's own
  default rows), on sets that have train_extra. The tuned weights are cached under
  ``cache_dir()/finetuned``, keyed by base model, rows and settings.

The prompted rows run on a ``Context`` over ``prompting.prompted_dataset`` (same names, ids, order and
limits), so they score exactly like the plain rows and their ids are the unsteered row's ids.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from ..finetune import FinetuneSettings
from ..prompting import instruction_for, longest_prompt, prompted_dataset
from .base import Context, Reference
from .controls import RandomControl
from .registry import register
from .target import LabelCAA

KSHOT_MAX_CHARS = 4000  # ~1000 tokens: longer k-shot prompts are not "short" (kshot_8 refuses the set)
SEED = 0  # of the k-shot examples


def prompted_context(ctx: Context, k: int = 0, instruction: str | None = None) -> Context:
    """A context on ``ctx``'s dataset with every item prompted (shared by the methods of one dataset);
    the same models, rules, test split, runner and settings (``share_test``, ``search_store``)."""
    if getattr(ctx, "prompting", None) == (k, instruction):
        return ctx

    def make():
        p = Context(prompted_dataset(ctx.dataset, k, seed=SEED, instruction=instruction), ctx.target, ctx.expert,
                    ctx.rules, row_of=ctx._row_of, batch_size=ctx.batch_size, test_split=ctx.test_split,
                    choice_of=ctx.choice_of, search_store=ctx.search_store, share_test=ctx.share_test)
        p.prompting = (k, instruction)
        return p
    return ctx.memo(("prompted", k, instruction), make)


def _prompting(ctx: Context) -> dict:
    return dict(ctx.dataset.metadata["prompting"])


class PromptedReference(Reference):
    """The target as it is, on prompted items (set ``k`` and/or ``instruct``)."""

    scope = "target"
    alternative = True
    k: int = 0
    instruct: bool = False

    def context(self, ctx: Context) -> Context:
        return prompted_context(ctx, self.k, instruction_for(ctx.dataset) if self.instruct else None)

    def applies(self, dataset) -> bool:
        if not self.k:
            return True
        if len(dataset.splits.get("train", [])) < self.k:
            return False
        try:
            return self.k <= 4 or longest_prompt(dataset, self.k, seed=SEED) <= KSHOT_MAX_CHARS
        except ValueError:  # too few train items once the evaluated ones are left out
            return False

    def run(self, ctx: Context) -> dict:
        p = self.context(ctx)
        return {**p.test(p.target), "strength": 0.0, "layers": [], "prompting": _prompting(p)}


@register
class ZeroShot(PromptedReference):
    """Zero-shot instruction: the target with a short task instruction before each TEST question (the
    dataset's meta.json "instruction", else "Answer with the correct choice.")."""

    name = "zero_shot"
    instruct = True


@register
class KShot4(PromptedReference):
    """4-shot prompting: 4 seeded TRAIN examples, balanced over answers, as earlier chat turns (user: the
    question, assistant: its right completion; plain text before the question without a chat template),
    the same 4 before every TEST item; never an item of the evaluated splits."""

    name = "kshot_4"
    k = 4


@register
class KShot8(PromptedReference):
    """8-shot prompting (as kshot_4 with 8 examples), only on sets whose longest 8-shot TEST prompt stays
    within 4000 characters (about 1000 tokens)."""

    name = "kshot_8"
    k = 8


class KShotLabelCAA(LabelCAA):
    """Prompt + steering: the target's label direction (label_caa) fitted on 4-shot-prompted TRAIN
    contrasts, layer and signed strength chosen on 4-shot VALIDATION, scored on 4-shot TEST (strength 0 is
    kshot_4's row)."""

    name = "kshot_4_label_caa"
    base_method = "kshot_4"
    k = 4

    def context(self, ctx: Context) -> Context:
        return prompted_context(ctx, self.k)

    def candidates(self, ctx: Context) -> dict:
        return super().candidates(self.context(ctx))

    def run(self, ctx: Context) -> dict:
        p = self.context(ctx)
        return {**super().run(p), "prompting": _prompting(p)}


class PromptedRandomControl(RandomControl):
    """A random control scored on its matched method's prompted items."""

    def run(self, ctx: Context) -> dict:
        p = self.matched_method.context(ctx)
        return {**super().run(p), "prompting": _prompting(p)}

    def plan_of(self, ctx, row):
        return super().plan_of(self.matched_method.context(ctx), row)


_kshot_caa = KShotLabelCAA()
register(_kshot_caa, control=False)
register(PromptedRandomControl(_kshot_caa, f"random_{_kshot_caa.name}"), control=False)
_kshot_caa.control = f"random_{_kshot_caa.name}"


# -- fine-tuning the target ----------------------------------------------------------------------------
TUNED_CARD = "finetune_card.json"


def base_of(model) -> str:
    """What ``steer_lens.finetune`` loads a fresh copy of ``model`` from: its registry name, or the local
    folder its weights came from."""
    from ..models import REGISTRY

    name = str(getattr(model.cfg, "model_name", ""))
    if name in REGISTRY:
        return name
    folder = getattr(getattr(getattr(model, "original_model", None), "config", None), "_name_or_path", "")
    if folder and (Path(folder) / "config.json").is_file():
        return str(folder)
    raise ValueError(f"cannot fine-tune {name!r}: load the target from a registry name or a local Hugging Face "
                     "folder, so that a fresh copy of its weights can be trained")


def tuned_folder(base: str, dataset, settings: FinetuneSettings, root: Path | None = None) -> Path:
    """Where the target fine-tuned with ``settings`` lives: ``<root>/<base>-<dataset>-<key>`` (default root
    ``cache_dir()/finetuned``; the key hashes base, rows and settings, ``experts.settings_key``)."""
    from ..experts import settings_key
    from ..finetune import _data_hash, training_items
    from ..models import REGISTRY, cache_dir

    items, _ = training_items(dataset, settings.train_splits, limit=settings.train_limit, seed=settings.seed)
    base_name = base if base in REGISTRY else Path(base).name or "model"
    key = settings_key(base, dataset.name, settings, _data_hash(items))
    return Path(root or cache_dir() / "finetuned") / f"{base_name}-{dataset.name}-{key}"


def tuned_target(base: str, dataset, settings: FinetuneSettings, *, device=None, root: Path | None = None,
                 ) -> tuple[Path, dict]:
    """Fine-tune ``base`` on ``dataset`` with ``settings`` (or reuse the cached folder); returns the folder
    (``load_model`` loads it) and its card (settings, rows, losses, time). Written atomically."""
    from ..experts import checkpoint_path
    from ..finetune import finetune
    from ..io import atomic_dir, write_json

    folder = tuned_folder(base, dataset, settings, root)
    card_path = folder / TUNED_CARD
    if card_path.is_file() and (folder / "model.safetensors").is_file():
        return folder, json.loads(card_path.read_text())
    ckpt = checkpoint_path(folder)  # an interrupted run resumes from its last checkpoint
    res = finetune(base, dataset, settings, log=logging.getLogger(__name__).info,
                   device=None if device is None else str(device), checkpoint=ckpt)
    with atomic_dir(folder) as tmp:
        res.hf.save_pretrained(tmp, safe_serialization=True)
        res.tokenizer.save_pretrained(tmp)
        losses = res.losses
        card = {"base_model": res.base, "dataset": res.dataset, "train_splits": list(res.splits), "rows": res.rows,
                "data_sha256": res.data_sha256, "settings": asdict(settings), "steps": len(losses),
                "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
                "train_seconds": round(res.train_seconds, 1), "trainable_params": res.trainable_params}
        write_json(tmp / TUNED_CARD, card)
    ckpt.unlink(missing_ok=True)
    return folder, card


@register
class FinetuneTarget(Reference):
    """The target fine-tuned on the TRAIN split (the whole "train" split the steering methods draw their
    items from; steer_lens.finetune's defaults: 300 AdamW steps of 16 rows, lr 3e-5, answer-token loss,
    embeddings frozen), then scored on TEST. The tuned weights are cached, keyed by base, rows and settings."""

    name = "finetune_target"
    scope = "target"
    alternative = True
    settings = FinetuneSettings(train_splits=("train",))

    def applies(self, dataset) -> bool:
        return all(s in dataset.splits for s in (self.settings.train_splits or ("train",)))

    def run(self, ctx: Context) -> dict:
        from ..devices import model_device
        from ..models import load_model

        device = model_device(ctx.target)
        folder, card = tuned_target(base_of(ctx.target), ctx.dataset, self.settings, device=device)
        tuned = load_model(folder, device=device, dtype=self.settings.dtype)
        return {**ctx.test(tuned), "strength": 0.0, "layers": [],
                "finetune": {"folder": folder.name, **{k: card[k] for k in ("train_splits", "rows", "steps",
                                                                             "loss_first", "loss_last",
                                                                             "train_seconds")},
                             "settings": card["settings"]}}


@register
class FinetuneTargetExtra(FinetuneTarget):
    """As finetune_target, on "train" plus "train_extra" (finetune's default rows; only sets that have
    train_extra): the fine-tuning baseline with more data than the steering methods draw from."""

    name = "finetune_target_extra"
    settings = FinetuneSettings(train_splits=("train", "train_extra"))


__all__ = ["KSHOT_MAX_CHARS", "FinetuneTarget", "KShotLabelCAA", "PromptedReference", "PromptedRandomControl",
           "base_of", "prompted_context", "tuned_folder", "tuned_target"]
