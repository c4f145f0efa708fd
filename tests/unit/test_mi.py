"""Mutual-information estimators, the layer-pair matrix, pair selection and the heatmap."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steer_lens.mi import LayerPair, gaussian_mi, ksg_mi, mi_matrix, plot_mi, select_pairs


pytestmark = pytest.mark.usefixtures("one_thread")  # shared fixture in tests/conftest.py


def correlated(n: int, rhos: list[float], seed: int, mix: bool = True) -> tuple[torch.Tensor, torch.Tensor, float]:
    """x, y with canonical correlations ``rhos`` (optionally mixed by invertible maps) and their MI."""
    g = torch.Generator().manual_seed(seed)
    rho = torch.tensor(rhos, dtype=torch.float64)
    x = torch.randn(n, len(rhos), generator=g, dtype=torch.float64)
    y = rho * x + (1 - rho**2).sqrt() * torch.randn(n, len(rhos), generator=g, dtype=torch.float64)
    if mix:
        x = x @ invertible(len(rhos), g) + 5.0
        y = y @ invertible(len(rhos), g) - 3.0
    return x, y, float(-0.5 * torch.log1p(-(rho**2)).sum())


def invertible(d: int, g: torch.Generator) -> torch.Tensor:
    q1 = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    q2 = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    return q1 @ torch.diag(torch.linspace(0.3, 3.0, d, dtype=torch.float64)) @ q2


def test_gaussian_mi_matches_analytic():
    x, y, truth = correlated(5000, [0.9, 0.6, 0.3], seed=0)
    assert gaussian_mi(x, y, k=None) == pytest.approx(truth, rel=0.03)
    assert gaussian_mi(x, y) == pytest.approx(truth, rel=0.03)  # k=32 > width keeps everything
    assert gaussian_mi(x.float(), y.float()) == pytest.approx(truth, rel=0.03)


def test_ksg_matches_analytic():
    x, y, truth = correlated(3000, [0.8, 0.5], seed=1)
    assert ksg_mi(x, y, k=None) == pytest.approx(truth, rel=0.1, abs=0.03)


def test_independent_is_about_zero():
    x, y, truth = correlated(5000, [0.0, 0.0, 0.0], seed=2)
    assert truth == 0.0
    assert 0 <= gaussian_mi(x, y, k=None) < 0.01
    assert abs(ksg_mi(x, y, k=None)) < 0.03


def test_perfect_correlation_is_finite_and_large():
    x, _, _ = correlated(500, [0.5, 0.5], seed=3)
    value = gaussian_mi(x, x @ invertible(2, torch.Generator().manual_seed(0)), k=None)
    assert math.isfinite(value) and value > 20


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), d=st.integers(1, 5))
def test_symmetric_and_invariant_to_invertible_maps(seed, d):
    g = torch.Generator().manual_seed(seed)
    rhos = torch.rand(d, generator=g, dtype=torch.float64) * 0.95
    x, y, _ = correlated(400, rhos.tolist(), seed=seed)
    base = gaussian_mi(x, y, k=None)
    assert gaussian_mi(y, x, k=None) == pytest.approx(base, rel=1e-9, abs=1e-12)
    moved = gaussian_mi(x @ invertible(d, g) + 7.0, y @ invertible(d, g) - 1.0, k=None)
    assert moved == pytest.approx(base, rel=1e-6, abs=1e-9)
    assert ksg_mi(x, y, k=None) == pytest.approx(ksg_mi(y, x, k=None), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("signal", [1.0, 0.0])  # 0: flat spectrum, the dense-eigh fallback
def test_truncated_pca_matches_numpy_reference(signal):
    """Wide inputs take the subspace-iteration path; compare with a dense SVD reference."""
    g = torch.Generator().manual_seed(4)
    n, k = 700, 6
    latent = signal * torch.randn(n, 10, generator=g, dtype=torch.float64)
    x = latent @ torch.randn(10, 300, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, 300, generator=g, dtype=torch.float64)
    y = latent[:, :5] @ torch.randn(5, 280, generator=g, dtype=torch.float64) + torch.randn(n, 280, generator=g, dtype=torch.float64)

    def scores(a: np.ndarray) -> np.ndarray:
        a = a - a.mean(0)
        a = a / np.linalg.norm(a, axis=0)
        return np.linalg.svd(a, full_matrices=False)[0][:, :k]

    rho = np.linalg.svd(scores(x.numpy()).T @ scores(y.numpy()), compute_uv=False)
    reference = -0.5 * np.log1p(-(rho**2)).sum()
    assert gaussian_mi(x, y, k=k) == pytest.approx(reference, rel=1e-5)


def test_mi_matrix_entries_equal_pairwise():
    g = torch.Generator().manual_seed(5)
    n = 300
    latent = torch.randn(n, 4, generator=g)
    expert = torch.stack([latent @ torch.randn(4, 20, generator=g) * (i + 1) + torch.randn(n, 20, generator=g)
                          for i in range(3)], 1)
    target = torch.stack([latent[:, :j + 1] @ torch.randn(j + 1, 12, generator=g) + torch.randn(n, 12, generator=g)
                          for j in range(4)], 1)
    m = mi_matrix(expert, target, k=5)
    assert m.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert m[i, j].item() == pytest.approx(gaussian_mi(expert[:, i], target[:, j], k=5), rel=1e-9)
    assert (m[:, 3] > m[:, 0]).all()  # more shared latents, more information
    ksg = mi_matrix(expert[:, :2], target[:, :2], estimator="ksg", k=2)
    assert ksg[1, 0].item() == pytest.approx(ksg_mi(expert[:, 1], target[:, 0], k=2), rel=1e-9)


def test_mi_errors_name_the_problem():
    x, y, _ = correlated(100, [0.5, 0.5], seed=6)
    with pytest.raises(ValueError, match="100 rows but target/y has 99"):
        gaussian_mi(x, y[:99])
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        gaussian_mi(bad, y)
    wide = torch.randn(50, 40)
    with pytest.raises(ValueError, match="too few .* lower k"):
        gaussian_mi(wide, wide, k=32)
    with pytest.raises(ValueError, match="too few"):
        mi_matrix(torch.randn(50, 2, 40), torch.randn(50, 3, 40), k=32)
    with pytest.raises(ValueError, match="estimator"):
        mi_matrix(torch.randn(50, 2, 4), torch.randn(50, 3, 4), estimator="mine")
    with pytest.raises(ValueError, match="rows"):
        mi_matrix(torch.randn(50, 2, 4), torch.randn(49, 3, 4), k=2)


MATRIX = torch.tensor([[0.5, 0.1, 0.9, 0.4],
                       [0.2, 0.3, 0.8, 0.05],
                       [0.7, 0.6, 0.0, 1.0]], dtype=torch.float64)


def test_select_lowest_and_highest():
    assert select_pairs(MATRIX, 2, one_per_target=False) == [LayerPair(2, 2, 0.0), LayerPair(1, 3, 0.05)]
    assert select_pairs(MATRIX, 1, "highest") == [LayerPair(2, 3, 1.0)]
    picks = select_pairs(MATRIX, 4)
    assert [p.mi for p in picks] == sorted(p.mi for p in picks)
    assert len({p.target_layer for p in picks}) == 4


def test_select_one_per_target_and_expert():
    m = torch.tensor([[0.1, 0.5], [0.2, 0.6]], dtype=torch.float64)
    assert select_pairs(m, 2, one_per_target=False) == [LayerPair(0, 0, 0.1), LayerPair(1, 0, 0.2)]
    assert select_pairs(m, 2) == [LayerPair(0, 0, 0.1), LayerPair(0, 1, 0.5)]
    assert select_pairs(m, 2, one_per_target=False, one_per_expert=True) == [LayerPair(0, 0, 0.1), LayerPair(1, 0, 0.2)]
    assert select_pairs(m, 2, one_per_expert=True) == [LayerPair(0, 0, 0.1), LayerPair(1, 1, 0.6)]
    with pytest.raises(ValueError, match="only 2 are possible"):
        select_pairs(m, 3)


def test_select_windows_and_labels():
    picks = select_pairs(MATRIX, 2, expert_layers=[4, 8, 12], target_layers=[0, 10, 20, 29],
                         target_window=(1, 28), expert_window=(4, 8))
    assert picks == [LayerPair(4, 10, 0.1), LayerPair(8, 20, 0.8)]
    with pytest.raises(ValueError, match="k=5"):
        select_pairs(MATRIX, 5, target_window=(1, 2))
    with pytest.raises(ValueError, match="3 distinct layer indices"):
        select_pairs(MATRIX, 1, expert_layers=[0, 1])
    with pytest.raises(ValueError, match="lo <= hi"):
        select_pairs(MATRIX, 1, target_window=(3, 1))
    with pytest.raises(ValueError, match="rule"):
        select_pairs(MATRIX, 1, "median")
    nan = MATRIX.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        select_pairs(nan, 1)


def test_plot_writes_png(tmp_path):
    pairs = select_pairs(MATRIX, 2, expert_layers=[4, 8, 12])
    path = tmp_path / "plots" / "mi.png"
    fig = plot_mi(MATRIX, pairs, expert_layers=[4, 8, 12], path=path, title="expert vs target")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.axes[0].get_title() == "expert vs target"
    assert not list(path.parent.glob(".*tmp"))  # no temporary left behind
    with pytest.raises(ValueError, match="missing from the labels"):
        plot_mi(MATRIX, pairs)  # labels 4/8/12 unknown without expert_layers


def test_plot_on_given_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert plot_mi(MATRIX, ax=ax) is fig
