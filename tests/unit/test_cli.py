"""The steer-lens command line on tiny models: every subcommand once on good input and once on bad
input (one `steer-lens: error:` line, non-zero exit, no traceback).

The commands run in this process through ``steer_lens.cli.main`` (the function the console script
calls), with stdout and stderr captured, so each test pays no interpreter start and torch import;
``test_entry_point_runs_as_a_process`` and ``test_debug_shows_the_traceback`` run the real
``python -m steer_lens.cli`` process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_run import cli, cli_process
from steer_lens.cli import main

COMMANDS = ["models", "capture", "fit", "evaluate", "generate", "demo", "export", "report"]


def assert_user_error(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("steer-lens: error:")]
    assert len(errors) == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1] == errors[0]
    for frag in fragments:
        assert frag in errors[0], errors[0]


@pytest.fixture(scope="module")
def plan_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "plan"
    res = cli("fit", "--expert", tiny_dir["gemma3"], "--target", tiny_dir["llama"], "--dataset", "sst2",
              "--limit", 16, "--alignment", "ridge", "--n-pairs", 2, "--mi-dim", 4, "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert len(info["pairs"]) == 2 and Path(info["mi_heatmap"]).is_file()
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "example:" in text and f"steer-lens {command}" in text.replace("steer-lens models cache", "steer-lens models")


def test_top_level_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(c in text for c in COMMANDS)
    assert main(["fitt"]) == 2
    assert capsys.readouterr().err.startswith("steer-lens: error: argument COMMAND: invalid choice")


def test_entry_point_runs_as_a_process():
    """``python -m steer_lens.cli``: output on stdout, exit 0 (test_debug_shows_the_traceback runs a
    failing one)."""
    res = cli_process("models", "--json")
    assert res.returncode == 0, res.stderr
    assert "smollm2-135m-instruct" in {r["name"] for r in json.loads(res.stdout)["models"]}


def test_models_lists_registry_as_json():
    res = cli("models", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)["models"]}
    assert rows["smollm2-135m-instruct"]["d_model"] == 576 and rows["gemma-3-270m"]["n_layers"] == 18
    assert_user_error(cli("models", "cache", "gpt-17"), "unknown model 'gpt-17'")


def test_capture_prompts_file(tiny_dir, tmp_path):
    from steer_lens.activations import Activations

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello there\nthe market fell\n\nsecond try\n")
    out = tmp_path / "acts.safetensors"
    res = cli("capture", tiny_dir["llama"], "--prompts", prompts, "--layers", "0,-1", "--position", "mean",
              "--out", out)
    assert res.returncode == 0, res.stderr
    acts = Activations.load(out)
    assert acts.tensor.shape == (3, 2, 64) and acts.layers == [0, 3] and acts.position == "mean"
    assert_user_error(cli("capture", tiny_dir["llama"], "--prompts", prompts, "--layers", "7", "--out", out),
                      "layer 7 is out of range")
    assert_user_error(cli("capture", tiny_dir["llama"], "--prompts", tmp_path / "nope.txt", "--out", out),
                      "no such prompts file")


def test_capture_dataset_records_labels(tiny_dir, tmp_path):
    from steer_lens.activations import Activations

    out = tmp_path / "acts.safetensors"
    res = cli("capture", tiny_dir["gemma3"], "--dataset", "sst2", "--limit", 4, "--layers", "all", "--out", out)
    assert res.returncode == 0, res.stderr
    acts = Activations.load(out)
    assert acts.tensor.shape == (8, 3, 48) and acts.meta["labels"] == [1] * 4 + [0] * 4


def test_capture_streams_to_a_shard_folder(tiny_dir, tmp_path):
    from steer_lens.activations import Activations

    whole, folder = tmp_path / "acts.safetensors", tmp_path / "acts"
    args = ("capture", tiny_dir["llama"], "--dataset", "sst2", "--limit", 3, "--layers", "0,2", "--position", "all")
    assert cli(*args, "--out", whole).returncode == 0
    res = cli(*args, "--out", folder, "--shard-size", 4)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "shard-00000.safetensors",
                                                       "shard-00001.safetensors"]
    streamed, ref = Activations.load(folder), Activations.load(whole)
    assert torch.equal(streamed.tensor, ref.tensor) and torch.equal(streamed.mask, ref.mask)
    assert streamed.meta["labels"] == ref.meta["labels"] == [1] * 3 + [0] * 3
    assert_user_error(cli(*args, "--out", tmp_path / "x.safetensors", "--shard-size", 4), "is a folder")
    assert_user_error(cli(*args, "--out", folder), "must end in .safetensors")


def test_fit_bad_dataset_and_window(tiny_dir, tmp_path):
    assert_user_error(cli("fit", "--expert", tiny_dir["gemma3"], "--target", tiny_dir["llama"], "--dataset",
                          "no_such_set", "--out", tmp_path / "p"), "unknown dataset 'no_such_set'")
    assert_user_error(cli("fit", "--expert", tiny_dir["gemma3"], "--target", tiny_dir["llama"], "--dataset",
                          "sst2", "--target-window", "5,1", "--out", tmp_path / "p"), "lo <= hi")
    assert_user_error(cli("fit", "--expert", "no-such-model", "--target", tiny_dir["llama"], "--dataset",
                          "sst2", "--out", tmp_path / "p"), "unknown model 'no-such-model'")
    assert_user_error(cli("fit", "--expert", tiny_dir["gemma3"], "--target", tiny_dir["llama"], "--dataset",
                          "sst2", "--limit", 8, "--mode", "field", "--out", tmp_path / "p"),
                      "mode='field' cannot use alignment='autoencoder'")


def test_evaluate_with_plan(plan_dir, tiny_dir, tmp_path):
    out = tmp_path / "eval.json"
    res = cli("evaluate", "--model", tiny_dir["llama"], "--dataset", "sst2", "--plan", plan_dir, "--limit", 6,
              "--val-limit", 4, "--strengths", "0.1,0.5", "--refine-rounds", 0, "--no-extend", "--out", out,
              "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r == json.loads(out.read_text())
    # no refinement, no extension: exactly strength 0 (do not steer) and the grid, best one chosen
    from steer_lens.protocol import rank

    assert [p["strength"] for p in r["val_curve"]] == [0.0, 0.1, 0.5]
    assert r["strength"] == max(r["val_curve"], key=rank)["strength"]
    assert {"unsteered", "steered", "random", "steered_vs_random"} <= set(r)
    assert r["steered"]["n"] == 6 and 0 <= r["steered"]["ci_low"] <= r["steered"]["ci_high"] <= 1
    assert_user_error(cli("evaluate", "--model", tiny_dir["llama"], "--dataset", "sst2", "--plan", plan_dir,
                          "--strength", "nan"), "strength must be finite")


def test_evaluate_refuses_plan_for_another_model(plan_dir, tiny_dir):
    assert_user_error(cli("evaluate", "--model", tiny_dir["gemma3"], "--dataset", "sst2", "--plan", plan_dir,
                          "--limit", 2), "fit a plan for this model")


def test_generate_side_by_side(plan_dir, tiny_dir, tmp_path):
    res = cli("generate", "--model", tiny_dir["llama"], "--plan", plan_dir, "--prompt", "hi", "--prompt",
              "the market", "--max-new-tokens", 4, "--strength", 2.0, "--json")
    assert res.returncode == 0, res.stderr
    gens = json.loads(res.stdout)["generations"]
    assert [g["prompt"] for g in gens] == ["hi", "the market"]
    assert all(isinstance(g["unsteered"], str) and isinstance(g["steered"], str) for g in gens)
    broken = tmp_path / "broken"
    shutil.copytree(plan_dir, broken)
    (broken / "plan.json").write_text("{not json")
    assert_user_error(cli("generate", "--model", tiny_dir["llama"], "--plan", broken, "--prompt", "hi"),
                      "corrupted")


def test_export_gguf_and_safetensors(plan_dir, tmp_path):
    from steer_lens.export import import_safetensors, read_gguf
    from steer_lens.plan import SteeringPlan

    plan = SteeringPlan.load(plan_dir)
    res = cli("export", plan_dir, "--out", tmp_path / "cv.gguf", "--strength", 0.5, "--json")
    assert res.returncode == 0, res.stderr
    vectors, meta = read_gguf(tmp_path / "cv.gguf")
    assert sorted(vectors) == sorted(p.target_layer for p in plan.pairs) == json.loads(res.stdout)["layers"]
    assert meta["controlvector.layer_count"] == len(vectors)
    res = cli("export", plan_dir, "--out", tmp_path / "v.safetensors")
    assert res.returncode == 0, res.stderr
    assert set(import_safetensors(tmp_path / "v.safetensors").vectors) == set(plan.vectors)
    assert_user_error(cli("export", plan_dir, "--out", tmp_path / "cv.bin"), "cannot tell the format")
    assert_user_error(cli("export", tmp_path / "missing", "--out", tmp_path / "cv.gguf"), "no such plan folder")


def test_report_for_plan_folder(plan_dir, tmp_path):
    folder = tmp_path / "plan"
    shutil.copytree(plan_dir, folder)
    (folder / "mi.png").unlink()
    res = cli("report", folder)
    assert res.returncode == 0, res.stderr
    text = (folder / "report.md").read_text()
    assert "## Chosen layer pairs" in text and "](mi.png)" in text and (folder / "mi.png").is_file()
    (tmp_path / "empty").mkdir()
    assert_user_error(cli("report", tmp_path / "empty"), "holds no plan")


def test_demo_fast(tmp_path, monkeypatch):
    from steer_lens.cli import demo

    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("STEER_LENS_LEDGER", str(ledger))
    out = tmp_path / "demo"
    res = cli("demo", "--fast", "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["fast"] and summary["rows_from_cache"] == 0
    assert [d["dataset"] for d in summary["datasets"]] == list(demo.PAPER_DATASETS)  # sst2 last: one block
    for name in ("report.md", "summary.json", "dose_response.png"):
        assert (out / name).is_file(), name
    # every row through the runner, cached under OUT/cache with the demo's rule set
    assert summary["rule_set"] == demo.FAST_RULES.hash and (out / "cache").is_dir()
    # the paper's specification with its random control on every dataset; on SST-2 the label recipe with
    # its control, calibration, the unsteered target and the expert
    blocks = {b["method"] + "@" + b["dataset"]: b for b in summary["comparisons"]}
    for ds in demo.PAPER_DATASETS:
        assert list(blocks[f"{demo.PAPER}@{ds}"]["rows"]) == [demo.PAPER, "random", "unsteered"]
        assert (out / ds / demo.PAPER / "plan.json").is_file() and (out / ds / demo.PAPER / "mi.png").is_file()
    label = blocks[f"{demo.LABEL}@sst2"]
    assert list(label["rows"]) == [demo.LABEL, "random_label", "unsteered", "calibration", "expert_unsteered"]
    assert set(label["vs"]) == {"random_label", "unsteered", "calibration", "expert_unsteered"}
    from steer_lens.protocol import rank

    for b in summary["comparisons"]:  # chosen on validation: the best point of the curve, 0 always tried
        row = b["rows"][b["method"]]
        assert 0.0 in [p["strength"] for p in row["val_curve"]]
        assert row["strength"] == max(row["val_curve"], key=rank)["strength"]
        assert {r["n"] for r in b["rows"].values()} == {demo.FAST_RULES.limit_test}  # the same test items
    # the table: one row per (dataset, method), its header names the datasets and the item counts
    table_rows = summary["table"]
    assert demo.PAPER_DATASETS[-1] == "sst2"
    assert [(r[0], r[1]) for r in table_rows] == [
        (ds, m) for ds in demo.PAPER_DATASETS[:-1] for m in (demo.PAPER, "random", "unsteered")] + [
        ("sst2", demo.PAPER), ("sst2", "random"), ("sst2", demo.LABEL), ("sst2", "random_label"),
        ("sst2", "calibration"), ("sst2", "unsteered"), ("sst2", "expert_unsteered")]
    head = summary["header"]
    assert f"on {demo.FAST_RULES.limit_test} test items" in head and ", ".join(demo.PAPER_DATASETS) in head
    assert f"{demo.FAST_RULES.limit_val} validation items" in head
    rows = {(b["dataset"], m): r for b in summary["comparisons"] for m, r in b["rows"].items()}
    for r in table_rows:
        assert r[3] == f"{rows[(r[0], r[1])]['accuracy']:.2f}"
        s = rows[(r[0], r[1])].get("strength", 0)
        if r[1] in (demo.PAPER, demo.LABEL):
            assert r[5] == ("0 (none chosen)" if s == 0 else f"{s:g}")
            assert r[8]  # beside its random control
    # the positive control: share of choice-1 answers vs signed strength, direction and random control
    dose = summary["dose_response"]
    assert 0.0 in dose["strengths"] and min(dose["strengths"]) < 0 < max(dose["strengths"])
    assert set(dose["curves"]) == {"direction", "control"} and dose["n"] == demo.FAST_RULES.limit_val
    assert all(len(c) == len(dose["strengths"]) for c in dose["curves"].values())
    # generations: the label recipe (and the paper's plan on SST-2); never a "steered" text at strength 0
    gens = {g["method"]: g for g in summary["generations"]}
    assert set(gens) == {demo.PAPER, demo.LABEL}
    for g in gens.values():
        assert g["strength"] != 0 and ("not chosen" in g["label"]) == (g["chosen_strength"] == 0)
    report = (out / "report.md").read_text()
    assert "](dose_response.png)" in report and "| sst2 | expertsteer_label |" in report
    # TEST is scored once per row that scores a model as it is, steers it or calibrates it (calibration runs no
    # model there but writes its own line; a steering row that chose strength 0 reuses the unsteered row)
    scored = [(x["dataset"], x["method"]) for x in map(json.loads, ledger.read_text().splitlines())]
    assert sorted(scored) == sorted((r[0], r[1]) for r in table_rows
                                    if r[1] in ("unsteered", "expert_unsteered", "calibration")
                                    or rows[(r[0], r[1])]["strength"] != 0)
    # a second run reads every row back from the cache
    again = cli("demo", "--fast", "--out", out, "--json")
    assert again.returncode == 0, again.stderr
    again = json.loads(again.stdout)
    assert again["rows_from_cache"] == again["rows_total"] == len(table_rows)
    assert again["table"] == table_rows
    assert_user_error(cli("demo", "--fast", "--out", tmp_path / "d2", "--dataset", "nope"), "unknown dataset")
    one = cli("demo", "--fast", "--out", out, "--datasets", "arithmetic_2way")  # its rows from the cache
    assert one.returncode == 0, one.stderr
    assert "ExpertSteer demo" in one.stdout and "positive control on sst2" in one.stdout
    assert [r.split()[0] for r in one.stdout.splitlines() if r.startswith(("arithmetic_2way ", "sst2 "))] == \
        ["arithmetic_2way"] * 3 + ["sst2"] * 5


def test_demo_says_when_no_steering_was_chosen(monkeypatch):
    """Strength 0 chosen: "no steering chosen", and the generation at the best nonzero strength of the
    validation curve, labelled as not chosen; a text equal to the unsteered one is not printed again."""
    import contextlib
    import sys as _sys

    from steer_lens.cli import demo

    class Plan:
        applied = []

        @contextlib.contextmanager
        def apply(self, model, strength):
            self.applied.append(strength)
            yield

    monkeypatch.setattr(_sys.modules["steer_lens.generate"], "generate",
                        lambda model, prompts, **kw: [f"text at {Plan.applied[-1]:g}"])
    curve = [{"strength": s, "accuracy": a, "mean_margin": m} for s, a, m in
             [(0.0, 0.6, 0.1), (0.1, 0.55, 0.3), (-0.2, 0.55, 0.2), (0.4, 0.5, 0.9)]]
    g = demo.generation(None, "expertsteer_label", {"strength": 0.0, "val_curve": curve}, Plan(), "p", "u", 8)
    assert g["strength"] == 0.1 and not g["chosen"] and g["text"] == "text at 0.1"
    assert g["label"] == "expertsteer_label (best nonzero strength 0.1, not chosen)"
    text = demo.render_generations("p", "u", [g])
    assert "expertsteer_label: validation chose strength 0: no steering chosen" in text
    assert "(best nonzero strength 0.1, not chosen): 'text at 0.1'" in text and "strength 0," not in text
    chosen = demo.generation(None, "m", {"strength": 0.4, "val_curve": curve}, Plan(), "p", "text at 0.4", 8)
    assert chosen["chosen"] and chosen["same_as_unsteered"]
    text = demo.render_generations("p", "text at 0.4", [chosen])
    assert "m (strength 0.4, chosen on validation): (the same text as unsteered)" in text
    assert text.count("text at 0.4") == 1


def test_debug_shows_the_traceback():
    """In a process: a user error with --debug ends in its traceback and a non-zero exit."""
    res = cli_process("models", "cache", "gpt-17", "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr and "unknown model 'gpt-17'" in res.stderr


MODEL_COMMANDS = ["capture", "fit", "evaluate", "generate", "demo", "merge"]


def test_model_loading_commands_take_device_and_dtype():
    from steer_lens.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in MODEL_COMMANDS:
        flags = {s for action in sub.choices[command]._actions for s in action.option_strings}
        assert {"--device", "--dtype", "--device-map"} <= flags, command


def test_capture_in_bfloat16_equals_the_library(tiny_dir, tmp_path):
    import torch

    import steer_lens as sl
    from steer_lens.activations import Activations

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello there\nthe market fell\n")
    out = tmp_path / "acts.safetensors"
    res = cli("capture", tiny_dir["llama"], "--prompts", prompts, "--layers", "0,-1", "--device", "cpu",
              "--dtype", "bfloat16", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "torch.bfloat16" in res.stderr  # the load line says what was loaded
    model = sl.load_model(tiny_dir["llama"], dtype=torch.bfloat16)
    ref = sl.capture(model, ["hello there", "the market fell"], layers=[0, 3])
    torch.testing.assert_close(Activations.load(out).tensor, ref.tensor, atol=0, rtol=0)
    assert_user_error(cli("capture", tiny_dir["llama"], "--prompts", prompts, "--device", "tpu", "--out", out),
                      "unknown device 'tpu'")
    assert_user_error(cli("generate", "--model", tiny_dir["llama"], "--prompt", "hi", "--dtype", "int8"),
                      "--dtype", "invalid choice")


def test_fit_field_mode_then_generate(tiny_dir, tmp_path):
    """--mode field saves the RFMs (plan format 2, settings.mode) and the plan steers generation."""
    out = tmp_path / "field"
    res = cli("fit", "--expert", tiny_dir["gemma3"], "--target", tiny_dir["llama"], "--dataset", "sst2",
              "--limit", 8, "--alignment", "ridge", "--n-pairs", 1, "--mi-dim", 2, "--mode", "field", "--out", out)
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "plan.json").read_text())
    assert meta["format"] == 2 and meta["settings"]["mode"] == "field" and set(meta["fields"]) == set(meta["hooks"])
    res = cli("generate", "--model", tiny_dir["llama"], "--plan", out, "--prompt", "Hi", "--max-new-tokens", 3)
    assert res.returncode == 0, res.stderr
