"""Multiple-comparison corrections and the power of paired accuracy comparisons.

* ``holm(pvals)`` / ``bh(pvals)``: Holm (family-wise error) and Benjamini-Hochberg (false
  discovery rate) adjusted p-values, from statsmodels' ``multipletests``; ``adjust(rows, ...)``
  adds them to a family of result rows (list of dicts), optionally split into families by a key.
* ``mcnemar_power(n, discordance, diff)``: the exact power of the exact two-sided McNemar test
  (``steer_lens.evaluate.mcnemar``) on ``n`` paired items; ``mcnemar_mde(n, discordance)`` the
  smallest accuracy difference it detects with the given power; ``mcnemar_mde_normal`` the
  normal-approximation (Connor, 1987) counterpart.

Paired design: each item is scored by two methods; ``discordance`` is the share of items on which
exactly one of them is right (p01 + p10) and ``diff`` the accuracy difference (p10 - p01), so
``0 <= |diff| <= discordance``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

METHODS = {"holm": "holm", "bh": "fdr_bh"}


def _check_pvals(pvals: Sequence[float]) -> np.ndarray:
    p = np.asarray(list(pvals), dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p-values must be a flat sequence, got shape {p.shape}. Fix: pass a list of floats.")
    bad = [(i, v) for i, v in enumerate(p.tolist()) if not (0.0 <= v <= 1.0)]  # NaN fails too
    if bad:
        i, v = bad[0]
        raise ValueError(f"p-value {i} is {v!r}, outside [0, 1] ({len(bad)} such). Fix: pass "
                         "probabilities, and leave rows without a test out of the family.")
    return p


def _multipletests(pvals: Sequence[float], method: str) -> list[float]:
    from statsmodels.stats.multitest import multipletests

    p = _check_pvals(pvals)
    if p.size == 0:
        return []
    return [float(v) for v in multipletests(p, method=METHODS[method])[1]]


def holm(pvals: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (controls the family-wise error rate), input order."""
    return _multipletests(pvals, "holm")


def bh(pvals: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate), input order."""
    return _multipletests(pvals, "bh")


def adjust(rows: Sequence[Mapping[str, Any]], *, p_key: str = "p", method: str = "holm",
           out_key: str | None = None, family: str | None = None) -> list[dict[str, Any]]:
    """Copies of ``rows`` with the ``method`` ("holm" or "bh") adjusted p-value of ``p_key`` under
    ``out_key`` (default ``f"{p_key}_{method}"``). Rows whose ``p_key`` is missing or None are
    not tested: they get None and do not count in the family. With ``family``, rows are adjusted
    separately per value of ``row[family]`` (e.g. one family per dataset)."""
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}. Fix: use one of {sorted(METHODS)}.")
    out_key = out_key or f"{p_key}_{method}"
    out = [dict(r) for r in rows]
    groups: dict[Hashable, list[int]] = {}
    for i, r in enumerate(out):
        if r.get(p_key) is None:
            r[out_key] = None
            continue
        if family is not None and family not in r:
            raise KeyError(f"row {i} has no {family!r} key to group families by. Fix: add it or "
                           "pass family=None for one family.")
        groups.setdefault(r[family] if family is not None else None, []).append(i)
    for idx in groups.values():
        try:
            adjusted = _multipletests([out[i][p_key] for i in idx], method)
        except ValueError as e:
            raise ValueError(f"{p_key!r}: {e}") from None
        for i, v in zip(idx, adjusted):
            out[i][out_key] = v
    return out


# ----------------------------------------------------------------------------- power
def _check_design(n: int, discordance: float, alpha: float) -> None:
    if not (isinstance(n, (int, np.integer)) and n > 0):
        raise ValueError(f"n must be a positive whole number of paired items, got {n!r}")
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance must be in (0, 1] (the share of items where exactly one "
                         f"method is right), got {discordance!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


@functools.lru_cache(maxsize=32)
def _critical(n: int, alpha: float) -> np.ndarray:
    """For every discordant count m = 0..n: the largest k with 2 * P(Bin(m, 1/2) <= k) <= alpha
    (-1: none), the rejection bound of the exact two-sided McNemar test of steer_lens.evaluate."""
    from scipy.stats import binom

    out = np.full(n + 1, -1, dtype=int)
    k = -1
    for m in range(1, n + 1):  # the bound grows by at most one per extra discordant pair
        while k + 1 <= m and min(1.0, 2 * binom.cdf(k + 1, m, 0.5)) <= alpha:
            k += 1
        out[m] = k
    return out


def mcnemar_power(n: int, discordance: float, diff: float, *, alpha: float = 0.05) -> float:
    """Exact power of the exact two-sided McNemar test (binomial on the discordant pairs, as in
    ``steer_lens.evaluate.mcnemar``) for ``n`` items, discordance rate ``discordance`` and
    accuracy difference ``diff`` (|diff| <= discordance)."""
    from scipy.stats import binom

    _check_design(n, discordance, alpha)
    if abs(diff) > discordance + 1e-12:
        raise ValueError(f"|diff| = {abs(diff)} exceeds the discordance {discordance}: a difference "
                         "can only come from items where exactly one method is right")
    m = np.arange(n + 1)
    pm = binom.pmf(m, n, discordance)
    keep = pm > 1e-15
    m, pm = m[keep], pm[keep]
    crit = _critical(int(n), float(alpha))[m]
    q = min(1.0, max(0.0, (discordance + abs(diff)) / (2 * discordance)))
    low = np.where(crit >= 0, binom.cdf(crit, m, q), 0.0)
    high = np.where(crit >= 0, binom.sf(m - crit - 1, m, q), 0.0)
    return float(np.sum(pm * np.minimum(1.0, low + high)))


def mcnemar_mde(n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8,
                tol: float = 1e-4) -> float:
    """Smallest accuracy difference the exact McNemar test detects with ``power`` (bisection on
    ``mcnemar_power``); nan when even diff = discordance falls short."""
    _check_design(n, discordance, alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if mcnemar_power(n, discordance, discordance, alpha=alpha) < power:
        return float("nan")
    lo, hi = 0.0, discordance
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if mcnemar_power(n, discordance, mid, alpha=alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def mcnemar_mde_normal(n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Normal-approximation counterpart (Connor, 1987): the diff solving
    n = (z_{1-alpha/2} sqrt(pd) + z_power sqrt(pd - diff^2))^2 / diff^2."""
    _check_design(n, discordance, alpha)
    za, zb = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    f = lambda d: (za * math.sqrt(discordance) + zb * math.sqrt(max(0.0, discordance - d * d))) ** 2 / (d * d) - n  # noqa: E731
    lo, hi = 1e-9, discordance
    if f(hi) > 0:
        return float("nan")
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return hi
