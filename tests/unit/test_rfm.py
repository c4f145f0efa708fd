"""Tests for steer_lens.rfm (Recursive Feature Machine and RFM steering vectors)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steer_lens.rfm import RFM, RFMConfig, SteeringDirection, steering_vector

N, D = 400, 64


pytestmark = pytest.mark.usefixtures("one_thread")  # shared fixture in tests/conftest.py


def hidden_direction_data(seed: int = 0, n: int = N, d: int = D) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label = sign of the coordinate along a hidden unit direction u, with |x.u| >= 1;
    isotropic N(0, I) noise in the other d-1 directions; then residual-stream-like
    units (x 30, plus an offset of norm ~300) to exercise the input scaling."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u /= u.norm()
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, 1.0, -1.0)
    s = y * (1.0 + torch.randn(n, generator=g, dtype=torch.float64).abs())
    X = X + (s - X @ u)[:, None] * u
    X = 30 * X + 40 * torch.randn(d, generator=g, dtype=torch.float64)
    return X.float(), y.float(), u.float()


def split(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return X[y > 0], X[y < 0]


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


# ---------------------------------------------------------------- recovery ----
@pytest.mark.parametrize("seed", [0, 1])
def test_steering_vector_recovers_and_orients_hidden_direction(seed: int) -> None:
    X, y, u = hidden_direction_data(seed)
    sd = steering_vector(*split(X, y))
    assert isinstance(sd, SteeringDirection)
    assert cos(sd.vector, u) > 0.95  # recovered *and* oriented towards the positives
    assert float(sd.vector.norm()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kwargs", [dict(zero_one_labels=True), dict(config=RFMConfig(kernel="gaussian"))])
def test_steering_vector_variants_recover_direction(kwargs: dict) -> None:
    X, y, u = hidden_direction_data(0)
    assert cos(steering_vector(*split(X, y), **kwargs).vector, u) > 0.95


def test_feature_learning_finds_direction_of_nonlinear_label() -> None:
    """y = [|x.u| > median]: the class means coincide, the first (M = I) AGOP is
    poor, and the RFM iterations concentrate the AGOP on u."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(D, generator=g)
    u /= u.norm()
    X = torch.randn(N, D, generator=g)
    y = torch.where((X @ u).abs() > 0.6745, 1.0, -1.0)
    rfm = RFM(RFMConfig(iters=5)).fit(X, y)
    tops = [abs(cos(torch.linalg.eigh(h)[1][:, -1], u)) for h in rfm.history]
    assert len(tops) == 6
    assert tops[0] < 0.5 and tops[-1] > 0.8


def test_flipped_labels_flip_the_vector() -> None:
    X, y, _ = hidden_direction_data(0)
    pos, neg = split(X, y)
    assert cos(steering_vector(pos, neg).vector, steering_vector(neg, pos).vector) < -0.9999
    cfg = RFMConfig(dtype=torch.float64)  # float64: lower eigenvectors are stable to the row reordering
    a, b = steering_vector(pos, neg, k=3, config=cfg), steering_vector(neg, pos, k=3, config=cfg)
    for i in range(3):
        assert cos(a.vectors[i], b.vectors[i]) < -0.9999
    torch.testing.assert_close(a.eigenvalues, b.eigenvalues)


def test_deterministic_given_seed() -> None:
    X, y, _ = hidden_direction_data(0)
    pos, neg = split(X, y)
    a = steering_vector(pos, neg, val_fraction=0.25, seed=3)
    b = steering_vector(pos, neg, val_fraction=0.25, seed=3)
    assert torch.equal(a.vectors, b.vectors) and torch.equal(a.eigenvalues, b.eigenvalues)
    assert a.rfm.best_iter == b.rfm.best_iter and a.rfm.val_scores == b.rfm.val_scores


@settings(max_examples=8, deadline=None)
@given(scale=st.floats(1e-2, 1e3), shift=st.floats(-500.0, 500.0))
def test_invariant_to_input_scale_and_offset(scale: float, shift: float) -> None:
    """Scaling divides by one scalar and centring subtracts the mean: neither may change directions."""
    X, y, _ = hidden_direction_data(0, n=200, d=32)
    cfg = RFMConfig(iters=2, dtype=torch.float64)
    a = steering_vector(*split(X, y), config=cfg).vector
    b = steering_vector(*split(X.double() * scale + shift, y), config=cfg).vector
    assert cos(a, b) > 1 - 1e-6


def test_steering_direction_fields_and_spectrum_helpers() -> None:
    X, y, _ = hidden_direction_data(0)
    sd = steering_vector(*split(X, y), k=4)
    assert sd.vectors.shape == (4, D) and sd.eigenvalues.shape == (D,)
    torch.testing.assert_close(sd.vectors @ sd.vectors.T, torch.eye(4), atol=1e-4, rtol=0)
    assert torch.equal(sd.vector, sd.vectors[0])
    assert bool((sd.eigenvalues[:-1] >= sd.eigenvalues[1:]).all())
    assert 0 < sd.top_share <= 1 and 1 <= sd.effective_rank <= D
    assert sd.top_share > 0.5 and sd.effective_rank < 3  # one concept direction dominates
    spectra = sd.rfm.history_spectra()
    assert len(spectra) == sd.rfm.config.iters + 1 and spectra[0].shape == (D,)
    assert spectra[-1][0] / spectra[-1].sum() > spectra[0][0] / spectra[0].sum()  # spectrum concentrates


# ---------------------------------------------------------- parity with xrfm ----
@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_top_eigenvector_matches_xrfm(kernel: str) -> None:
    """Matched settings. xrfm.RFM has no input scaling, so it gets our centred+scaled
    inputs; both use M = AGOP / max entry (xrfm: fit_M), ridge added to K's diagonal
    (xrfm: reg), uncentred gradients (center_grads=False), full (not diag) M, no
    early stopping and no best-iteration selection (return_best_params=False); our
    `.M` is the AGOP of the final predictor = xrfm's `agop_best_model`
    (get_agop_best_model=True) and our history[-2] = xrfm's final `.M`. Our Gaussian
    exp(-r^2 / (2 L^2)) is xrfm's 'laplace' kernel with exponent 2 and bandwidth sqrt(2) L."""
    xrfm = pytest.importorskip("xrfm", reason="xrfm (reference RFM implementation) is not installed")
    X, y, _ = hidden_direction_data(1)
    cfg = RFMConfig(kernel=kernel, bandwidth=1.0, ridge=1e-3, iters=3)
    ours = RFM(cfg).fit(X, y)
    Xs = ((X - ours.shift) / ours.scale).contiguous()
    ref = xrfm.RFM(kernel="laplace", bandwidth=cfg.bandwidth * (2**0.5 if kernel == "gaussian" else 1.0),
                   exponent=2.0 if kernel == "gaussian" else 1.0, iters=cfg.iters, device="cpu", diag=False,
                   verbose=False)
    ref.fit((Xs, y[:, None]), (Xs[:16], y[:16, None]), iters=cfg.iters, reg=cfg.ridge, return_best_params=False,
            early_stop_rfm=False, center_grads=False, get_agop_best_model=True, verbose=False)

    def top(M: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigh(M.double())[1][:, -1]

    assert abs(cos(top(ours.M), top(ref.agop_best_model))) >= 0.99
    assert abs(cos(top(ours.history[-2]), top(ref.M))) >= 0.99
    torch.testing.assert_close(ours.M, ref.agop_best_model.float(), atol=1e-3, rtol=0)


# ----------------------------------------------------------- KRR and AGOP ----
@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
@pytest.mark.parametrize("iters", [0, 2])
def test_tiny_ridge_interpolates_training_data(kernel: str, iters: int) -> None:
    X, y, _ = hidden_direction_data(0, n=150, d=16)
    cfg = RFMConfig(kernel=kernel, ridge=1e-9, iters=iters, dtype=torch.float64, bandwidth=1.0)
    rfm = RFM(cfg).fit(X, y)
    torch.testing.assert_close(rfm.predict(X), y.double(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_analytic_gradient_matches_autograd(kernel: str) -> None:
    X, y, _ = hidden_direction_data(0, n=120, d=16)
    rfm = RFM(RFMConfig(kernel=kernel, iters=2, dtype=torch.float64)).fit(X, y)
    assert not torch.equal(rfm.kernel_M, torch.eye(16, dtype=torch.float64))  # a learned metric
    pts = (X[:6].double() + 10 * torch.randn(6, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    pts.requires_grad_(True)
    (auto,) = torch.autograd.grad(rfm.predict(pts).sum(), pts)
    torch.testing.assert_close(rfm.gradients(pts.detach()), auto, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_fit_agop_equals_mean_outer_product_of_gradients(kernel: str) -> None:
    """The vectorised in-fit AGOP (which skips each training point's own non-smooth
    term) equals mean_i grad f(x_i) grad f(x_i)^T from the public gradient method."""
    X, y, _ = hidden_direction_data(0, n=150, d=16)
    rfm = RFM(RFMConfig(kernel=kernel, iters=2, dtype=torch.float64)).fit(X, y)
    g = rfm.gradients(X)
    agop = g.T @ g / len(X)
    torch.testing.assert_close(rfm.M, agop / agop.diagonal().max(), rtol=1e-6, atol=1e-9)


def test_validation_selects_best_iteration() -> None:
    X, y, _ = hidden_direction_data(0, n=400, d=32)
    X, y, Xv, yv = X[:300], y[:300], X[300:], y[300:]
    rfm = RFM(RFMConfig(iters=3)).fit(X, y, X_val=Xv, y_val=yv)
    assert len(rfm.val_scores) == 4 and len(rfm.history) == 4
    assert rfm.best_iter == max(range(4), key=lambda t: (rfm.val_scores[t], -t))
    acc = float(((rfm.predict(Xv) > 0) == (yv > 0)).float().mean())
    assert acc == pytest.approx(rfm.val_scores[rfm.best_iter])
    assert torch.equal(rfm.M, rfm.history[rfm.best_iter])


# ----------------------------------------------------------------- errors ----
def test_error_messages() -> None:
    X, y, _ = hidden_direction_data(0, n=40, d=8)
    pos, neg = split(X, y)
    with pytest.raises(ValueError, match="positives is empty"):
        steering_vector(pos[:0], neg)
    with pytest.raises(ValueError, match="negatives is empty"):
        steering_vector(pos, neg[:0])
    with pytest.raises(ValueError, match="width 8 but negatives have width 7.*same layer"):
        steering_vector(pos, neg[:, :7])
    for bad in (float("nan"), float("inf")):
        p = pos.clone()
        p[1, 2] = bad
        with pytest.raises(ValueError, match="positives contains NaN or inf"):
            steering_vector(p, neg)
    for k in (0, 9):
        with pytest.raises(ValueError, match=r"k must be in \[1, 8\]"):
            steering_vector(pos, neg, k=k)
    with pytest.raises(ValueError, match="only one class"):
        RFM().fit(X, torch.ones(len(X)))
    with pytest.raises(ValueError, match="X contains NaN"):
        RFM().fit(torch.full_like(X, float("nan")), y)
    with pytest.raises(ValueError, match="X_val has width"):
        RFM().fit(X, y, X_val=X[:, :7], y_val=y)
    with pytest.raises(ValueError, match="not fitted"):
        RFM().predict(X)
    for bw in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="bandwidth must be a positive"):
            RFMConfig(bandwidth=bw)
    for ridge in (0.0, -1e-3):
        with pytest.raises(ValueError, match="ridge must be a positive"):
            RFMConfig(ridge=ridge)
    with pytest.raises(ValueError, match="need iters >= 0"):
        RFMConfig(iters=-1)
