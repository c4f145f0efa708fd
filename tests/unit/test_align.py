"""Aligners: planted maps are recovered, files round-trip, and misuse fails clearly."""

import pytest
import torch
from safetensors.torch import save_file
from sklearn.metrics import explained_variance_score, r2_score

from steer_lens.align import (Aligner, AutoEncoderAligner, HybridAutoEncoderAligner, ProcrustesAligner,
                              RidgeAligner, aligner_names, load_aligner, make_aligner)


pytestmark = pytest.mark.usefixtures("one_thread")  # shared fixture in tests/conftest.py

D_E, D_T = 40, 24
FAST = {"autoencoder": dict(solver="adam", max_epochs=100, lr=2e-2), "hybrid": dict(max_epochs=100, lr=2e-2),
        "ridge": {}, "procrustes": {}}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def planted_linear(n: int = 600, noise: float = 0.01, seed: int = 0):
    """Expert rows with residual-stream-like offsets and scales; target = expert @ A + b + noise."""
    g = gen(seed)
    expert = (torch.randn(n, D_E, generator=g) * torch.linspace(0.5, 20, D_E) + 100 * torch.randn(D_E, generator=g))
    a = torch.randn(D_E, D_T, generator=g) / D_E**0.5
    signal = expert @ a + 3.0
    target = signal + noise * signal.std(0) * torch.randn(n, D_T, generator=g)
    return expert, target, a


def low_rank(n: int = 500, rank: int = 6, seed: int = 1):
    g = gen(seed)
    latent = torch.randn(n, rank, generator=g)
    expert = latent @ torch.randn(rank, D_E, generator=g) * 30 + 200 + 0.01 * torch.randn(n, D_E, generator=g)
    target = latent @ torch.randn(rank, D_T, generator=g) * 5 - 10 + 0.01 * torch.randn(n, D_T, generator=g)
    return expert, target


def fitted(name: str, seed: int = 0) -> Aligner:
    expert, target = low_rank()
    return make_aligner(name, D_E, D_T, **FAST[name]).fit(expert[:400], target[:400])


def test_names_and_factory():
    assert aligner_names() == ["autoencoder", "hybrid", "procrustes", "ridge"]
    assert type(make_aligner("ridge", D_E, D_T, folds=3)) is RidgeAligner
    assert make_aligner("hybrid", D_E, D_T, paired_weight=2.0, lr=1e-2).hparams["lr"] == 1e-2
    with pytest.raises(ValueError, match="unknown aligner 'pca'.*choose one of"):
        make_aligner("pca", D_E, D_T)
    with pytest.raises(ValueError, match="no hyper-parameter.*'rnak'.*accepts"):
        make_aligner("procrustes", D_E, D_T, rnak=3)


def test_ridge_recovers_planted_map():
    expert, target, a = planted_linear()
    ridge = RidgeAligner(D_E, D_T).fit(expert[:480], target[:480])
    report = ridge.report(expert[480:], target[480:])
    assert report["target_r2"] > 0.95
    assert report["inverse_r2"] > 0.5  # 24 target dims cannot explain all 40 expert dims
    assert torch.allclose(ridge.forward_weight.float(), a, atol=0.05)
    assert set(report) == {"n", "reconstruction_r2", "explained_variance", "target_r2",
                           "target_explained_variance", "inverse_r2"}
    pinv = RidgeAligner(D_E, D_T, inverse="pinv").fit(expert[:480], target[:480])
    back = pinv.inverse_transform(pinv.transform(expert[480:]))
    assert torch.allclose(pinv.transform(back), pinv.transform(expert[480:]), atol=1e-2, rtol=1e-4)


def test_report_matches_sklearn():
    expert, target, _ = planted_linear(noise=0.5)
    ridge = RidgeAligner(D_E, D_T).fit(expert[:480], target[:480])
    x, y = expert[480:].double(), target[480:].double()
    report = ridge.report(x, y)
    recon = ridge.inverse_transform(ridge.transform(x))
    assert report["reconstruction_r2"] == pytest.approx(r2_score(x, recon, multioutput="variance_weighted"))
    assert report["explained_variance"] == pytest.approx(
        explained_variance_score(x, recon, multioutput="variance_weighted"))
    assert report["target_r2"] == pytest.approx(r2_score(y, ridge.transform(x), multioutput="variance_weighted"))


def test_procrustes_recovers_planted_rotation():
    g = gen(2)
    d = 16
    expert = torch.randn(800, d, generator=g, dtype=torch.float64) * torch.linspace(1, 10, d, dtype=torch.float64)
    rotation = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    target = expert @ rotation + 5.0 + 1e-3 * torch.randn(800, d, generator=g, dtype=torch.float64)
    aligner = ProcrustesAligner(d, d).fit(expert[:600], target[:600])
    assert torch.allclose(aligner.forward_weight, rotation, atol=0.01)
    assert torch.allclose(aligner.inverse_weight, rotation.T, atol=0.01)
    assert aligner.report(expert[600:], target[600:])["target_r2"] > 0.999


def test_procrustes_across_widths_and_rank():
    expert, target = low_rank()  # 6 shared latents plus tiny noise
    aligner = ProcrustesAligner(D_E, D_T).fit(expert[:400], target[:400])
    info = aligner.fit_info
    assert info["cv_ranks"] == [1, 2, 4, 8, 16] and info["rank"] in (8, 16)  # 24 > what a fold supports
    assert info["cv_mse"][info["cv_ranks"].index(info["rank"])] == min(info["cv_mse"])
    assert aligner.report(expert[400:], target[400:])["target_r2"] > 0.95
    fixed = ProcrustesAligner(D_E, D_T, rank=6).fit(expert[:400], target[:400])
    assert fixed.fit_info["rank"] == 6 and "cv_ranks" not in fixed.fit_info
    assert fixed.report(expert[400:], target[400:])["target_r2"] > 0.95


def test_procrustes_cv_avoids_overfitting_at_full_rank():
    """With about as many dimensions as rows, full-rank whitening matches training rows exactly."""
    expert, target, _ = planted_linear(n=120, noise=1.0)
    full = ProcrustesAligner(D_E, D_T, rank=D_T).fit(expert[:60], target[:60])
    chosen = ProcrustesAligner(D_E, D_T).fit(expert[:60], target[:60])
    assert full.fit_info["mean_canonical_correlation"] > chosen.fit_info["mean_canonical_correlation"]
    assert chosen.report(expert[60:], target[60:])["target_r2"] > full.report(expert[60:], target[60:])["target_r2"]


def test_autoencoder_reconstructs_low_rank_data_deterministically():
    expert, _ = low_rank()
    first = AutoEncoderAligner(D_E, D_T, seed=3, **FAST["autoencoder"]).fit(expert[:400])
    assert first.report(expert[400:])["reconstruction_r2"] > 0.99
    again = AutoEncoderAligner(D_E, D_T, seed=3, **FAST["autoencoder"]).fit(expert[:400])
    assert torch.equal(first.forward_weight, again.forward_weight)
    assert torch.equal(first.transform(expert[400:]), again.transform(expert[400:]))
    other = AutoEncoderAligner(D_E, D_T, seed=4, **FAST["autoencoder"]).fit(expert[:400])
    assert not torch.equal(first.forward_weight, other.forward_weight)
    mini = AutoEncoderAligner(D_E, D_T, batch_size=64, max_epochs=60, lr=3e-3, standardize="global",
                              solver="adam").fit(expert[:400])
    assert mini.report(expert[400:])["reconstruction_r2"] > 0.95


def test_closed_form_autoencoder_is_the_exact_optimum_of_the_same_loss():
    """PCA solution: orthonormal encoder, loss = discarded variance, never beaten by Adam."""
    g = gen(5)
    x = torch.randn(300, D_E, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, D_E) + 7
    closed = AutoEncoderAligner(D_E, D_T).fit(x)  # default solver
    assert closed.hparams["solver"] == "closed_form" and closed.fit_info["solver"] == "closed_form"
    xs = (x - x.mean(0)) / x.std(0)
    ev = torch.linalg.eigvalsh(xs.T @ xs)  # ascending: the D_E - D_T smallest are discarded
    assert closed.fit_info["train_loss"] == pytest.approx(float(ev[: D_E - D_T].sum()) / xs.numel(), rel=1e-9)
    enc = closed.forward_weight * x.std(0)[:, None]  # undo the folded standardisation
    assert torch.allclose(enc.T @ enc, torch.eye(D_T, dtype=torch.float64), atol=1e-9)
    recon = closed.inverse_transform(closed.transform(x))
    assert torch.allclose(((recon - x) / x.std(0)).pow(2).mean(), torch.tensor(closed.fit_info["train_loss"],
                                                                              dtype=torch.float64), rtol=1e-6)
    adam = AutoEncoderAligner(D_E, D_T, solver="adam", max_epochs=300, lr=1e-2, val_fraction=0.0).fit(x)
    adam_loss = float((((adam.inverse_transform(adam.transform(x)) - x) / x.std(0)) ** 2).mean())
    assert closed.fit_info["train_loss"] <= adam_loss * (1 + 1e-6)
    wide = AutoEncoderAligner(D_T, D_E).fit(x[:, :D_T])  # code wider than the input: lossless
    assert torch.allclose(wide.inverse_transform(wide.transform(x[:, :D_T])), x[:, :D_T], atol=1e-8)
    with pytest.raises(ValueError, match="solver must be one of.*'adam'"):
        HybridAutoEncoderAligner(D_E, D_T, solver="closed_form")


def test_hybrid_lands_in_target_coordinates():
    expert, target = low_rank()
    hybrid = HybridAutoEncoderAligner(D_E, D_T, **FAST["hybrid"]).fit(expert[:400], target[:400])
    plain = AutoEncoderAligner(D_E, D_T, **FAST["autoencoder"]).fit(expert[:400])
    report = hybrid.report(expert[400:], target[400:])
    assert report["target_r2"] > 0.95 and report["reconstruction_r2"] > 0.95
    assert plain.report(expert[400:], target[400:])["target_r2"] < 0.5  # arbitrary basis


@pytest.mark.parametrize("name", ["autoencoder", "hybrid", "procrustes", "ridge"])
def test_save_load_round_trip(name, tmp_path):
    aligner = fitted(name)
    path = aligner.save(tmp_path / f"{name}.safetensors")
    loaded = load_aligner(path)
    assert type(loaded) is type(aligner) and loaded.hparams == aligner.hparams
    assert loaded.fit_info == aligner.fit_info
    x, y = low_rank(50, seed=9)
    assert torch.equal(loaded.transform(x), aligner.transform(x))
    assert torch.equal(loaded.inverse_transform(y), aligner.inverse_transform(y))
    assert type(type(aligner).load(path)) is type(aligner)
    assert not list(tmp_path.glob(".*tmp"))


def test_load_rejects_foreign_files(tmp_path):
    path = fitted("ridge").save(tmp_path / "ridge.safetensors")
    with pytest.raises(ValueError, match="holds a RidgeAligner, not a ProcrustesAligner"):
        ProcrustesAligner.load(path)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="without steer_lens aligner metadata"):
        load_aligner(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="no aligner file"):
        load_aligner(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("name", ["autoencoder", "hybrid", "procrustes", "ridge"])
def test_transform_direction_is_the_linear_part(name):
    aligner = fitted(name)
    x, _ = low_rank(20, seed=5)
    x = x.double()
    v = torch.randn(D_E, generator=gen(6), dtype=torch.float64) * 10
    expected = aligner.transform(x + v) - aligner.transform(x)
    assert torch.allclose(aligner.transform_direction(v).expand_as(expected), expected, atol=1e-8)
    assert aligner.transform_direction(v.float()).dtype == torch.float32


def test_errors_name_problem_and_fix():
    expert, target = low_rank()
    ridge = RidgeAligner(D_E, D_T)
    with pytest.raises(ValueError, match="not fitted: call fit"):
        ridge.transform(expert)
    with pytest.raises(ValueError, match="paired: call fit\\(expert, target\\)"):
        ridge.fit(expert)
    with pytest.raises(ValueError, match="400 expert rows but 399 target rows"):
        ridge.fit(expert[:400], target[:399])
    bad = expert.clone()
    bad[7, 3] = float("inf")
    with pytest.raises(ValueError, match="1 NaN/inf values in 1 rows"):
        ridge.fit(bad, target)
    with pytest.raises(ValueError, match="at least 10 rows to fit, got 5"):
        ridge.fit(expert[:5], target[:5])
    ridge.fit(expert, target)
    with pytest.raises(ValueError, match="expects 40-wide expert activations, got 24: did you pass target"):
        ridge.transform(target)
    with pytest.raises(ValueError, match="expects 24-wide target activations, got 40: did you pass expert"):
        ridge.inverse_transform(expert)
    with pytest.raises(ValueError, match="got 7: check which model"):
        ridge.transform(expert[:, :7])
    with pytest.raises((ValueError, TypeError)):  # ValueError "2-D"; under pytest jaxtyping fires first
        ridge.transform(torch.zeros(3, 2, D_E))
    with pytest.raises(ValueError, match="at least 4 rows"):
        AutoEncoderAligner(D_E, D_T).fit(expert[:3])
    with pytest.raises(ValueError, match="val_fraction"):
        AutoEncoderAligner(D_E, D_T, val_fraction=1.5)


def test_paper_widths_smoke():
    """640-wide expert to 576-wide target: the error message from the brief."""
    g = gen(7)
    expert = torch.randn(30, 640, generator=g)
    aligner = ProcrustesAligner(640, 576, rank=100).fit(expert, torch.randn(30, 576, generator=g))
    assert aligner.fit_info["rank"] == 29
    with pytest.raises(ValueError, match="expects 640-wide expert activations, got 576: did you pass target"):
        aligner.transform(torch.randn(2, 576))


def test_autoencoder_fits_inside_no_grad():
    """Callers often capture under torch.no_grad(); fitting must still train."""
    import torch

    from steer_lens.align import make_aligner

    x = torch.randn(40, 8)
    with torch.no_grad():
        al = make_aligner("autoencoder", 8, 6, solver="adam", max_epochs=5).fit(x)
    assert al.transform(x).shape == (40, 6)
