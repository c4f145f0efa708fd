"""Does the library runner reproduce the committed benchmark rows? Two checks per (dataset, method):

- ``full``: the row recomputed from scratch by ``steer_lens.bench.Bench`` (fit on train, search on
  validation, test once) into a separate cache, then compared with the committed row: the chosen
  strength and layers, every validation point, and the per-item test answers.
- ``point``: the committed row's plan refitted by the registered method (``Method.plan_of``: the
  candidate set of the current code, then the candidate at the committed layers) and scored once
  on validation and test at the committed strength: validation accuracy and mean margin against the
  committed curve's point, test answers item by item. It checks fitting and scoring at a fraction of
  the cost of the search (which is ``steer_lens.protocol``'s, unchanged).

    python analyses/reproduce_rows.py --datasets caa_refusal --methods unsteered calibration caa random_caa --mode full
    python analyses/reproduce_rows.py --datasets sst2 --methods expertsteer_label label_caa --mode point
    python analyses/reproduce_rows.py --report-only

Writes results/reproduction/README.md (and checks.json, one entry per check, resumable).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import torch

from steer_lens import methods as M
from steer_lens.bench import Bench
from steer_lens.bench.cli import EXPERT, TARGET
from steer_lens.evaluate import evaluate
from steer_lens.io import write_json, write_text
from steer_lens.ledger import split_section
from steer_lens.protocol import point

ROOT = Path(__file__).resolve().parent.parent / "results"
OUT = ROOT / "reproduction"
# mean margins (mean log-prob per token differences) agree to float32 summation noise, ~1e-6: batches of
# another composition or another kernel path add in another order
MARGIN_TOL = 1e-5


def committed(dataset: str, method: str) -> dict:
    bench = Bench(None, None, cache=ROOT / "benchmark" / "cache", target_id=TARGET, expert_id=EXPERT,
                  rules=M.RuleSet.reference())  # the committed rows' rules
    path = bench.row_path(dataset, method)
    if not path.exists():
        raise SystemExit(f"no committed {method} row for {dataset} ({path})")
    return json.loads(path.read_text())


def full_check(bench: Bench, dataset: str, method: str) -> dict:
    old, new = committed(dataset, method), bench.row(dataset, method)
    a, b = old.get("val_curve") or [], new.get("val_curve") or []
    same_curve = len(a) == len(b) and all(
        round(p["strength"], 6) == round(q["strength"], 6) and p["accuracy"] == q["accuracy"]
        and abs(p["mean_margin"] - q["mean_margin"]) < MARGIN_TOL for p, q in zip(a, b))
    return {"dataset": dataset, "method": method, "mode": "full", "committed_accuracy": old["accuracy"],
            "accuracy": new["accuracy"], "same_items": old["correct"] == new["correct"] and old["ids"] == new["ids"],
            "same_strength": old.get("strength") == new.get("strength"), "same_layers": old.get("layers") == new.get("layers"),
            "same_val_curve": same_curve, "seconds": new.get("seconds")}


def point_check(bench: Bench, dataset: str, method: str) -> dict:
    old = committed(dataset, method)
    ctx = bench.context(dataset)
    m = M.get(method)
    out = {"dataset": dataset, "method": method, "mode": "point", "committed_accuracy": old["accuracy"],
           "same_strength": True, "same_layers": True}
    s = old["strength"]
    if m.reference and not isinstance(m, M.RandomControl):
        row = m.run(ctx) if method != "calibration" else None
        if row is None:
            raise SystemExit("calibration: use --mode full (it reads the unsteered row)")
        out.update(accuracy=row["accuracy"], same_items=row["correct"] == old["correct"], same_val_curve=None)
        return out
    plan = m.plan_of(ctx, old) if not isinstance(m, M.RandomControl) else m.plan_of(ctx, old)
    model = m.model(ctx)
    if s == 0:
        test_correct = committed(dataset, m.base_method)["correct"]
    else:
        test_correct = ctx.test(model, plan, s)["correct"]
    out.update(accuracy=sum(test_correct) / len(test_correct), same_items=test_correct == old["correct"],
               same_layers=M.plan_layers(plan) == old["layers"])
    curve = {round(p["strength"], 6): p for p in old.get("val_curve") or []}
    if round(s, 6) in curve and s != 0:
        p = point(s, evaluate(model, ctx.val, plan=plan, strength=s, batch_size=ctx.batch_size))
        q = curve[round(s, 6)]
        out["same_val_curve"] = p["accuracy"] == q["accuracy"] and abs(p["mean_margin"] - q["mean_margin"]) < MARGIN_TOL
    else:
        out["same_val_curve"] = None  # a control has no curve; strength 0 reuses the unsteered row
    return out


def render(checks: list[dict], command: str) -> str:
    lines = ["# Reproduction of the committed benchmark rows by the library runner", "",
             "Generated by `python analyses/reproduce_rows.py` (each check's command below). `full`: the row recomputed",
             "from scratch (fit, validation search, test) and compared with the committed row; `point`: the committed",
             "row's plan refitted by the registered method and scored at the committed strength on validation and",
             "test. `same items`: every test item answered the same way; `same validation`: every validation point",
             f"at the same strength with the same accuracy and the mean margin within {MARGIN_TOL:g} (float32 summation",
             "noise).", "",
             "| dataset | method | mode | committed accuracy | accuracy | same items | same strength | same layers | same validation |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['dataset']} | {c['method']} | {c['mode']} | {c['committed_accuracy']:.3f} | {c['accuracy']:.3f} | "
                     f"{c['same_items']} | {c['same_strength']} | {c['same_layers']} | "
                     f"{'-' if c['same_val_curve'] is None else c['same_val_curve']} |")
    ok = sum(bool(c["same_items"] and c["same_strength"] and c["same_layers"] and c["same_val_curve"] is not False)
             for c in checks)
    lines += ["", f"{ok} of {len(checks)} checks reproduce the committed row exactly."]
    if (OUT / "notes.md").exists():
        lines += ["", "What the other checks found, and what is not checked: [notes.md](notes.md)."]
    lines += ["", "Commands:", ""]
    lines += [f"- `{c}`" for c in dict.fromkeys(x["command"] for x in checks)]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=[])
    p.add_argument("--methods", nargs="+", default=[])
    p.add_argument("--mode", choices=("full", "point"), default="point")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    path = OUT / "checks.json"
    checks = json.loads(path.read_text()) if path.exists() else []
    if a.report_only:  # full checks are judged again from the two cached rows (no models needed)
        cached = Bench(None, None, cache=OUT / "cache", target_id=TARGET, expert_id=EXPERT, rules=M.RuleSet.reference())
        checks = [{**c, **full_check(cached, c["dataset"], c["method"])} if c["mode"] == "full" else c
                  for c in checks]
        write_json(path, checks)
    command = shlex.join(["python", "analyses/reproduce_rows.py", *(sys.argv[1:] if argv is None else argv)])
    if not a.report_only:
        from steer_lens.models import load_model

        target, expert = load_model(TARGET), load_model(EXPERT)
        bench = Bench(target, expert, cache=OUT / "cache", target_id=TARGET, expert_id=EXPERT,
                      rules=M.RuleSet.reference())
        for d in a.datasets:
            for m in a.methods:
                if any(c["dataset"] == d and c["method"] == m and c["mode"] == a.mode for c in checks):
                    continue
                from steer_lens.ledger import scoring

                with scoring(method=m, rule_set=bench.rules.hash):  # full checks: the runner records its own
                    c = (full_check if a.mode == "full" else point_check)(bench, d, m)
                checks.append({**c, "command": command})
                write_json(path, checks)
                logging.info("%s", c)
    write_text(OUT / "README.md", render(checks, command) + "\n" + split_section({c["dataset"] for c in checks}))


if __name__ == "__main__":
    main()
