"""Recursive Feature Machine (RFM) and RFM steering directions.

RFM (Radhakrishnan et al. 2024) alternates kernel ridge regression (KRR) with a
Mahalanobis kernel and the AGOP (average gradient outer product) of the fitted
predictor, which becomes the kernel's metric M for the next round. Beaglehole et
al. 2025 steer LLMs with the top AGOP eigenvectors of an RFM trained to separate
concept-positive from concept-negative activations.

Conventions (chosen to agree with xrfm 0.4.5, see tests/unit/test_rfm.py):
- Input scaling: X -> (X - mean) / s with ONE scalar s, so directions are unchanged.
  s = median pairwise distance (default, on <= 512 evenly spaced rows) or median
  norm of the centred rows. The bandwidth L is therefore in units of s: at the
  first iteration (M = I) a typical pair has ||x - z|| ~ 1. Centring never changes
  a distance kernel; it only reduces float cancellation.
- Kernels: Laplace exp(-||x-z||_M / L) (default), Gaussian exp(-||x-z||_M^2 / (2 L^2)).
- KRR: (K + ridge * I) alpha = y (ridge added to K's diagonal, no factor n).
- AGOP: uncentred mean of grad f grad f^T over the training points, then divided by
  its largest diagonal entry (= its largest entry, since it is PSD), so M has max
  entry 1. Gradients at a training point skip that point's own (non-smooth) term.
- `RFM.M` is the AGOP *of the selected predictor* (xrfm: `agop_best_model`); the
  kernel metric that predictor used is `RFM.kernel_M` (xrfm: `M`).
Cost per iteration: O(n^2 d + n d^2 + n^3) time, O(n^2 + d^2) memory (no n x n x d tensor).
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = ["RFMConfig", "RFM", "SteeringDirection", "steering_vector"]


@dataclass(frozen=True)
class RFMConfig:
    """RFM hyper-parameters. `bandwidth` is in units of the input scale (see module doc)."""

    kernel: Literal["laplace", "gaussian"] = "laplace"
    bandwidth: float = 1.0
    ridge: float = 1e-3
    iters: int = 5  # number of AGOP updates; iters + 1 KRR fits
    dtype: torch.dtype = torch.float32
    scale: Literal["median_dist", "median_norm", "none"] = "median_dist"
    center: bool = True
    keep_history: bool = True  # keep every iteration's AGOP (d x d each) in RFM.history
    chunk: int = 4096  # rows per block when predicting / differentiating new points

    def __post_init__(self) -> None:
        for name, value, allowed in (("kernel", self.kernel, ("laplace", "gaussian")),
                                     ("scale", self.scale, ("median_dist", "median_norm", "none")),
                                     ("dtype", self.dtype, (torch.float32, torch.float64))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        for name, value, hint in (("bandwidth", self.bandwidth, 1.0), ("ridge", self.ridge, 1e-3)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value}; try {hint}")
        if self.iters < 0 or self.chunk < 1:
            raise ValueError(f"need iters >= 0 and chunk >= 1, got iters={self.iters}, chunk={self.chunk}")


def _check_finite(name: str, t: Tensor) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf; drop or fix those rows before fitting")


def _check_fit_inputs(X: Tensor, y: Tensor, X_val: Tensor | None, y_val: Tensor | None) -> Tensor:
    """Raise ValueError on unusable training/validation data; return the distinct labels."""
    for name, t in (("X", X), ("y", y), ("X_val", X_val), ("y_val", y_val)):
        if t is not None:
            _check_finite(name, t)
    classes = torch.unique(y)
    if len(classes) < 2:
        raise ValueError("y has only one class/value; provide examples of both classes (e.g. +1 and -1)")
    if (X_val is None) != (y_val is None):
        raise ValueError("pass both X_val and y_val, or neither")
    if X_val is not None and X_val.shape[1] != X.shape[1]:
        raise ValueError(f"X_val has width {X_val.shape[1]} but X has width {X.shape[1]}; use the same features")
    return classes


def _sq_dists(
    A: Float[Tensor, "a d"], B: Float[Tensor, "b d"], M: Float[Tensor, "d d"] | None
) -> tuple[Float[Tensor, "a b"], Bool[Tensor, "a b"]]:
    """Squared M-distances (A_i - B_j)^T M (A_i - B_j) (M=None: identity) and a mask of
    numerically-zero ones (cancellation noise, at most 64 eps of the squared norms)."""
    AM = A if M is None else A @ M
    qa = (AM * A).sum(-1)
    qb = qa if B is A else (B if M is None else B @ M).mul(B).sum(-1)
    d2 = torch.addmm(qb[None, :], AM, B.T, alpha=-2.0).add_(qa[:, None])
    tol = 64 * torch.finfo(A.dtype).eps
    zero = d2 <= (qa.clamp_min(0) * tol)[:, None] + (qb.clamp_min(0) * tol)[None, :]
    return d2.masked_fill_(zero, 0.0), zero


class RFM:
    """Recursive Feature Machine for one scalar target. Fit with `.fit(X, y)`.

    After fitting: `.M` ("d d") normalised AGOP of the selected predictor; `.kernel_M`
    its kernel metric; `.history` AGOPs of predictors 0..iters (empty unless
    keep_history); `.val_scores` validation accuracy (or -MSE for non-binary y) per
    predictor; `.best_iter`; `.shift` ("d"), `.scale` (float) the input scaling;
    `.centers` ("n d") the training points in scaled coordinates, `.targets` ("n") their
    targets, `.alpha` ("n") the selected predictor's KRR coefficients.
    """

    def __init__(self, config: RFMConfig | None = None) -> None:
        self.config = config if config is not None else RFMConfig()
        self.history: list[Tensor] = []
        self.val_scores: list[float] = []
        self.best_iter = -1

    # ---- kernel pieces (all in scaled coordinates) ----
    def _kernel(self, d2: Float[Tensor, "a b"]) -> Float[Tensor, "a b"]:
        L = self.config.bandwidth
        if self.config.kernel == "laplace":
            return torch.exp(torch.sqrt(d2) * (-1.0 / L))
        return torch.exp(d2 * (-0.5 / (L * L)))

    def _raw_grads(
        self, Z: Float[Tensor, "m d"], d2: Float[Tensor, "m n"], zero: Bool[Tensor, "m n"],
        K: Float[Tensor, "m n"], alpha: Float[Tensor, "n"], centers: Float[Tensor, "n d"],
    ) -> Float[Tensor, "m d"]:
        """G with grad f(Z_j) = -(G M)_j, G_j = sum_i alpha_i c_ji (Z_j - x_i), where
        grad_z k(x, z) = -c M (z - x). Overwrites d2 and K. Zero-distance pairs are skipped."""
        L = self.config.bandwidth
        if self.config.kernel == "laplace":  # c = k / (L ||z - x||_M)
            w = torch.div(K, d2.sqrt_().masked_fill_(zero, math.inf), out=d2).mul_(alpha / L)
        else:  # c = k / L^2
            w = K.masked_fill_(zero, 0.0).mul_(alpha / (L * L))
        return torch.addmm(Z * w.sum(1, keepdim=True), w, centers, alpha=-1.0)

    def _prepare(self, X: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
        return (X.to(self.config.dtype) - self.shift) / self.scale

    def _solve(self, K: Float[Tensor, "n n"], y: Float[Tensor, "n"]) -> Float[Tensor, "n"]:
        """alpha = (K + ridge I)^-1 y by Cholesky (adds the ridge to K's diagonal in place). If
        float32 Cholesky fails (tiny ridge, ill-conditioned K) retry in float64, then LU."""
        K.diagonal().add_(self.config.ridge)
        for A in (K, K.double()) if K.dtype != torch.float64 else (K,):
            chol, info = torch.linalg.cholesky_ex(A)
            if int(info) == 0:
                return torch.cholesky_solve(y.to(A.dtype)[:, None], chol)[:, 0].to(K.dtype)
        return torch.linalg.solve(K.double(), y.double()).to(K.dtype)

    # ---- public API ----
    def fit(
        self, X: Float[Tensor, "n d"], y: Float[Tensor, "n"], *,
        X_val: Float[Tensor, "n_val d_val"] | None = None, y_val: Float[Tensor, "n_val"] | None = None,
    ) -> "RFM":
        """Fit on X ("n d", any units) and targets y ("n"). With a validation set, the
        predictor (iteration 0..iters) with the best validation score is kept."""
        cfg, (n, d) = self.config, X.shape
        classes, dt = _check_fit_inputs(X, y, X_val, y_val), cfg.dtype
        X = X.to(dt)
        self.shift = X.mean(0) if cfg.center else X.new_zeros(d)
        self.scale = 1.0
        if cfg.scale != "none":
            Xc = X - self.shift
            sub = Xc[torch.linspace(0, n - 1, min(n, 512), device=X.device).long()]
            med = float((torch.pdist(sub) if cfg.scale == "median_dist" else Xc.norm(dim=1)).median())
            self.scale = med if med > 0 else 1.0
        Xs, ys = self._prepare(X), y.to(dt)
        binary = len(classes) == 2
        thresh = float(classes.to(dt).mean()) if binary else 0.0
        M: Tensor | None = None  # None = identity (first iteration)
        self.history, self.val_scores, best = [], [], -math.inf
        for t in range(cfg.iters + 1):
            d2, zero = _sq_dists(Xs, Xs, M)
            K = self._kernel(d2)
            alpha = self._solve(K, ys)  # K's diagonal is masked out of the gradients below
            G = self._raw_grads(Xs, d2, zero, K, alpha, Xs)
            del d2, zero, K
            if M is None:
                agop = G.T @ G
            elif n >= 2 * d:  # cheaper association: n d^2 + 2 d^3 vs 2 n d^2
                agop = M @ (G.T @ G) @ M
            else:
                agop = (H := G @ M).T @ H
            agop = (agop + agop.T) / 2  # the 1/n of the mean cancels in the normalisation
            agop = agop / agop.diagonal().max().clamp_min(torch.finfo(dt).tiny)
            if cfg.keep_history:
                self.history.append(agop)
            score = 0.0
            if X_val is not None:
                pv, yv = self._predict_scaled(self._prepare(X_val), Xs, alpha, M), y_val.to(dt)
                score = float(((pv > thresh) == (yv > thresh)).to(dt).mean()) if binary else -float(((pv - yv) ** 2).mean())
                self.val_scores.append(score)
            if X_val is None or t == 0 or score > best:  # strict: earliest best wins (as xrfm)
                best, self.best_iter, self.M, self.alpha = score, t, agop, alpha
                self.kernel_M = M if M is not None else torch.eye(d, dtype=dt, device=X.device)
            M = agop
        self.centers, self.targets = Xs, ys  # training points (scaled) and their targets
        return self

    def _predict_scaled(
        self, Z: Float[Tensor, "m d"], centers: Float[Tensor, "n d"], alpha: Float[Tensor, "n"],
        M: Float[Tensor, "d d"] | None,
    ) -> Float[Tensor, "m"]:
        out = [self._kernel(_sq_dists(z, centers, M)[0]) @ alpha for z in Z.split(self.config.chunk)]
        return torch.cat(out) if out else Z.new_zeros(0)

    def _check_input(self, X: Tensor) -> None:
        if not hasattr(self, "centers"):
            raise ValueError("RFM is not fitted; call .fit(X, y) first")
        if X.shape[1] != self.centers.shape[1]:
            raise ValueError(f"X has width {X.shape[1]} but the RFM was fitted on width {self.centers.shape[1]}")

    def predict(self, X: Float[Tensor, "m d"]) -> Float[Tensor, "m"]:
        """f(X) in the units of the training targets. Differentiable w.r.t. X."""
        self._check_input(X)
        return self._predict_scaled(self._prepare(X), self.centers, self.alpha, self.kernel_M)

    def gradients(self, X: Float[Tensor, "m d"]) -> Float[Tensor, "m d"]:
        """Analytic grad_x f(x) at each row of X (w.r.t. the unscaled input)."""
        self._check_input(X)
        Z, out = self._prepare(X), []
        for z in Z.split(self.config.chunk):
            d2, zero = _sq_dists(z, self.centers, self.kernel_M)
            G = self._raw_grads(z, d2, zero, self._kernel(d2), self.alpha, self.centers)
            out.append(-(G @ self.kernel_M) / self.scale)
        return torch.cat(out) if out else Z.new_zeros(Z.shape)

    def history_spectra(self) -> list[Tensor]:
        """Descending eigenvalues ("d") of each iteration's normalised AGOP."""
        return [_eigh_desc(h)[0] for h in self.history]


def _eigh_desc(M: Float[Tensor, "d d"]) -> tuple[Float[Tensor, "d"], Float[Tensor, "d d"]]:
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix; retries in
    float64 if LAPACK does not converge (can happen with many clustered ~0 eigenvalues)."""
    try:
        ev, V = torch.linalg.eigh(M)
    except torch.linalg.LinAlgError:
        ev, V = (t.to(M.dtype) for t in torch.linalg.eigh(M.double()))
    return ev.flip(0), V.flip(1)


@dataclass(frozen=True)
class SteeringDirection:
    """Top-k AGOP eigenvectors (unit rows, oriented towards the positives) and the spectrum."""

    vectors: Float[Tensor, "k d"]
    eigenvalues: Float[Tensor, "d"]  # full AGOP spectrum, descending (AGOP max entry = 1)
    rfm: RFM

    @property
    def vector(self) -> Float[Tensor, "d"]:
        return self.vectors[0]

    @property
    def top_share(self) -> float:
        """Top eigenvalue / trace: 1 means the AGOP is rank one."""
        return float(self.eigenvalues[0] / self.eigenvalues.clamp_min(0).sum())

    @property
    def effective_rank(self) -> float:
        """exp(entropy of the normalised spectrum) (Roy & Vetterli 2007); in [1, d]."""
        p = self.eigenvalues.clamp_min(0) / self.eigenvalues.clamp_min(0).sum()
        return float(torch.exp(-torch.xlogy(p, p).sum()))


def steering_vector(
    positives: Float[Tensor, "n_pos d"], negatives: Float[Tensor, "n_neg d_neg"], *, k: int = 1,
    config: RFMConfig | None = None, zero_one_labels: bool = False, val_fraction: float = 0.0, seed: int = 0,
) -> SteeringDirection:
    """Fit an RFM (positives -> +1, negatives -> -1, or 1/0) and return its top-k AGOP
    eigenvectors, each signed so the positives' mean projection exceeds the negatives'.
    val_fraction > 0 holds out a random (seeded) split to pick the best iteration."""
    for name, t in (("positives", positives), ("negatives", negatives)):
        if t.shape[0] == 0:
            raise ValueError(f"{name} is empty; pass at least one activation row for each class")
        _check_finite(name, t)
    if (d := positives.shape[1]) != negatives.shape[1]:
        raise ValueError(f"positives have width {d} but negatives have width {negatives.shape[1]}; "
                         "take both from the same layer")
    if not 1 <= k <= d:
        raise ValueError(f"k must be in [1, {d}] (the activation width), got {k}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cfg = config if config is not None else RFMConfig()
    pos, neg = positives.to(cfg.dtype), negatives.to(cfg.dtype)
    X = torch.cat([pos, neg])
    y = torch.cat([pos.new_ones(len(pos)), neg.new_full((len(neg),), 0.0 if zero_one_labels else -1.0)])
    rfm, n_val = RFM(cfg), int(round(val_fraction * len(X)))
    if n_val > 0:
        perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed)).to(X.device)
        tr, va = perm[n_val:], perm[:n_val]
        rfm.fit(X[tr], y[tr], X_val=X[va], y_val=y[va])
    else:
        rfm.fit(X, y)
    evals, evecs = _eigh_desc(rfm.M)
    vecs = evecs[:, :k].T.contiguous()
    gap = (pos.mean(0) - neg.mean(0)) @ vecs.T  # orient: positives project higher
    vecs = vecs * torch.where(gap < 0, -1.0, 1.0).to(vecs.dtype)[:, None]
    return SteeringDirection(vectors=vecs, eigenvalues=evals, rfm=rfm)
