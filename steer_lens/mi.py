"""Mutual information between expert and target layers, and the choice of layer pairs.

ExpertSteer intervenes where the target lacks what the expert has: estimate the MI
(nats) between every expert layer and every target layer from per-prompt pooled
activations (row i = prompt i on both sides), then pick the lowest-MI pairs.

``gaussian_mi``: standardise each feature, keep the top-k principal components of each
side as orthonormal (whitened) scores, take the canonical correlations rho_i and
return -1/2 sum log(1 - rho_i^2) (rho clamped below 1). Exact for jointly Gaussian data
on the kept components. It is invariant to invertible linear (affine) maps of either
side whenever k keeps the full rank, so an affine aligner changes the MI only through
the rank (subspace) it keeps. Finite samples bias it upwards by about k_x k_y / (2n)
nats for independent data (0.26 nats at k=32, n=2000); the bias is the same for every
pair with the same k and n, so rankings are unaffected.

``ksg_mi``: Kraskov-Stoegbauer-Grassberger estimator 1 (max-norm k nearest neighbours)
on a few unit-variance PCA components: a non-parametric comparison, slower, and biased
down as the dimension grows. Small negative values mean "about zero".
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from .io import atomic_path

_EXACT_MAX = 256  # dense eigh for Grams up to this size, seeded subspace iteration above
_MAX_ITER = 12  # subspace iterations before falling back to dense eigh (about the same cost)
_RTOL = 1e-10  # drop components whose Gram eigenvalue is below this fraction of the largest
_RHO_MAX = 1 - 1e-12  # one perfectly correlated component then counts ~13.5 nats


def _check_pair(x: Tensor, y: Tensor, ndim: int, what: str) -> None:
    if x.ndim != ndim or y.ndim != ndim:
        raise ValueError(f"{what} takes {ndim}-D tensors, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: expert/x has {x.shape[0]} rows but target/y has {y.shape[0]}: "
                         "row i of both must be the same prompt")
    for name, t in (("x/expert", x), ("y/target", y)):
        if not torch.isfinite(t.sum()) and (bad := int((~torch.isfinite(t)).sum())):  # sum: one cheap pass
            raise ValueError(f"{what}: {name} contains {bad} NaN/inf values: drop or fix those rows first")


def _widths(n: int, dx: int, dy: int, k: int | None, what: str) -> None:
    kx, ky = (dx, dy) if k is None else (min(k, dx), min(k, dy))
    if k is not None and k < 1:
        raise ValueError(f"{what}: k must be positive or None (keep every component), got {k}")
    if n < kx + ky + 2:
        raise ValueError(f"{what}: {n} rows are too few for {kx} + {ky} PCA components (canonical "
                         f"correlations go to 1): lower k or supply at least {kx + ky + 2} rows")


def _top_eigh(g: Float[Tensor, "b m m"], r: int) -> tuple[Float[Tensor, "b r"], Float[Tensor, "b m r"]]:
    """Top-r eigenpairs (descending) of a batch of PSD Grams: a seeded block subspace iteration
    (batched, so a model's layers share each LAPACK call), or dense eigh when the matrix is
    small or the spectrum is too flat for the iteration to converge within ~ a dense solve."""
    m = g.shape[-1]
    if m > max(_EXACT_MAX, 4 * r):
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(m, min(m, 2 * r + 8), generator=gen, dtype=g.dtype).to(g.device).expand(g.shape[0], -1, -1)
        gq, prev = g @ q, None
        for step in range(_MAX_ITER):  # Ritz values converge like (lambda_{2r+8} / lambda_r)^(2 * step)
            q = torch.linalg.qr(gq).Q
            gq = g @ q
            block = torch.linalg.eigvalsh(q.mT @ gq)  # ascending Ritz values of the whole block
            ritz = block[:, -r:]
            if step == 0:  # estimate the rate; a flat spectrum goes straight to dense eigh
                rate = float(torch.nan_to_num(block[:, 0] / block[:, -r]).max().clamp(1e-300, 1 - 1e-12))
                if math.log(1e-10) / (2 * math.log(rate)) > _MAX_ITER:
                    break
            elif ((ritz - prev).abs() <= 1e-10 * ritz[:, -1:]).all():
                w, v = torch.linalg.eigh(q.mT @ gq)
                return w.flip(-1)[:, :r], q @ v.flip(-1)[..., :r]
            prev = ritz
    w, v = torch.linalg.eigh(g)
    return w.flip(-1)[:, :r], v.flip(-1)[..., :r]


def _standardized(x: Float[Tensor, "n d"], standardize: bool) -> Float[Tensor, "n d"]:
    x = x.to(torch.float64, copy=True)
    x -= x.mean(0)
    if standardize:
        norm = x.norm(dim=0)
        x /= torch.where(norm > 0, norm, torch.ones_like(norm))
    return x


def _whiten(x: Float[Tensor, "n layer d"], k: int | None, standardize: bool) -> list[Tensor]:
    """Per layer: centred PCA scores of the top min(k, d, n-1) components, as orthonormal
    float64 columns (n, r_layer); components with negligible variance are dropped.
    Layers go in chunks of 8: one batched eigen-solve each, 8 float64 copies at a time."""
    n, layers, d = x.shape
    r = min(d, n - 1) if k is None else min(k, d, n - 1)
    out = []
    for start in range(0, layers, 8):
        xs = [_standardized(x[:, i], standardize) for i in range(start, min(layers, start + 8))]
        if d > n:  # dual: eigenvectors of x x^T are the scores themselves
            w, v = _top_eigh(torch.stack([xi @ xi.T for xi in xs]), r)
            out += [vi[:, wi > _RTOL * wi[0].clamp_min(1e-300)] for wi, vi in zip(w, v)]
            continue
        dtype = torch.float32 if d > _EXACT_MAX else torch.float64
        _, v = _top_eigh(torch.stack([(xi.to(dtype).T @ xi.to(dtype)).double() for xi in xs]), r)
        for xi, vi in zip(xs, v):  # exact float64 Rayleigh-Ritz on the found subspace
            b = xi @ vi
            wi, ui = torch.linalg.eigh(b.T @ b)
            keep = wi > _RTOL * wi[-1].clamp_min(1e-300)
            out.append((b @ ui[:, keep]) / wi[keep].sqrt())
    return out


def _mi_from_cross(cross: Float[Tensor, "*batch p q"]) -> Float[Tensor, "*batch"]:
    """-1/2 sum log(1 - rho^2) over the singular values (canonical correlations) of Zx^T Zy."""
    rho = torch.linalg.svdvals(cross).clamp(max=_RHO_MAX)
    return -0.5 * torch.log1p(-(rho**2)).sum(-1)


def gaussian_mi(x: Float[Tensor, "n dx"], y: Float[Tensor, "n_y dy"], *, k: int | None = 32,
                standardize: bool = True) -> float:
    """Gaussian MI in nats between rows of ``x`` and ``y`` on k PCA components per side."""
    _check_pair(x, y, 2, "gaussian_mi")
    _widths(x.shape[0], x.shape[1], y.shape[1], k, "gaussian_mi")
    zx, zy = _whiten(x[:, None], k, standardize)[0], _whiten(y[:, None], k, standardize)[0]
    return float(_mi_from_cross(zx.T @ zy))


def _ksg(zx: Float[Tensor, "n p"], zy: Float[Tensor, "n q"], neighbors: int) -> float:
    n, total = zx.shape[0], 0.0
    for start in range(0, n, 1024):  # row blocks keep memory at 3 x 1024 x n distances
        dx = torch.cdist(zx[start:start + 1024], zx, p=math.inf)
        dy = torch.cdist(zy[start:start + 1024], zy, p=math.inf)
        dz = torch.maximum(dx, dy)
        rows = torch.arange(dz.shape[0], device=dz.device)
        dz[rows, rows + start] = math.inf  # not your own neighbour
        eps = dz.kthvalue(neighbors, dim=1).values[:, None]
        nx = ((dx < eps).sum(1) - 1).clamp_min(0)  # strictly closer, minus self
        ny = ((dy < eps).sum(1) - 1).clamp_min(0)
        total += float((torch.special.digamma(nx + 1.0) + torch.special.digamma(ny + 1.0)).sum())
    constants = torch.tensor([float(neighbors), float(n)], dtype=torch.float64, device=zx.device)
    return float(torch.special.digamma(constants).sum()) - total / n


def ksg_mi(x: Float[Tensor, "n dx"], y: Float[Tensor, "n_y dy"], *, neighbors: int = 3,
           k: int | None = 4, standardize: bool = True) -> float:
    """KSG-1 MI in nats on ``k`` unit-variance PCA components per side (k=None: all)."""
    _check_pair(x, y, 2, "ksg_mi")
    _widths(x.shape[0], x.shape[1], y.shape[1], k, "ksg_mi")
    if not 1 <= neighbors < x.shape[0] - 1:
        raise ValueError(f"ksg_mi: neighbors must be in [1, n - 2], got {neighbors} for n={x.shape[0]}")
    scale = math.sqrt(x.shape[0] - 1)
    zx, zy = _whiten(x[:, None], k, standardize)[0], _whiten(y[:, None], k, standardize)[0]
    return _ksg(zx * scale, zy * scale, neighbors)


def mi_matrix(expert: Float[Tensor, "n expert_layer d_e"], target: Float[Tensor, "n_t target_layer d_t"],
              *, estimator: str = "gaussian", k: int | None = 32, neighbors: int = 3,
              standardize: bool = True) -> Float[Tensor, "expert_layer target_layer"]:
    """MI (nats, float64) between every expert layer and every target layer.

    Each layer is whitened once; for ``estimator="gaussian"`` all pairs then come from
    one cross-covariance product and a batch of k x k SVDs (entry [i, j] equals
    ``gaussian_mi(expert[:, i], target[:, j], k=k)``). ``"ksg"`` runs ``ksg_mi`` per
    pair on the same whitened components: pass a small k (e.g. 4) and expect minutes.
    """
    if estimator not in ("gaussian", "ksg"):
        raise ValueError(f"estimator must be 'gaussian' or 'ksg', got {estimator!r}")
    _check_pair(expert, target, 3, "mi_matrix")
    n = expert.shape[0]
    _widths(n, expert.shape[2], target.shape[2], k, "mi_matrix")
    zx, zy = _whiten(expert, k, standardize), _whiten(target, k, standardize)
    if estimator == "ksg":
        s = math.sqrt(n - 1)
        return torch.tensor([[_ksg(a * s, b * s, neighbors) for b in zy] for a in zx], dtype=torch.float64,
                            device=expert.device)
    px, py = max(z.shape[1] for z in zx), max(z.shape[1] for z in zy)
    ax = torch.cat([torch.nn.functional.pad(z, (0, px - z.shape[1])) for z in zx], 1)  # (n, Le*px)
    ay = torch.cat([torch.nn.functional.pad(z, (0, py - z.shape[1])) for z in zy], 1)  # zero columns add 0
    return _mi_from_cross((ax.T @ ay).view(len(zx), px, len(zy), py).permute(0, 2, 1, 3))


@dataclass(frozen=True)
class LayerPair:
    """Steer ``target_layer`` with a vector from ``expert_layer``; ``mi`` in nats."""

    expert_layer: int
    target_layer: int
    mi: float


def _labels(labels: Sequence[int] | None, size: int, what: str) -> list[int]:
    out = list(range(size)) if labels is None else [int(i) for i in labels]
    if len(out) != size or len(set(out)) != size:
        raise ValueError(f"{what} must be {size} distinct layer indices (one per matrix "
                         f"{'row' if what.startswith('expert') else 'column'}), got {out}")
    return out


def _inside(layer: int, window: tuple[int, int] | None) -> bool:
    return window is None or window[0] <= layer <= window[1]


def select_pairs(matrix: Float[Tensor, "expert_layer target_layer"], k: int, rule: str = "lowest", *,
                 one_per_target: bool = True, one_per_expert: bool = False,
                 expert_layers: Sequence[int] | None = None, target_layers: Sequence[int] | None = None,
                 target_window: tuple[int, int] | None = None,
                 expert_window: tuple[int, int] | None = None) -> list[LayerPair]:
    """The ``k`` lowest-MI (paper) or highest-MI (ablation) layer pairs, best first.

    Greedy in MI order (ties: lower expert then target layer). Labels name the actual
    layers of the matrix rows/columns (default 0..n-1); windows are inclusive label
    ranges (lo, hi), e.g. ``target_window=(1, 28)`` skips the first and last of 30.
    """
    if rule not in ("lowest", "highest"):
        raise ValueError(f"rule must be 'lowest' (paper) or 'highest' (ablation), got {rule!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    for name, window in (("target_window", target_window), ("expert_window", expert_window)):
        if window is not None and window[0] > window[1]:
            raise ValueError(f"{name} must be (lo, hi) with lo <= hi (inclusive), got {window}")
    m = matrix.detach().double().cpu()
    if not torch.isfinite(m).all():
        raise ValueError("select_pairs: the MI matrix contains NaN/inf: recompute it from finite activations")
    el = _labels(expert_layers, m.shape[0], "expert_layers")
    tl = _labels(target_layers, m.shape[1], "target_layers")
    sign = 1.0 if rule == "lowest" else -1.0
    cands = sorted((sign * float(m[i, j]), el[i], tl[j]) for i in range(len(el)) for j in range(len(tl))
                   if _inside(el[i], expert_window) and _inside(tl[j], target_window))
    chosen, used_e, used_t = [], set(), set()
    for value, e, t in cands:
        if (one_per_target and t in used_t) or (one_per_expert and e in used_e):
            continue
        chosen.append(LayerPair(e, t, sign * value))
        used_e.add(e)
        used_t.add(t)
        if len(chosen) == k:
            return chosen
    raise ValueError(f"select_pairs: asked for k={k} pairs but only {len(chosen)} are possible "
                     f"({len(cands)} pairs lie inside the windows; one_per_target={one_per_target}, "
                     f"one_per_expert={one_per_expert}): lower k or widen the windows")


def plot_mi(matrix: Float[Tensor, "expert_layer target_layer"], pairs: Sequence[LayerPair] | None = None,
            *, expert_layers: Sequence[int] | None = None, target_layers: Sequence[int] | None = None,
            ax: Axes | None = None, path: str | os.PathLike | None = None,
            title: str | None = None) -> Figure:
    """Heatmap (rows expert layers, columns target layers, nats); chosen pairs boxed, numbered.

    Draws on ``ax`` if given, else on a new Agg figure (no screen needed). ``path``
    saves the figure atomically, format from the suffix (default PNG).
    """
    m = matrix.detach().double().cpu().numpy()
    el = _labels(expert_layers, m.shape[0], "expert_layers")
    tl = _labels(target_layers, m.shape[1], "target_layers")
    if ax is None:
        fig = Figure(figsize=(2.5 + 0.22 * len(tl), 1.8 + 0.22 * len(el)), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure(root=True)
    image = ax.imshow(m, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="MI (nats)")
    for setter, labels in ((ax.set_xticks, tl), (ax.set_yticks, el)):
        step = max(1, math.ceil(len(labels) / 32))
        setter(range(0, len(labels), step), [str(v) for v in labels[::step]], fontsize=7)
    ax.set_xlabel("target layer")
    ax.set_ylabel("expert layer")
    if pairs:
        row, col = {v: i for i, v in enumerate(el)}, {v: j for j, v in enumerate(tl)}
        missing = [p for p in pairs if p.expert_layer not in row or p.target_layer not in col]
        if missing:
            raise ValueError(f"plot_mi: pairs {missing} name layers missing from the labels: "
                             "pass the expert_layers/target_layers used by select_pairs")
        xs, ys = [col[p.target_layer] for p in pairs], [row[p.expert_layer] for p in pairs]
        ax.scatter(xs, ys, marker="s", s=90, facecolors="none", edgecolors="red", linewidths=1.8)
        for rank, (x, y) in enumerate(zip(xs, ys), 1):  # numbered in selection order, no legend to hide cells
            ax.text(x, y, str(rank), color="red", fontsize=6, fontweight="bold", ha="center", va="center")
    if title:
        ax.set_title(title)
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:].lower() or "png", dpi=150)
    return fig
