"""Probes on tiny random models, each against a known answer."""

import pytest
import torch

from steer_lens import probes
from steer_lens.probes.attribution import answer_logprob

PAIRS = [("the cat sat", " on the mat"), ("one two", " three"), ("red green", " blue")]


def test_logit_lens_unembedding_direction_ranks_its_token_first(tiny_model):
    model = tiny_model
    W = model.W_U.float()
    tok = int(W.norm(dim=0).argmax())  # the longest column cannot be beaten by a dot product
    gamma = model.ln_final(torch.ones(1, 1, model.cfg.d_model))[0, 0]  # = gamma * 1 / rms(1)
    lens = probes.logit_lens(model, W[:, tok] / gamma, k=5)  # undo gamma: normed vector = W_U[:, tok]
    assert lens.top[0][0] == model.tokenizer.decode([tok])
    assert lens.bottom[0][1] < lens.top[-1][1]
    raw = probes.logit_lens(model, W[:, tok], norm=False, k=3)
    assert raw.top[0][0] == model.tokenizer.decode([tok])
    assert torch.allclose(raw.scores, W[:, tok] @ W)


def test_logit_lens_norm_matches_model_readout(tiny_llama):
    model = tiny_llama
    v = torch.randn(model.cfg.d_model)
    expected = model.unembed(model.ln_final(v[None, None]))[0, 0]
    bias = model.unembed(torch.zeros(1, 1, model.cfg.d_model))[0, 0]
    assert torch.allclose(probes.unembed_scores(model, v), expected - bias, atol=1e-5)
    assert torch.allclose(probes.unembed_scores(model, 3 * v), probes.unembed_scores(model, v), atol=1e-4)


def test_direct_effect_zero_strength_is_zero_and_positive_kl(tiny_llama):
    v = {"blocks.2.hook_resid_post": torch.randn(tiny_llama.cfg.d_model)}
    zero = probes.direct_effect(tiny_llama, ["hello", "abc"], v, 0.0, k=3)
    assert zero.delta.abs().max() == 0 and zero.kl.abs().max() < 1e-6
    eff = probes.direct_effect(tiny_llama, ["hello", "abc"], v, 4.0, k=3)
    assert eff.delta.shape == (2, tiny_llama.W_U.shape[1]) and bool((eff.kl > 0).all())
    assert eff.top[0][1] >= eff.top[-1][1] and len(eff.bottom) == 3


def test_direct_effect_reuses_precomputed_clean_logits(tiny_llama):
    """Passing the unsteered logits gives the same effect as recomputing them; they are the model's
    next-token logits at each prompt's own last token (the short prompt is padded in the batch;
    reference: the prompt run alone), and logits of other prompts are refused."""
    from steer_lens.tokens import batch_encode

    v = {"blocks.1.hook_resid_post": torch.randn(tiny_llama.cfg.d_model)}
    prompts = ["hello there", "abc"]
    clean = probes.last_logits(tiny_llama, prompts)
    with torch.no_grad():
        full = tiny_llama(batch_encode(tiny_llama, ["abc"]).tokens)
    assert torch.allclose(clean[1], full[0, -1].float(), atol=1e-4)
    fresh = probes.direct_effect(tiny_llama, prompts, v, 3.0, k=3)
    reused = probes.direct_effect(tiny_llama, prompts, v, 3.0, k=3, clean=clean)
    assert torch.allclose(fresh.delta, reused.delta) and torch.allclose(fresh.kl, reused.kl)
    assert fresh.top == reused.top
    with pytest.raises(ValueError, match="2 prompts"):
        probes.direct_effect(tiny_llama, prompts, v, 3.0, clean=clean[:1])
    with pytest.raises(ValueError, match="of this model"):
        probes.direct_effect(tiny_llama, prompts, v, 3.0, clean=clean[:, :-1])


def test_cosine_matrix_self_is_one():
    vs = {"a": torch.randn(16), "b": torch.randn(16), "neg_a": None}
    vs["neg_a"] = -2 * vs["a"]
    m = probes.cosine_matrix(vs)
    assert torch.allclose(m.diagonal(), torch.ones(3))
    assert torch.allclose(m, m.T) and abs(float(m[0, 2]) + 1) < 1e-6
    sim = probes.method_similarity({"x": {"h1": vs["a"], "h2": vs["b"]}, "y": {"h1": vs["a"]}})
    assert list(sim) == ["h1"] and sim["h1"][0] == ["x", "y"] and float(sim["h1"][1][0, 1]) == pytest.approx(1)
    with pytest.raises(ValueError):
        probes.cosine_matrix([torch.zeros(3)])


def test_auroc_known_values():
    y = torch.tensor([1, 1, 0, 0])
    assert probes.auroc(torch.tensor([3.0, 2.0, 1.0, 0.0]), y) == 1.0
    assert probes.auroc(torch.tensor([0.0, 1.0, 2.0, 3.0]), y) == 0.0
    assert probes.auroc(torch.tensor([1.0, 1.0, 1.0, 1.0]), y) == 0.5
    sk = pytest.importorskip("sklearn.metrics")
    s, lab = torch.randn(50).round(decimals=1), torch.arange(50) % 3 == 0
    assert probes.auroc(s, lab) == pytest.approx(sk.roc_auc_score(lab.numpy(), s.numpy()))


def test_planted_direction_auroc_one_random_half():
    g = torch.Generator().manual_seed(0)
    d, n = 32, 200
    planted = torch.zeros(d)
    planted[3] = 1.0
    pos = torch.randn(n, 2, d, generator=g)
    neg = torch.randn(n, 2, d, generator=g)
    pos[..., 3] += 6.0
    rows = probes.probe_along_vector(pos, neg, planted, layers=[5, 7])
    assert [r["layer"] for r in rows] == [5, 7]
    assert all(r["projection_auroc"] > 0.99 and r["probe_auroc"] > 0.97 for r in rows)
    rand = torch.randn(d, generator=g)
    rand[3] = 0.0
    assert abs(probes.projection_auroc(pos[:, 0], neg[:, 0], rand) - 0.5) < 0.1


def test_spectrum_stats_and_agop_history():
    s = probes.spectrum_stats(torch.tensor([1.0, 0.0, 0.0]))
    assert s["top_share"] == 1 and s["effective_rank"] == pytest.approx(1)
    flat = probes.spectrum_stats(torch.ones(4))
    assert flat["effective_rank"] == pytest.approx(4) and flat["top_share"] == 0.25
    from steer_lens.rfm import RFMConfig, steering_vector

    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g)
    pos[:, 0] += 3
    direction = steering_vector(pos, neg, config=RFMConfig(iters=3))
    rows = probes.agop_history(direction)
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, "final"]
    assert rows[-1]["top_share"] == pytest.approx(direction.top_share, rel=1e-4)
    assert rows[-1]["effective_rank"] == pytest.approx(direction.effective_rank, rel=1e-4)


def test_token_projections_match_cache(tiny_llama):
    v = torch.randn(tiny_llama.cfg.d_model)
    tp = probes.token_projections(tiny_llama, "hello world", v, layers=[0, 3], chat_template=False)
    assert tp.values.shape == (2, len(tp.tokens)) and "".join(tp.tokens) == "hello world"
    _, cache = tiny_llama.run_with_cache(torch.tensor([[tiny_llama.tokenizer.convert_tokens_to_ids(c)
                                                        for c in "hello world".replace(" ", "Ġ")]]))
    expected = cache["blocks.3.hook_resid_post"][0] @ (v / v.norm())
    assert torch.allclose(tp.values[1], expected, atol=1e-5)


def test_gradient_x_activation_matches_finite_difference(tiny_llama):
    torch.manual_seed(0)
    vecs = {"blocks.1.hook_resid_post": torch.randn(64), "blocks.2.hook_resid_post": torch.randn(64)}
    norms = {h: 2.0 for h in vecs}
    att = probes.steering_attribution(tiny_llama, PAIRS, vecs, 1.5, norms=norms, chat_template=False)
    eps = 1e-3
    up = answer_logprob(tiny_llama, PAIRS, vecs, 1.5 * (1 + eps), norms=norms, chat_template=False)
    down = answer_logprob(tiny_llama, PAIRS, vecs, 1.5 * (1 - eps), norms=norms, chat_template=False)
    fd = (up - down) / (2 * eps)  # d/dα log p(answer | α δ) at α = 1
    assert torch.allclose(att.total, fd, rtol=2e-2, atol=1e-3)
    comp = sum(c.sum(1) for c in att.per_component.values())
    pos = sum(p.sum(1) for p in att.per_position.values())
    assert torch.allclose(comp, att.total, atol=1e-5) and torch.allclose(pos, att.total, atol=1e-5)
    assert torch.allclose(att.logprob_steered, answer_logprob(tiny_llama, PAIRS, vecs, 1.5, norms=norms,
                                                              chat_template=False), atol=1e-5)
    assert torch.allclose(att.logprob_clean, answer_logprob(tiny_llama, PAIRS, vecs, 0.0, norms=norms,
                                                            chat_template=False), atol=1e-5)


def test_answer_gradient_is_the_first_order_change_of_the_answer(tiny_llama):
    torch.manual_seed(1)
    hooks = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    grads = probes.answer_gradient(tiny_llama, PAIRS, hooks, chat_template=False, batch_size=2)
    assert all(g.shape == (len(PAIRS), tiny_llama.cfg.d_model) for g in grads.values())
    for h in hooks:  # one vector at one hook: finite difference of the summed log-prob along it
        v = torch.randn(tiny_llama.cfg.d_model)
        eps = 1e-2
        up = answer_logprob(tiny_llama, PAIRS, {h: v}, eps, norms={h: 1.0}, chat_template=False)
        down = answer_logprob(tiny_llama, PAIRS, {h: v}, -eps, norms={h: 1.0}, chat_template=False)
        assert torch.allclose(grads[h] @ (v / v.norm()), (up - down) / (2 * eps), rtol=3e-2, atol=1e-3)
    per_tok = probes.answer_gradient(tiny_llama, PAIRS, hooks[:1], per_token=True, chat_template=False)
    n_tok = torch.tensor([len(tiny_llama.tokenizer(c, add_special_tokens=False)["input_ids"]) for _, c in PAIRS])
    assert n_tok.max() > 1 and torch.allclose(per_tok[hooks[0]] * n_tok[:, None], grads[hooks[0]], atol=1e-5)
    with pytest.raises(ValueError, match="no hook point"):
        probes.answer_gradient(tiny_llama, PAIRS, ["blocks.1.resid"])


@pytest.fixture(scope="module")
def tiny_plan(tiny_llama, tiny_gemma):
    from steer_lens.pipeline import ExpertSteer
    from steer_lens.rfm import RFMConfig

    pos = [(f"item {i} is", " good") for i in range(12)]
    neg = [(f"item {i} is", " bad") for i in range(12)]
    return ExpertSteer(n_pairs=2, alignment="ridge", rfm=RFMConfig(iters=2)).fit(tiny_gemma, tiny_llama, pos, neg)


def test_recording_directions_follow_plan_pairs(tiny_llama, tiny_gemma):
    from steer_lens.pipeline import ExpertSteer
    from steer_lens.rfm import RFMConfig

    pos = [(f"item {i} is", " good") for i in range(12)]
    neg = [(f"item {i} is", " bad") for i in range(12)]
    with probes.recording_directions() as rec:
        plan = ExpertSteer(n_pairs=2, alignment="ridge", rfm=RFMConfig(iters=2)).fit(tiny_gemma, tiny_llama, pos, neg)
    assert len(rec) == len(plan.pairs) == 2
    for pair, d in zip(plan.pairs, rec):
        hook = f"blocks.{pair.target_layer}.hook_resid_post"
        assert torch.allclose(plan.spectra[hook], d.eigenvalues.float())
        assert len(d.rfm.history) == 3


def test_layer_ablation_single_pair_equals_pair_alone(tiny_llama, tiny_plan):
    from steer_lens.data import Item
    from steer_lens.steer import steer

    items = [Item(id=str(i), question=f"is {i} even", choices=["yes", "no"], answer=i % 2,
                  domain="math", source="t") for i in range(4)]
    metric = probes.margin_metric(items, chat_template=False)
    rows = probes.layer_ablation(tiny_llama, tiny_plan, metric, strength=2.0)
    hooks = list(tiny_plan.vectors)
    assert [r["condition"] for r in rows] == ["unsteered", "full", *[f"only {h}" for h in hooks],
                                              *[f"without {h}" for h in hooks]]
    for h in hooks:
        with steer(tiny_llama, {h: tiny_plan.vectors[h]}, 2.0, norms={h: tiny_plan.norms[h]}):
            alone = metric(tiny_llama)
        only = next(r for r in rows if r["condition"] == f"only {h}")
        assert only["metric"] == pytest.approx(alone, abs=1e-6)
    # with two pairs, "without A" is "only B"
    a, b = hooks
    assert next(r for r in rows if r["condition"] == f"without {a}")["metric"] == pytest.approx(
        next(r for r in rows if r["condition"] == f"only {b}")["metric"], abs=1e-6)
    assert rows[0]["metric"] == pytest.approx(metric(tiny_llama), abs=1e-6) and rows[0]["vs_unsteered"] == 0
    acc = probes.accuracy_metric(items, chat_template=False)(tiny_llama)
    assert 0.0 <= acc <= 1.0
    both = probes.layer_ablation(tiny_llama, tiny_plan, probes.answer_metrics(items, chat_template=False), 2.0)
    assert [r["margin"] for r in both] == pytest.approx([r["metric"] for r in rows], abs=1e-6)
    assert both[0]["accuracy"] == pytest.approx(acc)
    with pytest.raises(ValueError):
        probes.subplan(tiny_plan, ["blocks.0.hook_nope"])


def test_grouped_folds_avoid_pair_leakage():
    # each item = one random "prompt" vector; correct/wrong answer adds +/- the same answer feature
    # to half the items each way, so the label is not linearly decodable (AUROC ~ 0.5). Splitting
    # pairs across folds leaks the prompt and pushes the ungrouped estimate below chance.
    g = torch.Generator().manual_seed(0)
    n, d = 60, 40
    prompt = torch.randn(n, d, generator=g) * 3
    answer = torch.zeros(d)
    answer[0] = 1.0
    flip = (torch.arange(n) % 2 * 2 - 1).float()[:, None]
    pos, neg = prompt + flip * answer, prompt - flip * answer
    groups = torch.cat([torch.arange(n), torch.arange(n)])
    grouped = probes.logistic_probe_auroc(pos, neg, groups=groups)
    assert abs(grouped - 0.5) < 0.15
    assert probes.logistic_probe_auroc(pos, neg) < grouped
