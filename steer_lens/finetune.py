"""Task-tuned experts: fine-tune a copy of a model on a dataset's answers, then save it as a local
Hugging Face folder that ``load_model`` loads (the paper's domain-expert scenario).

Training rows are the dataset's ``train`` split plus ``train_extra`` where bundled (see
data/SOURCES.md). Each row is formatted exactly as evaluation formats it (``Item.prompt()`` and
the correct ``Item.completions()`` entry, the model's chat template when it has one, its BOS
rule; ``steer_lens.tokens``), and the loss is the cross-entropy of the answer (completion) tokens
only (``objective="answer"``, the default). ``objective="choice"`` trains what evaluation scores:
the cross-entropy over an item's choices of their length-normalised log-probs (mean log-prob per
completion token, ``steer_lens.evaluate``), so the gradient goes to the tokens that tell the
choices apart (e.g. the last digit of an arithmetic answer) instead of every answer token. Input
embeddings and the (tied) LM head stay frozen; every other weight is trained with AdamW (linear
warm-up and decay, gradient norm clipped at 1), seeded.

Speed: the decoder's final hidden states are gathered at the answer-predicting positions only and
projected there by the LM head as one 2-D matmul: Gemma-3's vocabulary has 262k entries, so
projecting every position would be most of the cost (and HF's ``logits_to_keep`` slice sends the
3-D slice through a batched matmul that took ~12 s per call for Gemma-3 on this CPU).

The plain HF model is trained (a ``TransformerBridge`` rewires its modules, so a bridged model
cannot be saved as a plain HF folder). Saving, evaluating and caching the tuned folder
(``build_expert``, ``expert_card.json``) live in ``steer_lens.experts``.

Long runs resume: with ``checkpoint=PATH`` the trainable weights, AdamW and scheduler state, the
row sampler's generator, the losses and the time spent are saved every ``checkpoint_every`` steps
(atomically); a later call with the same base, rows and settings continues from the last saved
step and ends with the same weights as an uninterrupted run (tested bit for bit on CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .data import Item, MCDataset, load_dataset
from .io import atomic_path
from .models import hf_prepends_bos, load_hf
from .tokens import TokenBatch, encode_all, pad

OBJECTIVES = {
    "answer": "cross-entropy of the answer tokens (prompt/completion as in evaluation)",
    "choice": "cross-entropy over the choices of their mean log-prob per completion token (as evaluation scores)",
}


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that determines the tuned weights (hashed into the cache folder name)."""

    steps: int = 300
    lr: float = 3e-5
    batch_size: int = 16
    seed: int = 0
    train_splits: tuple[str, ...] | None = None  # None: "train" plus "train_extra" when present
    train_limit: int | None = None  # seeded subsample of the training rows
    weight_decay: float = 0.0
    warmup: float = 0.1  # share of steps with a linear warm-up; then linear decay to 0
    balance: bool = True  # sample rows with weight 1 / (count of their answer index)
    train_layers: int | None = None  # train only the last N blocks (+ final norm); None: all blocks
    chat_template: bool | None = None  # as in evaluation: the model's template when it has one
    dtype: str = "float32"  # weights (and AdamW state) dtype: "bfloat16" halves GPU memory
    objective: str = "answer"  # "answer": answer-token cross-entropy; "choice": cross-entropy over choices

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            problems.append(f"warmup is a share of the steps in [0, 1), got {self.warmup}")
        if self.train_layers is not None and self.train_layers < 1:
            problems.append(f"train_layers must be >= 1 or None, got {self.train_layers}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            problems.append(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {sorted(OBJECTIVES)}, got {self.objective!r}")
        if self.train_limit is not None and self.train_limit < 1:
            problems.append(f"train_limit must be >= 1 or None, got {self.train_limit}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class FinetuneResult:
    """A tuned plain HF model (not bridged), its tokenizer and what happened during training."""

    hf: torch.nn.Module
    tokenizer: object
    base: str
    dataset: str
    settings: FinetuneSettings
    rows: int
    splits: tuple[str, ...]
    losses: list[float]  # every step's loss (nats): per answer token, or per item over its choices
    train_seconds: float  # wall clock
    train_cpu_seconds: float  # CPU time of all threads (less sensitive to other jobs on the machine)
    data_sha256: str
    trainable_params: int
    frozen_params: int
    items: list[Item] = field(repr=False, default_factory=list)


def training_items(dataset: MCDataset, splits: Sequence[str] | None = None, *,
                   limit: int | None = None, seed: int = 0) -> tuple[list[Item], tuple[str, ...]]:
    """The training rows: ``splits`` concatenated (default: "train" and, when the dataset has it,
    "train_extra"), optionally a seeded subsample of ``limit`` rows."""
    if splits is None:
        splits = ("train", "train_extra") if "train_extra" in dataset.splits else ("train",)
    missing = [s for s in splits if s not in dataset.splits]
    if missing:
        raise KeyError(f"dataset {dataset.name!r} has no split(s) {missing}; available: "
                       f"{sorted(dataset.splits)}")
    items = [it for s in splits for it in dataset.split(s)]
    if limit is not None and limit < len(items):
        keep = sorted(torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:limit].tolist())
        items = [items[i] for i in keep]
    if not items:
        raise ValueError(f"dataset {dataset.name!r} has no training rows in {list(splits)}")
    return items, tuple(splits)


def _text_side(hf, tokenizer, name: str):
    """What ``steer_lens.tokens`` reads from a model (tokenizer, BOS rule, context length), for
    a plain HF model: token ids then match those of ``load_model`` on the same weights."""
    cfg = SimpleNamespace(model_name=name, prepend_bos_hf=hf_prepends_bos(tokenizer),
                          n_ctx=getattr(hf.config, "max_position_embeddings", None))
    return SimpleNamespace(tokenizer=tokenizer, cfg=cfg)


def answer_batch(text_side, encoded: Sequence[tuple[list[int], int]]) -> TokenBatch:
    """Pad encoded (prompt + answer) rows into one batch; ``span`` marks the answer tokens."""
    return pad(text_side, encoded, padding_side="right")


def answer_loss(hf, batch: TokenBatch) -> Float[Tensor, ""]:
    """Mean cross-entropy (nats per answer token) of the answer tokens of a batch."""
    lp, _ = _answer_token_logprobs(hf, batch)
    return -lp.mean()


def _answer_token_logprobs(hf, batch: TokenBatch) -> tuple[Float[Tensor, " n_tokens"], Tensor]:
    """Log-prob (float32) of every answer token of a batch, and the batch row it belongs to.

    Position ``p`` predicts token ``p + 1``: the decoder's final (normed) hidden states at the
    positions before each answer token, ``[n_answer_tokens, d_model]``, go through the LM head
    (and the final logit soft-cap where the model has one, as in its HF forward).
    """
    device = hf.get_input_embeddings().weight.device
    tokens, mask, span = (t.to(device) for t in (batch.tokens, batch.attention_mask, batch.span))
    hidden = hf.get_decoder()(input_ids=tokens, attention_mask=mask, use_cache=False).last_hidden_state
    predicting = span[:, 1:]
    logits = hf.get_output_embeddings()(hidden[:, :-1][predicting]).float()  # [n_tokens, vocab]
    cap = getattr(hf.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    lp = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:][predicting][:, None])[:, 0]
    return lp, predicting.nonzero()[:, 0]


def choice_loss(hf, batch: TokenBatch, n_choices: Sequence[int], answers: Sequence[int]) -> Float[Tensor, ""]:
    """Mean over items of the cross-entropy over their choices' scores, each score the mean log-prob
    per completion token (``steer_lens.evaluate``'s length-normalised score).

    ``batch`` holds every (prompt + choice) row, item after item (``n_choices[i]`` rows for item i);
    ``answers[i]`` is the index of item i's right choice.
    """
    lp, row = _answer_token_logprobs(hf, batch)
    n_rows = batch.tokens.shape[0]
    sums = torch.zeros(n_rows, device=lp.device).index_add(0, row, lp)
    counts = torch.zeros(n_rows, device=lp.device).index_add(0, row, torch.ones_like(lp)).clamp(min=1)
    means = sums / counts
    scores = torch.full((len(n_choices), max(n_choices)), float("-inf"), device=lp.device)
    dev = lp.device
    owner = torch.repeat_interleave(torch.arange(len(n_choices), device=dev), torch.tensor(list(n_choices), device=dev))
    slot = torch.cat([torch.arange(k, device=dev) for k in n_choices])
    scores = scores.index_put((owner, slot), means)
    return F.cross_entropy(scores, torch.tensor(list(answers), device=lp.device))


def _set_trainable(hf, train_layers: int | None = None) -> tuple[int, int]:
    """Train every weight but the input and output embeddings (tied or not), or with
    ``train_layers`` only the last N decoder blocks and the final norm (the frozen blocks below
    then need no backward pass). Returns the (trainable, frozen) parameter counts."""
    hf.requires_grad_(train_layers is None)
    if train_layers is not None:
        blocks = hf.model.layers
        if train_layers > len(blocks):
            raise ValueError(f"train_layers={train_layers} but the model has {len(blocks)} blocks; "
                             f"pass at most {len(blocks)} (or None for all)")
        for block in blocks[len(blocks) - train_layers:]:
            block.requires_grad_(True)
        hf.model.norm.requires_grad_(True)
    for module in (hf.get_input_embeddings(), hf.get_output_embeddings()):
        if module is not None:
            module.requires_grad_(False)
    trainable = sum(p.numel() for p in hf.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in hf.parameters() if not p.requires_grad)
    return trainable, frozen


def _data_hash(items: Sequence[Item]) -> str:
    digest = hashlib.sha256()
    for it in items:
        digest.update(json.dumps([it.id, it.prompt(), it.completions()[it.answer]]).encode())
    return digest.hexdigest()


CHECKPOINT_FORMAT = 1


def run_key(name: str, settings: FinetuneSettings, data_sha256: str) -> str:
    """What a checkpoint must match to be resumed: base model name, training rows and settings."""
    blob = json.dumps({"base": name, "data": data_sha256, "settings": asdict(settings)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_checkpoint(path, key: str, step: int, hf, optimizer, scheduler, generator, losses: list[float],
                     seconds: float, cpu_seconds: float) -> None:
    state = {"format": CHECKPOINT_FORMAT, "key": key, "step": step,
             "params": {n: p.detach().cpu() for n, p in hf.named_parameters() if p.requires_grad},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "generator": generator.get_state(), "losses": list(losses),
             "seconds": seconds, "cpu_seconds": cpu_seconds}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path, key: str, hf, optimizer, scheduler, generator, steps: int) -> dict:
    """Restore a run's state from ``path``; returns the checkpoint (its step, losses and times)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT or state.get("key") != key:
        raise ValueError(f"checkpoint {path} belongs to another run (other base model, rows or settings); "
                         "delete it to start afresh, or pass the settings it was made with")
    if not 0 < state["step"] <= steps:
        raise ValueError(f"checkpoint {path} is at step {state['step']}, outside 1..{steps}; delete it")
    params = dict(hf.named_parameters())
    with torch.no_grad():
        for name, value in state["params"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    return state


def finetune(base: str | os.PathLike, dataset: str | MCDataset, settings: FinetuneSettings | None = None,
             *, log: Callable[[str], None] | None = print, log_every: int = 10,
             device: str | None = None, checkpoint: str | os.PathLike | None = None,
             checkpoint_every: int = 25) -> FinetuneResult:
    """Fine-tune a fresh copy of ``base`` (registry name, HF folder or .gguf) on ``dataset``'s
    training rows; returns the tuned plain HF model (evaluate it with ``save_expert`` /
    ``build_expert``, which reload it through ``load_model``). ``device``: where to train
    ("cpu" default, "cuda", ...); ``settings.dtype``: the weights' (and AdamW state's) dtype.
    ``checkpoint``: a file to save the run's state to every ``checkpoint_every`` steps and to
    resume from when it exists (it must come from the same base, rows and settings); the caller
    deletes it once the tuned model is saved."""
    from transformers import get_scheduler

    settings = settings or FinetuneSettings()
    ds = load_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    items, splits = training_items(ds, settings.train_splits, limit=settings.train_limit, seed=settings.seed)
    torch.manual_seed(settings.seed)
    hf, tokenizer, name = load_hf(base, device=device, dtype=settings.dtype)
    text = _text_side(hf, tokenizer, name)
    if settings.objective == "choice":  # every choice of every row, grouped per row
        encoded = [encode_all(text, [(it.prompt(), c) for c in it.completions()],
                              chat_template=settings.chat_template) for it in items]
    else:
        encoded = encode_all(text, [(it.prompt(), it.completions()[it.answer]) for it in items],
                             chat_template=settings.chat_template)
    trainable, frozen = _set_trainable(hf, settings.train_layers)
    params = [p for p in hf.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(settings.warmup * settings.steps),
                              num_training_steps=settings.steps)
    counts = Counter(it.answer for it in items)
    weights = torch.tensor([1.0 / counts[it.answer] if settings.balance else 1.0 for it in items])
    generator = torch.Generator().manual_seed(settings.seed)
    draw = min(settings.batch_size, len(items))
    if log:
        log(f"fine-tuning {name} on {ds.name} ({len(items)} rows from {'+'.join(splits)}): "
            f"{settings.steps} steps x {draw} rows, lr {settings.lr:g}, objective {settings.objective}, "
            f"{trainable / 1e6:.1f}M trainable "
            f"/ {frozen / 1e6:.1f}M frozen parameters"
            + (f" (training the last {settings.train_layers} blocks)" if settings.train_layers else ""))
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    key = run_key(name, settings, _data_hash(items))
    losses: list[float] = []
    first, spent0, cpu_spent0 = 1, 0.0, 0.0
    if checkpoint is not None and os.path.exists(checkpoint):
        state = _load_checkpoint(checkpoint, key, hf, optimizer, scheduler, generator, settings.steps)
        first, losses = state["step"] + 1, list(state["losses"])
        spent0, cpu_spent0 = state["seconds"], state["cpu_seconds"]
        if log:
            log(f"resuming from {checkpoint} after step {state['step']}")
    t0, cpu0 = time.perf_counter() - spent0, time.process_time() - cpu_spent0
    try:
        hf.eval()  # no dropout in these models; eval() keeps training deterministic regardless
        for step in range(first, settings.steps + 1):
            rows = torch.multinomial(weights, draw, replacement=False, generator=generator).tolist()
            if settings.objective == "choice":
                loss = choice_loss(hf, answer_batch(text, [e for i in rows for e in encoded[i]]),
                                   [len(encoded[i]) for i in rows], [items[i].answer for i in rows])
            else:
                loss = answer_loss(hf, answer_batch(text, [encoded[i] for i in rows]))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the lr "
                                         f"(now {settings.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if checkpoint is not None and step % checkpoint_every == 0 and step < settings.steps:
                _save_checkpoint(checkpoint, key, step, hf, optimizer, scheduler, generator, losses,
                                 time.perf_counter() - t0, time.process_time() - cpu0)
            if log and (step % log_every == 0 or step == settings.steps):
                spent = time.perf_counter() - t0
                recent = losses[-log_every:]
                log(f"step {step:>5}/{settings.steps}  loss {sum(recent) / len(recent):.4f}  "
                    f"{spent:7.1f}s wall ({step / max(spent, 1e-9):.3f} steps/s), "
                    f"{time.process_time() - cpu0:7.1f}s CPU")
    finally:
        hf.requires_grad_(False)
        optimizer.zero_grad(set_to_none=True)
    return FinetuneResult(hf=hf, tokenizer=tokenizer, base=name, dataset=ds.name, settings=settings,
                          rows=len(items), splits=splits, losses=losses,
                          train_seconds=time.perf_counter() - t0,
                          train_cpu_seconds=time.process_time() - cpu0, data_sha256=_data_hash(items),
                          trainable_params=trainable, frozen_params=frozen, items=items)
