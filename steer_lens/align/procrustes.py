"""Orthogonal Procrustes between PCA-whitened expert and target activations."""

import torch
from jaxtyping import Float
from torch import Tensor

from .base import Aligner

_PCA = tuple[Tensor, Tensor, Tensor]  # mean (d,), principal axes (d, k), singular values (k,)


class ProcrustesAligner(Aligner):
    """Whiten both sides to a common width r, rotate, un-whiten into target coordinates.

    Each side is centred and projected on its top-r principal axes scaled to unit
    variance (r <= min(d_expert, d_target, n - 1); components with singular value below
    ``rtol`` times the largest are dropped on both sides). The rotation R solves
    min ||Xw R - Yw|| over orthogonal R (SVD of Xw^T Yw). Forward: whiten expert, R,
    un-whiten target; inverse: whiten target, R^T, un-whiten expert. Because both sides
    are whitened, any invertible linear relation on the kept subspace becomes a
    rotation, so planted rotations and general invertible maps are both recovered.
    Directions outside the kept subspaces map to zero.

    r close to n overfits: whitened training rows then match perfectly (canonical
    correlations 1) and held-out predictions are poor. ``rank=None`` (default) therefore
    picks r from powers of two by ``folds``-fold CV of the target's squared error;
    an integer ``rank`` fixes it.
    """

    name = "procrustes"
    paired = True

    def __init__(self, d_expert: int, d_target: int, *, rank: int | None = None, folds: int = 5,
                 seed: int = 0, rtol: float = 1e-6) -> None:
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be positive or None (= choose by cross-validation), got {rank}")
        if folds < 2:
            raise ValueError(f"folds must be at least 2 for cross-validation, got {folds}")
        if not 0 <= rtol < 1:
            raise ValueError(f"rtol must be in [0, 1), got {rtol}")
        super().__init__(d_expert, d_target, dict(rank=rank, folds=folds, seed=seed, rtol=rtol))

    def min_rows(self) -> int:
        return 3 if self.hparams["rank"] else 2 * self.hparams["folds"]

    def _fit(self, x: Float[Tensor, "n d_expert"], y: Float[Tensor, "n d_target"] | None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        assert y is not None
        n, rtol = x.shape[0], self.hparams["rtol"]
        limit = min(self.d_expert, self.d_target, n - 1)
        info: dict = {}
        if self.hparams["rank"]:
            r = min(self.hparams["rank"], limit)
        else:
            r, info = self._cv_rank(x, y)
        maps, corr, resid = _procrustes(_pca(x, rtol), _pca(y, rtol), x, y, r)
        self.fit_info = {"rank": int(corr.shape[0]), "mean_canonical_correlation": float(corr.mean()),
                         "whitened_residual": resid, **info}
        return maps

    def _cv_rank(self, x: Float[Tensor, "n d_expert"], y: Float[Tensor, "n d_target"]) -> tuple[int, dict]:
        """Rank from powers of two (up to what every training fold supports) by k-fold CV."""
        n, folds, rtol = x.shape[0], self.hparams["folds"], self.hparams["rtol"]
        top = min(self.d_expert, self.d_target, n - (n + folds - 1) // folds - 1)
        grid = [2**i for i in range(top.bit_length()) if 2**i <= top] or [max(top, 1)]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams["seed"])).to(x.device)
        errors = torch.zeros(len(grid), dtype=torch.float64, device=x.device)
        for val in torch.tensor_split(perm, folds):
            train = torch.ones(n, dtype=torch.bool, device=x.device)
            train[val] = False
            px, py = _pca(x[train], rtol), _pca(y[train], rtol)
            for j, r in enumerate(grid):
                (w, b, _, _), _, _ = _procrustes(px, py, x[train], y[train], r)
                errors[j] += ((x[val] @ w + b - y[val]) ** 2).sum()
        best = int(torch.argmin(errors))
        return grid[best], {"cv_ranks": grid, "cv_mse": [float(e) / (n * y.shape[1]) for e in errors]}


def _pca(x: Float[Tensor, "n d"], rtol: float) -> _PCA:
    """Mean, principal axes (columns) and singular values above rtol * the largest."""
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    keep = int((s > rtol * s[0]).sum())
    return mean, vh[:keep].T, s[:keep]


def _procrustes(pca_x: _PCA, pca_y: _PCA, x: Float[Tensor, "n d_x"], y: Float[Tensor, "n d_y"], r: int
                ) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], Tensor, float]:
    """Affine maps both ways at rank r, canonical correlations, whitened residual share."""
    (mx, vx, sx), (my, vy, sy) = pca_x, pca_y
    r = min(r, sx.shape[0], sy.shape[0])
    if r == 0:
        raise ValueError("ProcrustesAligner: expert or target activations are constant across rows, "
                         "so there is nothing to align: check the pooling and the layer")
    scale = (x.shape[0] - 1) ** 0.5
    vx, sx, vy, sy = vx[:, :r], sx[:r], vy[:, :r], sy[:r]
    whiten_x, unwhiten_x = vx / sx * scale, (vx * sx / scale).T  # (d_x, r), (r, d_x)
    whiten_y, unwhiten_y = vy / sy * scale, (vy * sy / scale).T
    xw, yw = (x - mx) @ whiten_x, (y - my) @ whiten_y
    u, corr, vh = torch.linalg.svd(xw.T @ yw / (x.shape[0] - 1))
    rot = u @ vh
    w, wi = whiten_x @ rot @ unwhiten_y, whiten_y @ rot.T @ unwhiten_x
    resid = float(((xw @ rot - yw) ** 2).sum() / (yw**2).sum())
    return (w, my - mx @ w, wi, mx - my @ wi), corr, resid
