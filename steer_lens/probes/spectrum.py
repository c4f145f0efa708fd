"""AGOP spectrum summaries: how concentrated an RFM's learned metric is, per iteration.

A steering vector is the AGOP's top eigenvector; it is only meaningful when the spectrum
is dominated by that direction (top share near 1, effective rank near 1).
`recording_directions()` captures every `SteeringDirection` the ExpertSteer pipeline
fits (one per layer pair, in ``plan.pairs`` order) so their RFM histories can be studied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from jaxtyping import Float
from torch import Tensor


def spectrum_stats(eigenvalues: Float[Tensor, " d"], k: int = 5) -> dict:
    """top eigenvalue, top share (λ1 / Σλ+), effective rank exp(H(p)), gap λ1/λ2, top-k values."""
    ev = torch.as_tensor(eigenvalues, dtype=torch.float64).flatten().sort(descending=True).values
    pos = ev.clamp_min(0)
    total = float(pos.sum())
    if total <= 0:
        raise ValueError("the spectrum has no positive eigenvalue")
    p = pos / total
    return {
        "top": float(ev[0]),
        "top_share": float(ev[0] / total),
        "effective_rank": float(torch.exp(-torch.xlogy(p, p).sum())),
        "gap": float(ev[0] / ev[1]) if len(ev) > 1 and float(ev[1]) > 0 else float("inf"),
        "top_k": [float(x) for x in ev[:k]],
    }


def agop_history(direction_or_rfm, k: int = 5) -> list[dict]:
    """``spectrum_stats`` of the AGOP of each RFM predictor t = 0..iters (predictor 0 uses
    M = I) plus the selected predictor's AGOP as iteration "final" (the steering spectrum).
    Accepts a SteeringDirection or an RFM fitted with ``keep_history=True``."""
    rfm = getattr(direction_or_rfm, "rfm", direction_or_rfm)
    rows = []
    for it, ev in enumerate(rfm.history_spectra()):
        rows.append({"iteration": it, **spectrum_stats(ev, k)})
    final = getattr(direction_or_rfm, "eigenvalues", None)
    if final is None:
        final = torch.linalg.eigvalsh(rfm.M)
    rows.append({"iteration": "final", **spectrum_stats(final, k)})
    return rows


@contextlib.contextmanager
def recording_directions() -> Iterator[list]:
    """Within the block, every ``steering_vector`` call made by ``steer_lens.pipeline`` is
    recorded: yields a list that fills with SteeringDirection objects (one per plan pair).

    Works by temporarily wrapping ``steer_lens.pipeline.steering_vector`` (not thread-safe).
    Set ``RFMConfig(keep_history=True)`` (the default) to get per-iteration spectra.
    """
    from .. import pipeline

    real = pipeline.steering_vector
    recorded: list = []

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        recorded.append(out)
        return out

    pipeline.steering_vector = wrapper
    try:
        yield recorded
    finally:
        pipeline.steering_vector = real
