"""The zero-cost baseline for two-way sets: shift the answer margin by a constant.

Many steering gains on a two-way set are calibration shifts: the unsteered model already ranks
items by its margin (score of choice 1 minus choice 0) but answers one label for all of them; a
vector that moves every margin by about the same amount recovers what the ranking knows. This
baseline does exactly that without touching the model: a bias ``b`` chosen on validation items
(most items right; among ties the smallest |b|), then ``margin + b > 0`` picks choice 1 on test.
A steering method that cannot beat it moves answers, not knowledge.

Scores are ``evaluate``'s length-normalised ones, so the bias is in nats per completion token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data import Item
from ..evaluate import EvalResult, bootstrap_ci


def _answers(result: EvalResult, items: Sequence[Item] | None) -> np.ndarray:
    """Each scored item's answer: from ``items`` (checked two-way), or, with ``items=None``, implied
    by a two-way result itself (the prediction when correct, the other choice when not)."""
    if items is None:
        if len(result.predictions) != len(result.ids) or not set(result.predictions) <= {0, 1}:
            raise ValueError("without items the answers are read from a two-way result's predictions; this "
                             "result has none or predicts a third choice: pass the items it was scored on")
        return np.asarray([p if c else 1 - p for p, c in zip(result.predictions, result.correct)], dtype=int)
    by_id = {it.id: it for it in items}
    missing = [i for i in result.ids if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} scored items (e.g. {missing[0]!r}) are not among the items given; "
                         "pass the same split the result was scored on")
    for i in result.ids:
        if len(by_id[i].choices) != 2:
            raise ValueError(f"item {i!r} has {len(by_id[i].choices)} choices; the margin bias is defined for "
                             "two-way items only (use a two-way variant of the dataset)")
    return np.asarray([by_id[i].answer for i in result.ids], dtype=int)


def signed_margins(result: EvalResult, items: Sequence[Item] | None = None) -> np.ndarray:
    """Per item: score of choice 1 minus choice 0 (from ``result.margins``, which are correct
    minus wrong), for two-choice items in ``result``'s order (``items``: see ``_answers``)."""
    answers = _answers(result, items)
    return np.where(answers == 1, 1.0, -1.0) * np.asarray(result.margins, dtype=float)


def fit_bias(margins: Sequence[float] | np.ndarray, answers: Sequence[int] | np.ndarray) -> float:
    """The constant ``b`` maximising the accuracy of ``margin + b > 0`` (choice 1) on these
    items; candidates are 0 and the midpoints between sorted margins, ties go to the smallest
    |b| (so a model that is already calibrated keeps b = 0)."""
    m, y = np.asarray(margins, dtype=float), np.asarray(answers, dtype=int)
    if m.size == 0 or m.shape != y.shape:
        raise ValueError(f"need equally long non-empty margins and answers, got {m.shape} and {y.shape}")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("answers must be 0 or 1 (two-way items)")
    s = np.sort(m)
    cuts = np.concatenate([[s[0] - 1.0], (s[1:] + s[:-1]) / 2, [s[-1] + 1.0]])
    candidates = np.concatenate([[0.0], -cuts])
    acc = ((m[None, :] + candidates[:, None] > 0) == (y[None, :] == 1)).mean(1)
    best = acc.max()
    ok = candidates[acc == best]
    return float(ok[np.argmin(np.abs(ok))])


def calibrated(result: EvalResult, items: Sequence[Item] | None, bias: float, *, seed: int = 0) -> EvalResult:
    """``result`` re-decided with ``margin + bias``: accuracy, CI, per-item correctness and
    margins (correct minus wrong, bias included) for paired tests against steered rows."""
    m, y = signed_margins(result, items), _answers(result, items)
    shifted = m + bias
    preds = (shifted > 0).astype(int)
    correct = [bool(p == a) for p, a in zip(preds, y)]
    lo, hi = bootstrap_ci(correct, seed=seed)
    return EvalResult(accuracy=float(np.mean(correct)), ci_low=lo, ci_high=hi, n=len(correct),
                      majority_rate=result.majority_rate, accuracy_sum=float("nan"), ids=list(result.ids),
                      correct=correct, margins=[float(v if a == 1 else -v) for v, a in zip(shifted, y)],
                      predictions=[int(p) for p in preds], meta={**result.meta, "bias": float(bias)})
