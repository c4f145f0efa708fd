"""Multiple-choice accuracy of a (steered) model, with per-item scores for paired tests.

Scoring: each choice's completion tokens are scored by their log-likelihood given the prompt
(formatted with the model's chat template when it has one). ``accuracy`` uses the
**length-normalised** score (mean log-prob per completion token, like lm-eval's acc_norm
but per token); the summed score's accuracy is ``accuracy_sum``. For "ab" items the two
completions " (A" / " (B" share every token but the letter, so both scores reduce to the
logit difference of the two letters; ``behaviour_prob`` is the mean softmax probability
of the behaviour-matching letter over the two letters, ``behaviour_rate`` the share of items
where it wins (= accuracy), ``letter_bias`` the mean logit(A) - logit(B) and
``debiased_accuracy`` the accuracy after removing that constant letter preference.

Speed: each item's prompt runs once (left-padded, logits only for its last token) and its
choices continue from the KV cache as rows of one batch; positions are exact.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

from .data import SCORED_SPLITS, Item, MCDataset, content_hash, origin
from .steer import steer
from .tokens import encode_all, pad


@dataclass
class EvalResult:
    """Accuracy (length-normalised scoring), its seeded percentile-bootstrap 95% CI, and
    per-item correctness / margins (chosen score of the correct choice minus best wrong)."""

    accuracy: float
    ci_low: float
    ci_high: float
    n: int
    majority_rate: float
    accuracy_sum: float
    ids: list[str]
    correct: list[bool]
    margins: list[float]
    predictions: list[int] = field(default_factory=list)  # per item: index of the chosen choice
    scoring: str = "mean_logprob_per_token"
    behaviour_prob: float | None = None
    behaviour_rate: float | None = None
    letter_bias: float | None = None
    debiased_accuracy: float | None = None
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Everything but the per-item lists."""
        return {k: v for k, v in asdict(self).items() if k not in ("ids", "correct", "margins", "predictions")}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping) -> "EvalResult":
        """The result stored in a dict that may carry more keys (e.g. a main-results row)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def bootstrap_ci(correct: Sequence[bool] | np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of a mean of 0/1 outcomes (seeded)."""
    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], *, n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """Mean difference a - b over the same items, its 95% CI and a two-sided bootstrap p."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"need two equally long non-empty per-item lists, got {x.shape} and {y.shape}")
    d = x - y
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return {"diff": float(d.mean()), "ci_low": float(np.quantile(means, 0.025)),
            "ci_high": float(np.quantile(means, 0.975)), "p": float(min(1.0, p))}


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact McNemar test on paired correctness: b01 = only a right, b10 = only b right."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.shape != y.shape:
        raise ValueError(f"need two equally long per-item lists, got {x.shape} and {y.shape}")
    only_a, only_b = int((x & ~y).sum()), int((~x & y).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"only_a": only_a, "only_b": only_b, "p": float(p)}


def _item_rows(model, item: Item, chat_template: bool | None) -> tuple[list[int], list[list[int]], list[int]]:
    """Shared prompt ids, each choice's continuation ids and its first scored index."""
    enc = encode_all(model, [(item.prompt(), c) for c in item.completions()], chat_template=chat_template)
    p = min(start for _, start in enc)
    first = enc[0][0]
    for ids, _ in enc[1:]:  # longest common prefix, in case tokens merge at the boundary
        p = min(p, next((i for i, (u, v) in enumerate(zip(first, ids)) if u != v), min(len(first), len(ids))))
    if p < 1:
        raise ValueError(f"item {item.id!r}: no shared prompt token before the choices")
    return first[:p], [ids[p:] for ids, _ in enc], [start - p for _, start in enc]


def _select_cache(cache, index: Tensor):
    """A copy of a HF cache keeping (and repeating) batch rows ``index``."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)
    return cache


def _score_chunk(model, rows: list[tuple[list[int], list[list[int]], list[int]]]) -> list[tuple[list[float], list[int]]]:
    """Summed log-prob and token count of every choice of a few items (shared prompts)."""
    prompts = pad(model, [(pr, 0) for pr, _, _ in rows], padding_side="left")
    out = model(prompts.tokens, attention_mask=prompts.attention_mask,
                return_type="logits_and_cache", logits_to_keep=1, use_cache=True)
    device = prompts.tokens.device  # the input embeddings' device; logits may sit elsewhere (device_map)
    last_lp = torch.log_softmax(out[0][:, -1].float(), dim=-1).to(device)
    owner = [i for i, (_, conts, _) in enumerate(rows) for _ in conts]
    conts = [c for _, cs, _ in rows for c in cs]
    starts = [s for _, _, ss in rows for s in ss]
    index = torch.tensor(owner, device=device)
    cache = _select_cache(out[1], index)
    cont = pad(model, [(c, 0) for c in conts], padding_side="right")
    plen = prompts.attention_mask.sum(1)[index]
    steps = torch.arange(cont.tokens.shape[1], device=device)[None]
    positions = plen[:, None] + steps
    mask = torch.cat([prompts.attention_mask[index], cont.attention_mask], dim=1)
    logits = model(cont.tokens, attention_mask=mask, position_ids=positions,
                   past_key_values=cache, return_type="logits")
    lp = torch.log_softmax(logits.float(), dim=-1).to(device)
    # token j of a continuation is predicted by continuation logits j-1 (prompt logits for j=0)
    pred = torch.cat([last_lp[index][:, None], lp[:, :-1]], dim=1)
    tok_lp = pred.gather(-1, cont.tokens[..., None])[..., 0]
    scored = cont.attention_mask.bool() & (steps >= torch.tensor(starts, device=device)[:, None])
    sums, counts = (tok_lp * scored).sum(1).tolist(), scored.sum(1).tolist()
    res, r = [], 0
    for _, cs, _ in rows:
        res.append((sums[r: r + len(cs)], counts[r: r + len(cs)]))
        r += len(cs)
    return res


def _score_chunk_full(model, rows) -> list[tuple[list[float], list[int]]]:
    """Reference scorer: every (prompt + choice) as its own right-padded row (no cache)."""
    seqs = [(pr + c, len(pr) + s) for pr, cs, ss in rows for c, s in zip(cs, ss)]
    batch = pad(model, seqs)
    lp = torch.log_softmax(model(batch.tokens, attention_mask=batch.attention_mask).float(), -1)
    tok_lp = torch.cat([torch.zeros_like(lp[:, :1, 0]), lp[:, :-1].gather(-1, batch.tokens[:, 1:, None])[..., 0]], 1)
    sums, counts = (tok_lp * batch.span).sum(1).tolist(), batch.span.sum(1).tolist()
    res, r = [], 0
    for _, cs, _ in rows:
        res.append((sums[r: r + len(cs)], counts[r: r + len(cs)]))
        r += len(cs)
    return res


def score_items(model, items: Sequence[Item], *, chat_template: bool | None = None, batch_size: int = 8,
                share_prompt: bool = True) -> list[tuple[list[float], list[int]]]:
    """Per item: (summed log-prob of each choice's completion tokens, their token counts)."""
    rows = [_item_rows(model, it, chat_template) for it in items]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    scorer = _score_chunk if share_prompt else _score_chunk_full
    out: dict[int, tuple[list[float], list[int]]] = {}
    with torch.no_grad():
        for k in range(0, len(order), batch_size):
            chunk = order[k: k + batch_size]
            for i, res in zip(chunk, scorer(model, [rows[i] for i in chunk])):
                out[i] = res
            if hasattr(model, "_last_hf_cache"):
                del model._last_hf_cache
    return [out[i] for i in range(len(rows))]


def summarise(items: Sequence[Item], scores: Sequence[tuple[Sequence[float], Sequence[int]]], *,
              majority_rate: float, seed: int = 0, meta: dict | None = None) -> EvalResult:
    """Turn per-choice scores into an EvalResult (see module doc for the scoring choice)."""
    correct, correct_sum, margins, margins_ab, bias, preds = [], [], [], [], [], []
    for it, (sums, counts) in zip(items, scores):
        mean = [s / max(c, 1) for s, c in zip(sums, counts)]
        preds.append(max(range(len(mean)), key=lambda k: (mean[k], -k)))
        wrong = [m for k, m in enumerate(mean) if k != it.answer]
        margins.append(float(mean[it.answer] - max(wrong)))
        correct.append(bool(margins[-1] > 0))
        correct_sum.append(bool(sums[it.answer] > max(s for k, s in enumerate(sums) if k != it.answer)))
        if it.format == "ab":
            margins_ab.append(float(sums[it.answer] - max(s for k, s in enumerate(sums) if k != it.answer)))
            if len(sums) == 2 and tuple(it.choices) == ("A", "B"):
                bias.append(float(sums[0] - sums[1]))
    lo, hi = bootstrap_ci(correct, seed=seed)
    res = EvalResult(
        accuracy=float(np.mean(correct)) if correct else float("nan"), ci_low=lo, ci_high=hi,
        n=len(items), majority_rate=majority_rate,
        accuracy_sum=float(np.mean(correct_sum)) if correct_sum else float("nan"),
        ids=[it.id for it in items], correct=correct, margins=margins, predictions=preds,
        meta=dict(meta or {}))
    if margins_ab:
        res.behaviour_prob = float(np.mean(1 / (1 + np.exp(-np.asarray(margins_ab)))))
        res.behaviour_rate = float(np.mean(np.asarray(margins_ab) > 0))
    if bias and len(bias) == len(items):
        b = float(np.mean(bias))
        res.letter_bias = b
        signed = [(m - b if it.answer == 0 else m + b) for it, m in zip(items, margins_ab)]
        res.debiased_accuracy = float(np.mean(np.asarray(signed) > 0))
    return res


def evaluate(
    model,
    dataset_or_items: MCDataset | Sequence[Item],
    *,
    plan=None,
    strength: float = 0.0,
    split: str = "test",
    limit: int | None = None,
    chat_template: bool | None = None,
    batch_size: int = 8,
    vectors: Mapping[str, Tensor] | None = None,
    norms: Mapping[str, float] | None = None,
    positions: str = "all",
    seed: int = 0,
    share_prompt: bool = True,
) -> EvalResult:
    """Accuracy of ``model`` on a dataset split (or a list of items), optionally steered by
    ``plan`` (a SteeringPlan) or ``vectors``/``norms`` at ``strength`` (relative scale).

    Scoring a ``test`` or ``confirm`` split (a dataset with that ``split``, or the items of such
    a split loaded with ``load_dataset``) appends one line to the test ledger
    (``steer_lens.ledger``; name the method and rule set with ``ledger.scoring``). A ``confirm``
    split is scored only inside ``ledger.locked_run``; elsewhere this raises
    ``ledger.ConfirmLockedError``."""
    from . import ledger  # imported here so that `python -m steer_lens.ledger` runs it fresh

    if plan is not None and vectors is not None:
        raise ValueError("pass either plan= or vectors=, not both")
    scored = None  # (dataset, split, content hash of the split) when this scores a test/confirm split
    if isinstance(dataset_or_items, MCDataset):
        if split in SCORED_SPLITS and split in dataset_or_items.splits:
            ledger.check_allowed(dataset_or_items.name, split)
            scored = (dataset_or_items.name, split, content_hash(dataset_or_items.split(split)))
        items = dataset_or_items.split(split, limit=limit, seed=seed)
        majority = dataset_or_items.majority_rate(split) if limit is None else _majority(items)
    else:
        items = list(dataset_or_items)[:limit] if limit is not None else list(dataset_or_items)
        majority = _majority(items)
        scored = origin(items) if items else None
        if scored:
            ledger.check_allowed(scored[0], scored[1])
    if not items:
        raise ValueError("no items to evaluate; check the split name and limit")
    if plan is not None:
        ctx = plan.apply(model, strength, positions=positions)
    elif vectors is not None:
        ctx = steer(model, vectors, strength, positions=positions, norms=norms)
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        scores = score_items(model, items, chat_template=chat_template, batch_size=batch_size,
                             share_prompt=share_prompt)
    result = summarise(items, scores, majority_rate=majority, seed=seed,
                       meta={"strength": float(strength), "model": str(getattr(model.cfg, "model_name", "?"))})
    if scored:
        ledger.record_evaluation(*scored, items, model)
    return result


def _majority(items: Sequence[Item]) -> float:
    if not items:
        return 0.0
    counts = np.bincount([it.answer for it in items])
    return float(counts.max() / len(items))
