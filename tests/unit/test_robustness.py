"""analyses/robustness.py: the perturbations touch only the item's content, the refits on subsets
of one capture equal fits on those prompts, and --fast writes every study's rows."""

import json
import sys
from pathlib import Path

import pytest
import torch

from steer_lens.data import contrast_prompts, load_dataset

ANALYSES = Path(__file__).resolve().parents[2] / "analyses"


@pytest.fixture(scope="module")
def robustness():
    sys.path.insert(0, str(ANALYSES))
    import robustness as module
    yield module
    sys.path.remove(str(ANALYSES))


def test_typos_keep_answers_instruction_and_word_shapes(robustness):
    items = load_dataset("sst2").split("test", limit=20)
    typo = robustness.perturb(items, "typos")
    assert typo == robustness.perturb(items, "typos")  # seeded
    changed = 0
    for a, b in zip(items, typo):
        (ca, ta), (cb, tb) = robustness._split_content(a), robustness._split_content(b)
        assert ta == tb and ta.startswith("\nIs the sentiment")  # the instruction line is untouched
        assert (a.choices, a.answer, a.id) == (b.choices, b.answer, b.id)
        wa, wb = ca.split(), cb.split()
        assert len(wa) == len(wb)
        for x, y in zip(wa, wb):
            assert sorted(x) == sorted(y) and x[0] == y[0] and x[-1] == y[-1]  # an inner swap
        changed += ca != cb
    assert changed >= 10  # 15% of the longer words: most sentences get at least one typo


def test_distractor_goes_before_the_content_of_ab_items(robustness):
    (it,) = load_dataset("caa_sycophancy").split("test", limit=1)
    (d,) = robustness.perturb([it], "distractor")
    assert d.question == f"{robustness.DISTRACTOR}\n{it.question}"
    assert d.question.endswith(it.question[it.question.find("\n\nChoices:"):]) and d.completions() == it.completions()
    with pytest.raises(ValueError, match="unknown perturbation"):
        robustness.perturb([it], "shouting")


@pytest.fixture(scope="module")
def fitter(robustness, tiny_llama, tiny_gemma):
    items = load_dataset("sst2").split("train", limit=12)
    pos, neg = contrast_prompts(items, by="correct")
    expert, target = tiny_gemma, tiny_llama
    return robustness.Fitter(expert, target, pos, neg, n_pairs=2), pos, neg


def test_caa_refits_match_direct_fits_and_flips_reverse(robustness, fitter):
    """Reference: CAA is a mean difference, so fitting on pairs idx equals fit_caa on those prompts,
    and swapping every pair's labels gives exactly the opposite vector."""
    from steer_lens.baselines import fit_caa

    f, pos, neg = fitter
    idx = [0, 3, 3, 7, 11]
    plan = f.fit("caa", idx)
    direct = fit_caa(f.T, [pos[i] for i in idx], [neg[i] for i in idx], f.layer)
    (h,) = plan.vectors
    assert torch.allclose(plan.vectors[h], direct.vectors[h], atol=1e-5)
    clean = f.fit("caa", range(f.n))
    flipped = f.fit("caa", range(f.n), [True] * f.n)
    assert robustness.cosine(clean, flipped) == pytest.approx(-1.0, abs=1e-6)
    assert robustness.cosine(clean, f.fit("caa", range(f.n))) == pytest.approx(1.0, abs=1e-6)


def test_expertsteer_refit_keeps_fixed_pairs(robustness, fitter):
    f, *_ = fitter
    clean = f.fit("expertsteer_ridge", range(f.n))
    pairs = robustness.pairs_of(clean)
    boot = f.fit("expertsteer_ridge", [1, 1, 2, 5, 6, 8, 9, 9, 10, 11], pairs=pairs)
    assert robustness.pairs_of(boot) == pairs and set(boot.vectors) == set(clean.vectors)
    assert -1.0 <= robustness.cosine(boot, clean) <= 1.0


def test_robustness_fast_writes_every_study(tmp_path, robustness):
    md = robustness.main(["--fast", "--out", str(tmp_path), "--datasets", "sst2",
                          "--methods", "caa", "expertsteer_ridge"])
    rows = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/*__*__*.json")
            if not p.name.endswith("__grid.json") and "__unsteered_" not in p.name]
    studies = {(r["method"], r["study"]) for r in rows}
    assert studies == {(m, s) for m in ("caa", "expertsteer_ridge")
                       for s in ("bootstrap", "noise", "size", "perturbation")}
    for r in rows:
        if r["study"] in ("noise", "size") and r["level"] in (0.0, 16):  # the clean fit itself
            assert r["cosine"] == pytest.approx(1.0, abs=1e-6)
        if r["study"] == "bootstrap" and r["method"] == "expertsteer_ridge":
            assert 0.0 <= r["pair_jaccard"] <= 1.0
        if r["study"] == "perturbation":
            assert 0 <= r["steered"] <= 1 and 0 <= r["unsteered"] <= 1
    text = md.read_text()
    assert "| sst2 | caa |" in text and (tmp_path / "robustness.png").stat().st_size > 1000
    again = robustness.main(["--fast", "--out", str(tmp_path), "--report-only"])
    assert again.read_text().split("\n", 3)[3] == text.split("\n", 3)[3]


def test_effect_strength_searches_both_signs(robustness):
    """A direction whose orientation is arbitrary (auto-encoder basis) moves the answers at negative
    strengths: the effect strength is found there and effects are reported in its sense."""
    def pt(s, share1):
        return {"strength": s, "shares": [1 - share1, share1], "accuracy": 0.5}
    pts = [pt(-0.5, 1.0), pt(-0.25, 1.0), pt(-0.1, 0.1), pt(0.0, 0.0), pt(0.1, 0.0), pt(0.25, 0.05)]
    assert robustness.effect_strength(pts, "label") == (-0.25, 1.0)  # largest move, smaller |strength|
    down = [pt(-0.1, 0.5), pt(0.0, 0.5), pt(0.1, 0.2)]
    assert robustness.effect_strength(down, "label") == (0.1, -1.0)
