"""Orthogonal Procrustes between PCA-whitened expert and target activations."""

import torch
from jaxtyping import Float
from torch import Tensor

from .base import Aligner


class ProcrustesAligner(Aligner):
    """Whiten both sides to a common width r, rotate, un-whiten into target coordinates.

    Each side is centred and projected on its top-r principal axes scaled to unit
    variance (r <= min(d_expert, d_target, n - 1), and components with singular value
    below ``rtol`` times the largest are dropped on both sides). The rotation R solves
    min ||Xw R - Yw|| over orthogonal R (SVD of Xw^T Yw). Forward: whiten expert, R,
    un-whiten target; inverse: whiten target, R^T, un-whiten expert. Because both sides
    are whitened, any invertible linear relation on the kept subspace becomes a
    rotation, so planted rotations and general invertible maps are both recovered.
    Directions outside the kept subspaces map to zero.
    """

    name = "procrustes"
    paired = True

    def __init__(self, d_expert: int, d_target: int, *, rank: int | None = None,
                 rtol: float = 1e-6) -> None:
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be positive or None (= as large as possible), got {rank}")
        if not 0 <= rtol < 1:
            raise ValueError(f"rtol must be in [0, 1), got {rtol}")
        super().__init__(d_expert, d_target, dict(rank=rank, rtol=rtol))

    def _fit(self, x: Float[Tensor, "n d_expert"], y: Float[Tensor, "n d_target"] | None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        assert y is not None
        n = x.shape[0]
        r = min(self.d_expert, self.d_target, n - 1, self.hparams["rank"] or n)
        mx, vx, sx = _pca(x, r, self.hparams["rtol"])
        my, vy, sy = _pca(y, r, self.hparams["rtol"])
        r = min(sx.shape[0], sy.shape[0])
        if r == 0:
            raise ValueError("ProcrustesAligner: expert or target activations are constant across rows, "
                             "so there is nothing to align: check the pooling and the layer")
        vx, sx, vy, sy = vx[:, :r], sx[:r], vy[:, :r], sy[:r]
        scale = (n - 1) ** 0.5
        whiten_x, unwhiten_x = vx / sx * scale, (vx * sx / scale).T  # (d_E, r), (r, d_E)
        whiten_y, unwhiten_y = vy / sy * scale, (vy * sy / scale).T
        xw, yw = (x - mx) @ whiten_x, (y - my) @ whiten_y
        u, corr, vh = torch.linalg.svd(xw.T @ yw / (n - 1))
        rot = u @ vh
        w = whiten_x @ rot @ unwhiten_y
        wi = whiten_y @ rot.T @ unwhiten_x
        resid = ((xw @ rot - yw) ** 2).sum() / (yw**2).sum()
        self.fit_info = {"rank": r, "mean_canonical_correlation": float(corr.mean()),
                         "whitened_residual": float(resid)}
        return w, my - mx @ w, wi, mx - my @ wi


def _pca(x: Float[Tensor, "n d"], r: int, rtol: float
         ) -> tuple[Float[Tensor, " d"], Float[Tensor, "d k"], Float[Tensor, " k"]]:
    """Mean, top principal axes (columns) and their singular values, at most r of them."""
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    keep = min(r, int((s > rtol * s[0]).sum()))
    return mean, vh[:keep].T, s[:keep]
