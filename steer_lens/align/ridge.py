"""Ridge regression expert -> target (closed form, intercept, k-fold CV over a log grid)."""

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .base import Aligner

DEFAULT_ALPHAS = tuple(float(a) for a in torch.logspace(-6, 2, 17, dtype=torch.float64))


class RidgeAligner(Aligner):
    """Paired linear map minimising ||Xc W - Yc||^2 + lambda ||W||^2, with intercept.

    ``alphas`` are relative strengths: lambda = alpha * trace(Xc^T Xc) / d (the mean
    eigenvalue of the centred training Gram), so one grid suits activations of any norm.
    The alpha with the lowest summed k-fold squared error is refitted on all rows.
    ``inverse="ridge"`` (default) fits a second ridge regression target -> expert the
    same way: the best linear predictor of the expert, so inverse(transform(x)) is not
    exactly x. ``inverse="pinv"`` uses (y - b) @ pinv(W) instead: a left inverse on the
    rank of W.
    """

    name = "ridge"
    paired = True

    def __init__(self, d_expert: int, d_target: int, *, alphas: Sequence[float] | None = None,
                 folds: int = 5, inverse: str = "ridge", seed: int = 0) -> None:
        alphas = list(DEFAULT_ALPHAS if alphas is None else (float(a) for a in alphas))
        if not alphas or min(alphas) <= 0:
            raise ValueError(f"alphas must be a non-empty list of positive numbers, got {alphas}")
        if folds < 2:
            raise ValueError(f"folds must be at least 2 for cross-validation, got {folds}")
        if inverse not in ("ridge", "pinv"):
            raise ValueError(f"inverse must be 'ridge' or 'pinv', got {inverse!r}")
        super().__init__(d_expert, d_target, dict(alphas=alphas, folds=folds, inverse=inverse, seed=seed))

    def min_rows(self) -> int:
        return 2 * self.hparams["folds"]

    def _fit(self, x: Float[Tensor, "n d_expert"], y: Float[Tensor, "n d_target"] | None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        assert y is not None
        w, b, info = self._ridge_cv(x, y)
        self.fit_info = {f"forward_{k}": v for k, v in info.items()}
        if self.hparams["inverse"] == "ridge":
            wi, bi, info = self._ridge_cv(y, x)
            self.fit_info |= {f"inverse_{k}": v for k, v in info.items()}
        else:
            wi = torch.linalg.pinv(w)
            bi = -b @ wi
        return w, b, wi, bi

    def _ridge_cv(self, x: Float[Tensor, "n p"], y: Float[Tensor, "n q"]
                  ) -> tuple[Float[Tensor, "p q"], Float[Tensor, " q"], dict]:
        """CV over the alpha grid, then refit on all rows; returns (W, b, diagnostics)."""
        alphas = torch.tensor(self.hparams["alphas"], dtype=torch.float64, device=x.device)
        n = x.shape[0]
        gen = torch.Generator().manual_seed(self.hparams["seed"])
        perm = torch.randperm(n, generator=gen).to(x.device)
        errors = torch.zeros(len(alphas), dtype=torch.float64, device=x.device)
        for val in torch.tensor_split(perm, self.hparams["folds"]):
            train = torch.ones(n, dtype=torch.bool, device=x.device)
            train[val] = False
            xm, ym = x[train].mean(0), y[train].mean(0)
            u, s, vh = torch.linalg.svd(x[train] - xm, full_matrices=False)
            lam = alphas * (s**2).sum() / x.shape[1]
            a = (x[val] - xm) @ vh.T  # (n_val, r)
            bmat = u.T @ (y[train] - ym)  # (r, q)
            for j, l in enumerate(lam):
                pred = (a * (s / (s**2 + l))) @ bmat + ym
                errors[j] += ((pred - y[val]) ** 2).sum()
        best = int(torch.argmin(errors))
        xm, ym = x.mean(0), y.mean(0)
        u, s, vh = torch.linalg.svd(x - xm, full_matrices=False)
        lam = alphas[best] * (s**2).sum() / x.shape[1]
        w = (vh.T * (s / (s**2 + lam))) @ (u.T @ (y - ym))
        info = {"alpha": float(alphas[best]), "lambda": float(lam),
                "cv_mse": [float(e) / (n * y.shape[1]) for e in errors],
                "alpha_at_grid_edge": best in (0, len(alphas) - 1)}
        return w, ym - xm @ w, info
