"""Paper-faithful linear auto-encoder: expert width -> target width -> expert width."""

import math

import torch
from jaxtyping import Float
from torch import Tensor

from .base import Aligner


class AutoEncoderAligner(Aligner):
    """Affine encoder d_expert -> d_target and affine decoder back, trained on expert rows.

    Loss: mean squared reconstruction error of standardised expert activations
    (``standardize="feature"``: per-feature mean and std; ``"global"``: per-feature
    mean and one scale, so the loss stays proportional to raw squared error). The
    statistics are folded into the saved affine maps. Adam, full batch
    (``batch_size=None``) or shuffled mini-batches; a ``val_fraction`` of rows is held
    out and training stops after ``patience`` epochs without a relative improvement of
    ``min_delta``, keeping the best weights. Deterministic for a given ``seed``.

    ``solver="closed_form"`` skips gradient descent: a linear auto-encoder's global
    minimiser of this loss is the projection on the top ``d_target`` principal components
    (Baldi & Hornik 1989), so the encoder is those components (descending variance) and
    the decoder their transpose. Same loss, exact optimum, one eigen-solve instead of
    hundreds of epochs; an Adam-trained solution differs from it only by an invertible
    map of the code (plus optimisation error), which nothing downstream depends on. It is the
    default; ``solver="adam"`` trains as the paper does (the hyper-parameters above apply).

    The code space is an arbitrary basis of the target's width: nothing ties unit i of
    the code to unit i of the target model (ExpertSteer accepts that). Use a paired
    aligner, or ``HybridAutoEncoderAligner``, to land in the target's own coordinates.
    """

    name = "autoencoder"
    paired = False

    def __init__(self, d_expert: int, d_target: int, *, lr: float = 3e-3, max_epochs: int = 1000,
                 batch_size: int | None = None, val_fraction: float = 0.1, patience: int = 50,
                 min_delta: float = 1e-3, weight_decay: float = 0.0, standardize: str = "feature",
                 solver: str | None = None, seed: int = 0) -> None:
        if lr <= 0 or max_epochs < 1 or patience < 1 or min_delta < 0 or weight_decay < 0:
            raise ValueError("need lr > 0, max_epochs >= 1, patience >= 1, min_delta >= 0, weight_decay >= 0")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive or None (full batch), got {batch_size}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if standardize not in ("feature", "global"):
            raise ValueError(f"standardize must be 'feature' or 'global', got {standardize!r}")
        solver = solver or self._solvers()[0]
        if solver not in self._solvers():
            raise ValueError(f"{type(self).__name__}: solver must be one of {self._solvers()}, got {solver!r}")
        super().__init__(d_expert, d_target, dict(
            lr=lr, max_epochs=max_epochs, batch_size=batch_size, val_fraction=val_fraction,
            patience=patience, min_delta=min_delta, weight_decay=weight_decay,
            standardize=standardize, solver=solver, seed=seed))

    @classmethod
    def _solvers(cls) -> tuple[str, ...]:
        return ("closed_form", "adam")  # first = default

    def min_rows(self) -> int:
        return 4

    def _paired_weight(self) -> float:
        return 0.0

    def _fit(self, x: Float[Tensor, "n d_expert"], y: Float[Tensor, "n d_target"] | None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h = self.hparams
        gen = torch.Generator().manual_seed(h["seed"])
        mx, sx = _stats(x, h["standardize"])
        xs64 = (x - mx) / sx
        xs = xs64.float()
        if self.paired and y is not None:
            my, sy = _stats(y, h["standardize"])
            ys = ((y - my) / sy).float()
        else:
            my = torch.zeros(self.d_target, dtype=x.dtype, device=x.device)
            sy = torch.ones(self.d_target, dtype=x.dtype, device=x.device)
            ys = None
        if h["solver"] == "closed_form":
            we, be, wd, bd = self._closed_form(xs64)
        else:
            we, be, wd, bd = (p.double() for p in self._adam(xs, ys, gen))
        # fold the standardisation into the affine maps (see class docstring)
        w = we / sx[:, None] * sy[None, :]
        b = (be - (mx / sx) @ we) * sy + my
        wi = wd / sy[:, None] * sx[None, :]
        bi = (bd - (my / sy) @ wd) * sx + mx
        return w, b, wi, bi

    def _closed_form(self, xs: Float[Tensor, "n d_expert"]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Top-d_target principal axes of the (centred, standardised) rows as encoder; zero biases."""
        evals, evecs = torch.linalg.eigh(xs.T @ xs)  # ascending
        k = min(self.d_expert, self.d_target)
        we = torch.zeros(self.d_expert, self.d_target, dtype=xs.dtype, device=xs.device)
        we[:, :k] = evecs.flip(-1)[:, :k]  # extra code units (d_target > d_expert) stay unused
        total = float(evals.clamp_min(0).sum())
        kept = float(evals.flip(-1)[:k].clamp_min(0).sum())
        loss = float(((xs @ we @ we.T - xs) ** 2).mean())
        self.fit_info = {"solver": "closed_form", "train_loss": loss,
                         "explained_variance": kept / total if total > 0 else 1.0}
        return we, xs.new_zeros(self.d_target), we.T.contiguous(), xs.new_zeros(self.d_expert)

    def _adam(self, xs: Float[Tensor, "n d_expert"], ys: Float[Tensor, "n d_target"] | None,
              gen: torch.Generator) -> list[Tensor]:
        """Adam on the loss with early stopping on held-out rows; returns the best [we, be, wd, bd]."""
        h = self.hparams
        n = xs.shape[0]
        perm = torch.randperm(n, generator=gen).to(xs.device)
        n_val = max(1, round(h["val_fraction"] * n)) if h["val_fraction"] > 0 else 0
        val, train = perm[:n_val], perm[n_val:]
        monitor = val if n_val else train
        params = _init(self.d_expert, self.d_target, gen, xs.device)
        opt = torch.optim.Adam(params, lr=h["lr"], weight_decay=h["weight_decay"])
        bs = h["batch_size"] or len(train)
        best, best_epoch, best_params = math.inf, 0, [p.detach().clone() for p in params]
        epoch = 0
        for epoch in range(1, h["max_epochs"] + 1):
            order = train[torch.randperm(len(train), generator=gen).to(train.device)] if bs < len(train) else train
            for batch in order.split(bs):
                opt.zero_grad()
                self._loss(params, xs[batch], None if ys is None else ys[batch]).backward()
                opt.step()
            with torch.no_grad():
                loss = float(self._loss(params, xs[monitor], None if ys is None else ys[monitor]))
            if not math.isfinite(loss):
                raise ValueError(f"{type(self).__name__} training diverged at epoch {epoch}: lower lr")
            if loss < best * (1 - h["min_delta"]):
                best, best_epoch, best_params = loss, epoch, [p.detach().clone() for p in params]
            elif epoch - best_epoch >= h["patience"]:
                break
        self.fit_info = {"solver": "adam", "epochs": epoch, "best_epoch": best_epoch, "best_monitor_loss": best,
                         "monitor": "validation" if n_val else "train",
                         "stopped_early": epoch < h["max_epochs"]}
        return best_params

    def _loss(self, params: list[Tensor], xs: Float[Tensor, "b d_expert"],
              ys: Float[Tensor, "b d_target"] | None) -> Float[Tensor, ""]:
        we, be, wd, bd = params
        code = xs @ we + be
        loss = ((code @ wd + bd - xs) ** 2).mean()
        if ys is not None:
            loss = loss + self._paired_weight() * ((code - ys) ** 2).mean()
        return loss


def _stats(x: Float[Tensor, "n d"], mode: str) -> tuple[Float[Tensor, " d"], Float[Tensor, " d"]]:
    """Per-feature mean and scale (constant features get scale 1)."""
    mean, std = x.mean(0), x.std(0)
    if mode == "global":
        std = torch.full_like(std, float(std.pow(2).mean().sqrt()))
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _init(d_in: int, d_code: int, gen: torch.Generator, device: torch.device) -> list[Tensor]:
    """Uniform(+-1/sqrt(fan_in)) weights, zero biases, float32 leaves on ``device``: [we, be, wd, bd]."""
    we = ((torch.rand(d_in, d_code, generator=gen) * 2 - 1) / math.sqrt(d_in)).to(device)
    wd = ((torch.rand(d_code, d_in, generator=gen) * 2 - 1) / math.sqrt(d_code)).to(device)
    zeros = [torch.zeros(d, device=device) for d in (d_code, d_in)]
    return [p.requires_grad_() for p in (we, zeros[0], wd, zeros[1])]
