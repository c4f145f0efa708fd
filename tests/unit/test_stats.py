"""steer_lens.stats: Holm / BH corrections against hand-computed values, family adjustment of
result rows, and the McNemar power / detectable-difference helpers."""

import math

import numpy as np
import pytest

from steer_lens.evaluate import mcnemar
from steer_lens.stats import adjust, bh, holm, mcnemar_mde, mcnemar_mde_normal, mcnemar_power

P = [0.01, 0.04, 0.03, 0.005]


def test_holm_known_values():
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, max(0.04*1, 0.06)=0.06
    assert holm(P) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_bh_known_values():
    # p*m/rank: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04 (step-up minimum)
    assert bh(P) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert bh([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05] * 5)


def test_single_test_is_unchanged():
    assert holm([0.03]) == bh([0.03]) == pytest.approx([0.03])


@pytest.mark.parametrize("bad", [[0.1, 1.5], [-0.01], [float("nan")]])
def test_bad_pvalues_are_named(bad):
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        holm(bad)


def test_adjust_rows_by_family_and_skips_untested():
    rows = [{"ds": "a", "p": 0.01}, {"ds": "a", "p": 0.04}, {"ds": "b", "p": 0.04},
            {"ds": "a", "p": None}, {"ds": "a"}]
    out = adjust(rows, family="ds")
    assert [r.get("p_holm") for r in out] == pytest.approx([0.02, 0.04, 0.04, None, None])
    assert "p_holm" not in rows[0]  # copies
    one = adjust(rows, method="bh", out_key="q")
    assert one[0]["q"] == pytest.approx(0.03) and one[2]["q"] == pytest.approx(0.04)  # 0.01*3/1; 0.04
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(rows, method="bonferroni")
    with pytest.raises(KeyError, match="'x'"):
        adjust(rows, family="x")


def test_mcnemar_power_matches_simulation():
    n, d, diff = 300, 0.2, 0.06
    exact = mcnemar_power(n, d, diff)
    rng = np.random.default_rng(0)
    p10, p01 = (d + diff) / 2, (d - diff) / 2
    hits = 0
    for _ in range(1500):
        u = rng.random(n)
        hits += mcnemar((u < p10).tolist(), ((u >= p10) & (u < p10 + p01)).tolist())["p"] <= 0.05
    assert abs(hits / 1500 - exact) < 0.04  # ~3 standard errors
    assert mcnemar_power(n, d, 0.0) <= 0.05  # the size of the exact test


def test_mde_is_where_power_reaches_target_and_agrees_with_normal_approx():
    for n, d in [(198, 0.2), (349, 0.1), (1000, 0.3)]:
        m = mcnemar_mde(n, d)
        assert mcnemar_power(n, d, m) >= 0.8 > mcnemar_power(n, d, m - 0.002)
        assert m == pytest.approx(mcnemar_mde_normal(n, d), rel=0.08)
    assert mcnemar_mde(1000, 0.2) < mcnemar_mde(200, 0.2)
    assert math.isnan(mcnemar_mde(10, 0.05))  # too few items to reach 80% power at all


def test_power_inputs_are_checked():
    with pytest.raises(ValueError, match="exceeds the discordance"):
        mcnemar_power(100, 0.1, 0.2)
    with pytest.raises(ValueError, match="discordance must be"):
        mcnemar_mde(100, 0.0)
    with pytest.raises(ValueError, match="n must be"):
        mcnemar_mde(0, 0.1)
