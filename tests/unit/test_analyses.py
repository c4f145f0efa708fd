"""Every analysis script runs end to end in --fast mode (in-process: main(argv)) and writes its files."""

import importlib
import sys
from pathlib import Path

import pytest

ANALYSES = Path(__file__).resolve().parents[2] / "analyses"
SCRIPTS = ["mi_heatmap", "agop_spectra", "method_cosine", "logit_lens", "token_attribution", "layer_ablation",
           "probe_accuracy", "vector_reuse"]  # transfer_audit: its fixture below


@pytest.fixture(scope="module")
def analyses_path():
    sys.path.insert(0, str(ANALYSES))
    yield
    sys.path.remove(str(ANALYSES))


@pytest.mark.parametrize("name", SCRIPTS)
def test_analysis_runs_fast(name, tmp_path, analyses_path):
    module = importlib.import_module(name)
    out = module.main(["--fast", "--out", str(tmp_path)])
    pngs = sorted(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert list(tmp_path.glob("*.csv")) and not list(tmp_path.glob(".*tmp"))
    assert isinstance(out, dict) and "png" in out


@pytest.fixture(scope="module")
def transfer_default(tmp_path_factory, analyses_path):
    """One --fast transfer audit of arithmetic_2way with the stand-in pair (shared by the tests below)."""
    import transfer_audit

    out_dir = tmp_path_factory.mktemp("transfer_audit")
    return out_dir, transfer_audit.main(["--fast", "--out", str(out_dir), "--datasets", "arithmetic_2way"])


def test_transfer_audit_rows_and_cache(transfer_default, analyses_path):
    """It writes its figure and table; AUROCs are probabilities, every aligned pair is listed, and
    --report-only rebuilds the same table from the per-dataset cache without models."""
    import transfer_audit

    folder, out = transfer_default
    pngs = sorted(folder.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert list(folder.glob("*.csv")) and not list(folder.glob(".*tmp"))
    assert isinstance(out, dict) and "png" in out
    (row,) = out["rows"]
    for key in ("expert_probe", "target_probe", "autoencoder_in_expert", "autoencoder_in_target",
                "ridge_in_expert", "ridge_in_target"):
        assert 0.0 <= row[key] <= 1.0, key
    assert len(row["ridge_pairs"].split()) == 2 and (folder / "cache" / "arithmetic_2way.json").is_file()
    md = (folder / "transfer_audit.md").read_text()
    transfer_audit.main(["--fast", "--out", str(folder), "--report-only"])
    assert (folder / "transfer_audit.md").read_text() == md and "| arithmetic_2way |" in md


def test_transfer_audit_with_another_expert(tmp_path, transfer_default, analyses_path):
    """--expert audits that model (here a tiny Gemma-3 of 2 layers, not the stand-in pair's 3):
    its probes are read at its own layers, and the audit goes to its own folder."""
    import transfer_audit

    from steer_lens.testing import make_tiny_model

    other = make_tiny_model(tmp_path / "tuned", "gemma3", d_model=32, n_layers=2, seed=7)
    out = transfer_audit.main(["--fast", "--expert", str(other), "--out", str(tmp_path / "other"),
                               "--datasets", "arithmetic_2way"])
    (row,), (base,) = out["rows"], transfer_default[1]["rows"]
    assert len(row["expert_probe_by_layer"]) == 2 != len(base["expert_probe_by_layer"])
    assert (tmp_path / "other" / "cache" / "arithmetic_2way.json").is_file()


def test_dose_response_fast(tmp_path, analyses_path):
    """Every (dataset, method, strength) point is cached with its numbers; the summary answers the
    positive-control questions from those points, and --report-only rebuilds it without models."""
    import json

    import dose_response

    md = dose_response.main(["--fast", "--topic", "--out", str(tmp_path), "--methods", "label_caa", "caa"])
    points = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*__*.json")]
    assert len(points) == 2 * 2 * 3  # sst2 and caa_refusal x label_caa, caa x 3 strengths
    for p in points:
        assert 0 <= p["accuracy"] <= 1 and abs(sum(p["shares"]) - 1) < 1e-9 and p["neutral_loss"] > 0
    zero = [p for p in points if p["strength"] == 0 and p["dataset"] == "sst2"]
    assert zero[0]["accuracy"] == zero[1]["accuracy"]  # strength 0 = the same unsteered model
    text = md.read_text()
    assert "Positive control (a)" in text and "Positive control (b)" in text and "Does CAA move behaviour" in text
    assert (tmp_path / "sst2.png").stat().st_size > 1000 and (tmp_path / "topic.png").is_file()
    topic = json.loads((tmp_path / "cache" / "topic.json").read_text())
    assert [r["strength"] for r in topic["rows"]] == [0.0, 1.0] and all(0 <= r["topic_rate"] <= 1 for r in topic["rows"])
    again = dose_response.main(["--fast", "--out", str(tmp_path), "--report-only"])
    assert again.read_text().split("\n", 3)[3] == text.split("\n", 3)[3]  # same numbers (the command line differs)


def test_positive_control_summary_detects_monotone_label_shift(analyses_path):
    import dose_response

    rows = [{"dataset": "d", "method": "label_caa", "strength": s, "accuracy": 0.5, "shares": [1 - x, x],
             "pred_share": max(x, 1 - x), "neutral_loss": 2.0 + abs(s), "layers": [3], "n": 10, "n_choices": 2,
             "format": "mc", "behaviour_prob": None, "shared_labels": True}
            for s, x in [(-1, 0.0), (-0.1, 0.2), (0, 0.4), (0.1, 0.7), (1, 1.0)]]
    (line,) = dose_response.summarise(rows)
    assert line["shared_labels"] is True
    assert dose_response.shared_labels({"dataset": "sst2"})
    assert not dose_response.shared_labels({"dataset": "svamp_2way"})  # numbers differ per item
    assert (line["share1_min"], line["share1_max"], line["share1_spearman"]) == (0.0, 1.0, 1.0)
    assert line["loss_ratio_at_1"] == 1.5
    assert line["share1_monotone_fluent"] is True and line["fluent_range"] == "[-0.1, 0.1]"  # loss < 3.0
    rows[-1]["shares"], rows[-1]["neutral_loss"] = [0.6, 0.4], 2.2  # a drop inside the fluent range
    assert dose_response.summarise(rows)[0]["share1_monotone_fluent"] is False


def test_behaviour_moves_in_either_sign(analyses_path):
    """On an A/B set the summary reports the largest move of P(behaviour) at a fluent |strength| <= 1
    in the strength's sign and in either sign (a random direction has no behaviour sign)."""
    import dose_response

    rows = [{"dataset": "caa_x", "method": "random", "strength": s, "accuracy": 0.5, "shares": [0.5, 0.5],
             "pred_share": 0.5, "neutral_loss": 2.0 + 0.1 * abs(s), "layers": [3], "n": 10, "n_choices": 2,
             "format": "ab", "behaviour_prob": b, "shared_labels": True}
            for s, b in [(-2, 0.9), (-1, 0.7), (-0.5, 0.62), (0, 0.5), (0.5, 0.45), (1, 0.48), (2, 0.1)]]
    (line,) = dose_response.summarise(rows)
    # fluent points: loss < 2.4 at |s| <= 1 -> moves -0.2, -0.12 (sign against), -0.05, -0.02
    assert line["max_signed_bprob_move"] == -0.02 and line["max_abs_bprob_move"] == 0.2
    assert line["moves_by_0_10"] is False


def test_paper_setup_dry_run(tmp_path, analyses_path):
    """The reproduction recipe end to end on two tiny configs of the paper's families (Llama-3.1-style
    target, Qwen2 expert of another width) in bfloat16: the benchmark rows, the label methods and
    their control, and a report."""
    import json

    import paper_setup

    readme = paper_setup.main(["--dry-run", "--datasets", "arithmetic_2way", "--out", str(tmp_path)])
    configs = {f: json.loads((f / "config.json").read_text()) for f in (tmp_path / "cache").iterdir()}
    # selection folders (a rule set): rows that depend on the expert, and target-only rows; the unsteered
    # rows' folders ("rows": "unsteered test") hold no rules, shared by every rule set
    folders = {"expert" in c: f for f, c in configs.items() if "rules" in c}
    config = configs[folders[True]]
    assert config["dtype"] == "bfloat16" and config["target"] == "target" and config["expert"] == "expert"
    assert config["rules"]["limit_test"] == 8 and config["rules"]["grid"] == [0.5, 1.0]
    assert "expert" not in configs[folders[False]] and configs[folders[False]]["rules"] == config["rules"]
    assert {c["model"] for c in configs.values() if c.get("rows") == "unsteered test"} == {"target", "expert"}
    rows = {p.name.split("__")[1][:-5]: json.loads(p.read_text())
            for f in configs for p in f.glob("arithmetic_2way__*.json")}
    assert {"unsteered", "expert_unsteered", "caa", "label_caa", "expertsteer_autoencoder", "random",
            "expertsteer_label", "random_label", "reverse_expertsteer_autoencoder", "reverse_random"} <= set(rows)
    assert rows["random_label"]["strength"] == rows["expertsteer_label"]["strength"]
    assert all(0 <= r["accuracy"] <= 1 and r["n"] == 8 for r in rows.values())
    assert "steer_lens.protocol" in readme.read_text() and "analyses/paper_setup.py --dry-run" in readme.read_text()


def test_topic_reading_states_the_rise_and_the_collapse(analyses_path):
    import dose_response

    rows = [{"strength": s, "topic_rate": r, "neutral_loss": l}
            for s, r, l in [(0, 0.02, 2.6), (0.25, 0.28, 2.8), (0.5, 0.42, 4.5), (1, 0.0, 7.7)]]
    text = dose_response.topic_reading({"rows": rows})
    assert "rises monotonically from 0.02" in text and "0.42 at strength 0.5" in text and "falls to 0.00" in text
    rows[1]["topic_rate"] = 0.01
    assert "non-monotonically" in dose_response.topic_reading({"rows": rows})


def test_caa_diagnosis_fast(tmp_path, analyses_path):
    """Every (template, layer) of one behaviour set is swept; the strength-0 point is the unsteered
    model's P(behaviour) with that template (reference: evaluate), and the report counts the sets."""
    import json

    import caa_diagnosis
    from lens_common import load_models
    from steer_lens.data import load_dataset
    from steer_lens.evaluate import evaluate

    md = caa_diagnosis.main(["--fast", "--out", str(tmp_path)])
    rows = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/*__chat*__L*.json")]
    assert {r["chat_template"] for r in rows} == {True, False} and len({r["layer"] for r in rows}) == 2
    target, _ = load_models(True, n_ctx=4096)
    val = load_dataset("caa_sycophancy").split("validation", limit=4)
    for r in rows:
        assert r["raw_norm_ratio"] > 0
        zero = next(p for p in r["points"] if p["strength"] == 0)
        ref = evaluate(target, val, chat_template=r["chat_template"]).behaviour_prob
        assert abs(zero["behaviour_prob"] - ref) < 1e-5
    assert "Datasets where some (template, layer) moves P(behaviour)" in md.read_text()
    (letters,) = (tmp_path / "cache").glob("*/caa_sycophancy__letters.json")
    for r in json.loads(letters.read_text()):
        assert -1 <= r["median_cos_item_to_letter_dir"] <= 1 and r["caa_norm_over_item_norm"] >= 0
    assert "How much of the contrast is the letter" in md.read_text()


def test_tuned_directions_fast(tmp_path, analyses_path):
    """One row per requested expert layer (clipped to the tiny expert), each paired at matched
    depth; AUROCs and cosines are in range and the table lands in the README with its command."""
    import csv

    import tuned_directions
    from steer_lens.pipeline import depth_match

    out = tuned_directions.main(["--fast", "--out", str(tmp_path), "--layers", "0", "1", "9"])
    rows = list(csv.DictReader(open(out / "tuned_directions.csv")))
    assert [int(r["expert_layer"]) for r in rows] == [0, 1, 2]
    assert all(int(r["target_layer"]) == depth_match(int(r["expert_layer"]), 3, 4) for r in rows)
    for r in rows:
        assert all(0.0 <= float(r[k]) <= 1.0 for k in ("expert_probe", "knows_in_expert", "knows_in_target"))
        assert -1.0 <= float(r["cos_target_label"]) <= 1.0
        # the target's own label-CAA pushes the answer one way at +s and the other way at -s
        assert float(r["caa_shift_at_+0.3"]) * float(r["caa_shift_at_-0.3"]) < 0
    assert "--fast" in (out / "README.md").read_text()


def test_answer_tokens_skips_the_common_prefix(analyses_path):
    import tuned_directions
    from lens_common import load_models

    tok = load_models(True)[0].tokenizer
    prefix, (a, b) = tuned_directions.answer_tokens(tok, "208", "209")
    assert tok.decode([a]).endswith("8") and tok.decode([b]).endswith("9") and "209".startswith(prefix)
    with pytest.raises(ValueError, match="differ"):
        tuned_directions.answer_tokens(tok, "20", "20")


def test_knows_answer_probe_map_sees_a_planted_answer_and_not_a_random_one(analyses_path):
    """The probe map separates right from wrong completions when the right one is always the same
    word (AUROC near 1 at every layer), and stays near chance when which word is right is a coin
    flip unrelated to the prompt (both completions of an item share a fold)."""
    import random

    import knows_answer
    from lens_common import load_models
    from steer_lens.data import Item

    target = load_models(True)[0]
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefgh") for _ in range(5)) for _ in range(40)]
    planted = [Item(f"p{i}", f"{w}?", ["yes", "no"] if i % 2 else ["no", "yes"], 1 - i % 2, "general", "t")
               for i, w in enumerate(words)]
    coin = [Item(f"c{i}", f"{w}?", ["yes", "no"], rng.randrange(2), "general", "t") for i, w in enumerate(words)]
    seen = knows_answer.probe_map(target, planted)
    blind = knows_answer.probe_map(target, coin)
    assert len(seen) == target.cfg.n_layers and min(seen) > 0.95, seen
    assert max(abs(x - 0.5) for x in blind) < 0.25, blind


def test_knows_answer_fast(tmp_path, analyses_path):
    import csv

    import knows_answer

    path = knows_answer.main(["--fast", "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "arithmetic_2way.csv")))
    assert [r["model"] for r in rows] == ["tiny_expert", "tiny_target"]  # 3 then 4 layers: one table
    assert rows[0]["L3"] == "" and rows[1]["L3"] != ""
    assert all(0 <= float(r["best_auroc"]) <= 1 and 0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert "--fast" in path.read_text()


@pytest.fixture(scope="module")
def fast_main(tmp_path_factory, analyses_path):
    """One --fast benchmark run (the library's runner: unsteered, auto-encoder ExpertSteer, its random
    control) that the row-level analyses below read, as they read an ``analyses/main_results.py --fast`` run."""
    from steer_lens.bench.cli import main as bench_main

    main = tmp_path_factory.mktemp("main")
    bench_main(["--fast", "--out", str(main), "--methods", "unsteered", "expertsteer_autoencoder", "random",
                "--threads", "1", "--search", "reference"])  # main_results' default search
    return main


def test_random_directions_fast_reproduces_the_main_control(tmp_path, fast_main):
    """The refitted plan lands on the cached row's layers, and its seed-0 random direction scores the
    test items exactly as the runner's own random control did (same hooks, norms, strength)."""
    import csv
    import json

    import random_directions

    main = fast_main
    readme = random_directions.main(["--fast", "--main-out", str(main), "--out", str(tmp_path / "rd"),
                                     "--method", "expertsteer_autoencoder", "--seeds", "1", "2"])
    (control,) = main.glob("cache/*/arithmetic_2way__random.json")
    control = json.loads(control.read_text())
    points = {int(r["seed"]): r for r in csv.DictReader(open(tmp_path / "rd" / "points.csv"))}
    assert sorted(points) == [0, 1, 2] and all(r["same_items"] == "True" for r in points.values())
    seed0 = json.loads((tmp_path / "rd" / "cache" / "arithmetic_2way__expertsteer_autoencoder__seed0.json").read_text())
    assert seed0["correct"] == control["correct"] and seed0["layers"] == control["layers"]
    cos = json.loads((tmp_path / "rd" / "cache" / "arithmetic_2way__expertsteer_autoencoder__cosines.json").read_text())
    assert set(cos["method"]) == {f"blocks.{layer}.hook_resid_post" for layer in control["layers"]}
    assert all(-1 <= c <= 1 for d in cos["method"].values() for c in d.values())
    assert "| arithmetic_2way | expertsteer_autoencoder |" in readme.read_text()
    # a cached run is not recomputed; a missing row gets a clear error
    assert random_directions.main(["--fast", "--main-out", str(main), "--out", str(tmp_path / "rd"),
                                   "--method", "expertsteer_autoencoder", "--seeds", "1", "2"]) == readme
    again = random_directions.main(["--fast", "--main-out", str(main), "--out", str(tmp_path / "rd"), "--report-only"])
    made_by = again.read_text().splitlines()[2]
    command = made_by.split("`")[1]  # the command that computed the numbers, not the one that rewrote the report
    assert command.startswith("python analyses/random_directions.py --fast") and "--report-only" not in command
    assert "(report rewritten with `--report-only`" in made_by
    with pytest.raises(SystemExit, match="no cached caa row"):
        random_directions.main(["--fast", "--main-out", str(main), "--out", str(tmp_path / "rd"), "--method", "caa"])
    # the rotation-matched control (cosines between hooks kept) is cached and reported apart
    rot = random_directions.main(["--fast", "--main-out", str(main), "--out", str(tmp_path / "rd"),
                                  "--method", "expertsteer_autoencoder", "--seeds", "1", "--structure", "rotation"])
    assert len(list((tmp_path / "rd" / "cache").glob("*__rotseed*.json"))) == 2
    cos = json.loads((tmp_path / "rd" / "cache" / "arithmetic_2way__expertsteer_autoencoder__cosines.json").read_text())
    assert sorted(cos["random"]) == ["0", "1", "2"]  # the earlier run's seed 2 is kept, not overwritten
    assert "| rotation | 2 |" in rot.read_text() and "| independent | 3 |" in rot.read_text()


def test_steering_mechanism_fast_readout_predicts_small_shifts(tmp_path, fast_main):
    """The readout gradient's first-order prediction matches the measured margin shift at a small
    strength (same units: per-token scores, the plan's norms, every hook), sign-flipped at -s; the
    calibration bias never lowers validation accuracy and re-decides the unsteered test row."""
    import json

    import numpy as np
    import steering_mechanism
    import torch

    from steer_lens.data import load_dataset

    args = ["--fast", "--main-out", str(fast_main), "--out", str(tmp_path), "--strength", "0.02", "--seeds", "0", "1"]
    readme = steering_mechanism.main(args)
    (cached,) = (tmp_path / "cache").glob("arithmetic_2way__expertsteer_autoencoder__s0.02.json")
    r = json.loads(cached.read_text())
    assert [d["direction"] for d in r["readout"]] == ["expertsteer_autoencoder", "target label direction",
                                                      "random seed 0", "random seed 1"]
    for d in r["readout"]:
        linear = (d["shift_plus"] - d["shift_minus"]) / 2
        assert abs(d["predicted_shift"] - linear) <= 0.1 * abs(linear) + 1e-4, d
        assert d["shift_plus"] * d["shift_minus"] <= 0 and -1 <= d["cos_readout"] <= 1
    assert any(abs(d["predicted_shift"]) > 1e-3 for d in r["readout"])  # the check above is not vacuous
    coord = r["coordinate"]
    assert [d["direction"] for d in coord["readout"]] == ["expertsteer_autoencoder: its largest coordinate only",
                                                          "expertsteer_autoencoder: without its largest coordinate"]
    parts = sum(d["predicted_shift"] for d in coord["readout"])  # first order: the two parts add up to the whole
    assert parts == pytest.approx(r["readout"][0]["predicted_shift"], rel=1e-3, abs=1e-6)
    assert all(0 < h["share"] <= 1 and h["sink_rank"] >= 1 for h in coord["hooks"].values())
    geo = {g["direction"]: g for g in r["geometry"]}
    assert list(geo) == [d["direction"] for d in r["readout"]]
    assert all(0 <= g["top10_pc_share"] <= 1 + 1e-9 and 0 < g["top_coordinate_share"] <= 1 for g in geo.values())
    (unsteered,) = fast_main.glob("cache/*/arithmetic_2way__unsteered.json")
    u = json.loads(unsteered.read_text())
    answers = {it.id: it.answer for it in load_dataset("arithmetic_2way").split("test")}
    signed = np.array([m if answers[i] == 1 else -m for i, m in zip(u["ids"], u["margins"])])
    y = np.array([answers[i] for i in u["ids"]])
    from steer_lens.probes import auroc

    au, lo, hi = r["test_shift"]["auroc_unsteered"]
    assert au == pytest.approx(auroc(torch.as_tensor(signed), torch.as_tensor(y))) and lo <= au <= hi
    assert r["test_shift"]["auroc_control"] is not None  # the matched random control row was cached
    t = r["test_shift"]
    assert t["auroc_steered_minus_unsteered"][0] == pytest.approx(t["auroc_steered"][0] - t["auroc_unsteered"][0])
    c = r["calibration"]
    assert c["accuracy"] == pytest.approx(float(np.mean((signed + c["bias"] > 0) == (y == 1))))
    assert c["val_accuracy"] >= c["unsteered_val_accuracy"]  # b = 0 is a candidate: the fit cannot lose
    assert "| arithmetic_2way | expertsteer_autoencoder |" in readme.read_text()
    assert "last token" in r["components"]["skipped"]  # multi-token numbers: no exact split, and it says why
    assert "(not split: " in readme.read_text()
    assert steering_mechanism.main(args) == readme  # cached: not recomputed
    with pytest.raises(SystemExit, match="no cached caa row"):
        steering_mechanism.main(["--fast", "--main-out", str(fast_main), "--out", str(tmp_path), "--method", "caa"])


def test_steering_mechanism_geometry_on_planted_residuals(analyses_path):
    """A direction along the residuals' mean / along their largest-variance axis is recognised as such;
    a random direction looks typical."""
    from types import SimpleNamespace

    import steering_mechanism
    import torch

    gen = torch.Generator().manual_seed(0)
    d = 64
    x = torch.randn(4000, d, generator=gen)
    x[:, 0] *= 10  # the largest-variance axis
    x[:, 1] += 5  # the mean direction
    resid = {3: x}
    e = torch.eye(d)
    geo = {name: steering_mechanism.geometry(SimpleNamespace(vectors={"blocks.3.hook_resid_post": v}), resid)
           for name, v in (("axis", e[0]), ("mean", e[1]), ("random", torch.randn(d, generator=gen)))}
    assert geo["axis"]["variance_ratio"] > 20 and geo["axis"]["top10_pc_share"] > 0.99
    assert geo["axis"]["top_coordinate_share"] == pytest.approx(1.0)
    assert geo["mean"]["cos_mean_resid"] > 0.95 and abs(geo["axis"]["cos_mean_resid"]) < 0.1
    assert geo["random"]["variance_ratio"] < 5 and geo["random"]["top10_pc_share"] < 0.6


def test_steering_mechanism_components_add_up(tiny_llama, analyses_path, one_thread):
    """The components part: grouped changes add up to the margin change, nothing below the first steered
    layer moves, the row's vector is also split at -strength."""
    import steering_mechanism
    import torch

    from steer_lens.data import Item
    from steer_lens.plan import SteeringPlan, model_card

    items = [Item(f"i{i}", "why " * (i % 3) + f"is {i} x or y", ("x", "y"), i % 2) for i in range(5)]
    gen = torch.Generator().manual_seed(0)
    d = tiny_llama.cfg.d_model
    plans = [(name, SteeringPlan(vectors={"blocks.2.hook_resid_post": torch.randn(d, generator=gen)}, pairs=[],
                                 mi=None, expert={}, target=model_card(tiny_llama),
                                 norms={"blocks.2.hook_resid_post": 4.0})) for name in ("row", "random seed 0")]
    out = steering_mechanism.components_part(tiny_llama, items, plans, 1.5, batch_size=2)
    assert [r["direction"] for r in out["runs"]] == ["row", "random seed 0", "row at -strength"]
    assert [r["strength"] for r in out["runs"]] == [1.5, 1.5, -1.5]
    for r in out["runs"]:
        parts = r["direct"] + r["final_norm"] + r["attention"] + r["mlp"]
        assert parts == pytest.approx(r["margin_change"], abs=1e-4)
        assert all(x["attention"] == 0 and x["mlp"] == 0 for x in r["per_layer"] if x["layer"] <= 2)
        assert abs(r["margin_change"]) > 1e-4 and len(r["largest"]) == 6
        assert all(0 <= t["same_sign"] <= 1 for t in r["largest"])
    nr = steering_mechanism.neurons_part(tiny_llama, items, plans[0][1], 1.5, out, batch_size=2)
    mlp_layer = max(out["runs"][0]["per_layer"], key=lambda x: abs(x["mlp"]))
    assert nr["layer"] == mlp_layer["layer"] == 3 and nr["n_neurons"] == tiny_llama.cfg.d_mlp
    # the neurons (without the unchanged output bias) add up to that MLP's change at +strength
    assert nr["change_plus"] == pytest.approx(mlp_layer["mlp"], abs=1e-4)
    assert 1 <= nr["neurons_for_half"] <= nr["n_neurons"] and len(nr["top"]) == 8
    assert abs(nr["top"][0]["plus"]) >= abs(nr["top"][-1]["plus"])
    assert "skipped" in steering_mechanism.neurons_part(tiny_llama, items, plans[0][1], 1.5, {"skipped": "x"}, 2)


def test_write_report_links_the_notes_beside_it(tmp_path, analyses_path):
    from lens_common import NOTES_LINK, write_report

    path = write_report(tmp_path / "README.md", "# Report\n\n| a |\n")
    assert path.read_text() == "# Report\n\n| a |\n"  # no notes.md: the report alone
    (tmp_path / "notes.md").write_text("## Notes\n\nhand-written\n\n")
    write_report(path, "# Report\n\n| b |\n")
    assert path.read_text() == f"# Report\n\n| b |\n\n{NOTES_LINK}\n"  # linked, not copied
    assert "hand-written" not in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "notes.md"]  # atomic: no temp left


def test_committed_reports_reach_their_notes():
    """A report beside a hand-written notes.md links to it (lens_common.write_report, tuned_experts) or,
    where its generator still copies the notes in (steer_lens.bench.report), holds their current text: a copy made
    before the notes changed is stale and must be regenerated with --report-only."""
    results = ANALYSES.parent / "results"
    stale = []
    for notes in sorted(results.glob("*/notes.md")):
        reports = [notes.parent / n for n in ("README.md", "summary.md") if (notes.parent / n).is_file()]
        if not reports:
            continue
        text = reports[0].read_text()
        if "](notes.md)" not in text and notes.read_text().rstrip("\n") not in text:
            stale.append(str(reports[0].relative_to(results.parent)))
    assert not stale, f"re-run these reports with --report-only (notes.md changed after them): {stale}"


def test_tuned_experts_matches_each_results_folder_to_its_own_card(analyses_path):
    from tuned_experts import card_name

    cards = {"g-arith": {}, "g-arith-85de8a9dd9ef": {}, "g-sst2": {}}
    assert card_name("g-arith-85de8a9dd9ef", cards) == "g-arith-85de8a9dd9ef"  # not the older g-arith card
    assert card_name("g-arith-46635c478202", cards) == "g-arith"
    assert card_name("g-sst2-da2e015fa406", cards) == "g-sst2"
    assert card_name("smollm2", cards) == "smollm2"  # no card: a base model run as the expert


def test_confirmation_families_and_anti_steerable_items(analyses_path):
    """The preregistration's plan parses; secondary comparisons are each unordered pair once, without the
    primary pairs in either order; the anti-steerable count is the items whose margin falls."""
    import confirmation as C

    plan = C.plan()
    assert plan["rule_set"] == "abca3c4a0a" and len(plan["primary"]) == 5
    toy = {"primary": [{"dataset": "d", "a": "expertsteer_label", "b": "calibration"}],
           "secondary": {"steered": ["expertsteer_label"], "baselines": ["kshot_4", "calibration"],
                         "against": ["unsteered", "calibration", "kshot_4"]}}
    rows = {("d", m): {} for m in ("expertsteer_label", "random_label", "calibration", "kshot_4", "unsteered")}
    pairs = C.secondary_pairs(toy, rows)
    unordered = [frozenset(p[1:]) for p in pairs]
    assert len(unordered) == len(set(unordered))
    assert frozenset(("expertsteer_label", "calibration")) not in unordered
    assert ("d", "expertsteer_label", "random_label") in pairs and frozenset(("kshot_4", "calibration")) in unordered
    # the family is final only when every comparison of the confirm stages has both rows
    toy["stages"] = [{"split": "confirm", "datasets": ["d"], "methods": [m for _, m in rows]},
                     {"split": "test", "datasets": ["e"], "methods": ["unsteered", "kshot_4"]}]
    assert sorted(C.planned_secondary(toy)) == sorted(pairs)
    toy["stages"][0]["methods"].append("kshot_8")
    toy["secondary"]["baselines"].append("kshot_8")
    assert set(pairs) < set(C.planned_secondary(toy))
    steered = {"ids": [1, 2, 3], "margins": [0.5, -0.2, 0.1], "correct": [True, False, True]}
    unsteered = {"ids": [1, 2, 3], "margins": [0.4, 0.3, -0.1], "correct": [True, True, False]}
    a = C.anti_steerable(steered, unsteered)
    assert (a["margin_drops"], a["right_to_wrong"], a["wrong_to_right"]) == (1, 1, 1)


def test_reports_state_the_rule_sets_of_the_test_splits_they_score(analyses_path, tmp_path, monkeypatch):
    from lens_common import write_report

    from steer_lens import ledger

    monkeypatch.setenv(ledger.ENV, str(tmp_path / "ledger.jsonl"))
    for rs in ("r1", "r2"):
        ledger.record("sst2", "test", "h", n=1, model="m", rule_set=rs)
    text = write_report(tmp_path / "README.md", "# a report\n", test_splits={"sst2"}).read_text()
    assert "## The test splits in the ledger" in text and "| sst2 | 2 | 2 | exploratory |" in text
    assert "ledger" not in write_report(tmp_path / "other.md", "# a report\n").read_text()
