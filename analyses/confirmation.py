"""The confirmation run: the preregistered methods scored on fresh items under locked rules.

    python analyses/confirmation.py                      # every stage in its preregistered order (resumable)
    python analyses/confirmation.py --stages primary     # some stages only
    python analyses/confirmation.py --stages finetune --datasets sst2   # some datasets of a stage only
    python analyses/confirmation.py --report-only        # results/confirmation/README.md from the cached rows

Everything it does is read from the JSON block of results/PREREGISTRATION.md: the locked rule set (its
hash must equal ``RuleSet.reference()``'s: the reference search, the default when it was preregistered), the models, the stages (split, datasets, methods, in run order) and the
hypotheses. ``confirm`` stages run inside ``steer_lens.ledger.locked_run`` (the preregistration must be
committed and unchanged) into results/confirmation/cache; each method reuses the validation choice of
its row in results/benchmark/cache (same rules, same train and validation items) where one exists, and
searches on validation under the same rules otherwise. ``test`` stages (the exploratory split) add their
rows to results/benchmark/cache. Every scoring is appended to results/ledger.jsonl.

The report tests the primary hypotheses (Holm over the primary family) and the secondary comparisons
(Benjamini-Hochberg over all of them) with the exact paired McNemar test, and gives per-item
anti-steerable shares for the primary steered rows. The primary family is tested only when all of its rows
exist; the secondary family is marked provisional until all of its rows exist.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
PREREG = RESULTS / "PREREGISTRATION.md"
OUT = RESULTS / "confirmation"
BENCH_CACHE = RESULTS / "benchmark" / "cache"

log = logging.getLogger("confirmation")


def plan(path: Path = PREREG) -> dict:
    """The preregistration's JSON block (the one fenced ```json block of the file)."""
    blocks = re.findall(r"```json\n(.*?)\n```", path.read_text(encoding="utf-8"), flags=re.S)
    if len(blocks) != 1:
        raise SystemExit(f"{path}: expected exactly one ```json block, found {len(blocks)}")
    return json.loads(blocks[0])


# Stages whose steered test and confirm passes go through the sweep (``share_test``): on k-shot prompts it runs
# the shared examples once (same predictions as evaluate within float tolerance: tests/unit/test_sweep_prefix.py,
# benchmarks/bench_prefix.py) for about a fifth of the CPU time. Every other stage keeps one evaluate per pass, as
# the first rows of the locked run were scored.
SHARED_TEST_STAGES = ("prompt_plus_steering", "test_prompt_plus_steering")


def bench(p: dict, split: str, target=None, expert=None, share_test: bool = False):
    from steer_lens import methods as M
    from steer_lens.bench import Bench

    rules = M.RuleSet.reference()  # the locked rules use the reference search (preregistered before "flips")
    if rules.hash != p["rule_set"]:
        raise SystemExit(f"the preregistration locks rule set {p['rule_set']}, but RuleSet.reference() is {rules.hash}: "
                         "the rules changed since; a confirmation runs only under the locked rules")
    if split == "confirm":
        return Bench(target, expert, cache=OUT / "cache", rules=rules, target_id=p["target"],
                     expert_id=p["expert"], test_split="confirm", choices_from=BENCH_CACHE, share_test=share_test)
    return Bench(target, expert, cache=BENCH_CACHE, rules=rules, target_id=p["target"], expert_id=p["expert"],
                 share_test=share_test)


def run(p: dict, stages: list[str] | None, threads: int, datasets: list[str] | None = None) -> None:
    import torch

    from steer_lens import ledger
    from steer_lens.models import load_model

    torch.set_num_threads(threads)
    target, expert = load_model(p["target"]), load_model(p["expert"])
    for stage in p["stages"]:
        if stages and stage["name"] not in stages:
            continue
        names = [d for d in stage["datasets"] if not datasets or d in datasets]
        if not names:
            continue
        log.info("stage %s (%s): %s x %s", stage["name"], stage["split"], names, stage["methods"])
        b = bench(p, stage["split"], target, expert, share_test=stage["name"] in SHARED_TEST_STAGES)
        if stage["split"] == "confirm":
            with ledger.locked_run(p["rule_set"], PREREG):
                b.run(names, stage["methods"])
        else:
            b.run(names, stage["methods"])


# ----------------------------------------------------------------------------- report
def rows_of(p: dict, split: str) -> dict[tuple[str, str], dict]:
    b = bench(p, split)
    datasets = sorted({d for s in p["stages"] if s["split"] == split for d in s["datasets"]})
    return {(r["dataset"], r["method"]): r for r in b.cached_rows(datasets, every_dataset=False)
            if r["dataset"] in datasets}


def paired(a: dict, b: dict) -> dict:
    from steer_lens.evaluate import mcnemar

    if a["ids"] != b["ids"]:
        raise ValueError(f"{a['method']} and {b['method']} on {a['dataset']} were scored on different items")
    t = mcnemar(a["correct"], b["correct"])
    return {"acc_a": a["accuracy"], "acc_b": b["accuracy"], "diff": round(a["accuracy"] - b["accuracy"], 4),
            "only_a": t["only_a"], "only_b": t["only_b"], "p": t["p"], "n": a["n"]}


def secondary_pairs(p: dict, rows: dict) -> list[tuple[str, str, str]]:
    """(dataset, a, b) of every secondary comparison whose rows exist, each unordered pair once, primary ones
    left out."""
    from steer_lens import methods as M

    seen = {(h["dataset"], frozenset((h["a"], h["b"]))) for h in p["primary"]}
    sec = p["secondary"]
    out = []
    for d in sorted({d for d, _ in rows}):
        for a in sec["steered"] + sec["baselines"]:
            against = ([M.control_of(a)] if a in sec["steered"] else []) + sec["against"]
            for b in against:
                pair = (d, frozenset((a, b)))  # a comparison is one test whichever way round it is listed
                if a != b and b and (d, a) in rows and (d, b) in rows and pair not in seen:
                    seen.add(pair)
                    out.append((d, a, b))
    return out


def planned_secondary(p: dict) -> list[tuple[str, str, str]]:
    """Every secondary comparison the preregistration's confirm stages will give once all their rows exist."""
    return secondary_pairs(p, {(d, m): None for s in p["stages"] if s["split"] == "confirm"
                               for d in s["datasets"] for m in s["methods"]})


def anti_steerable(steered: dict, unsteered: dict) -> dict:
    """Items whose correct-answer margin drops under steering (Tan et al. 2024), and answers flipped."""
    if steered["ids"] != unsteered["ids"]:
        raise ValueError("rows scored on different items")
    ms, mu = steered["margins"], unsteered["margins"]
    drop = sum(s < u for s, u in zip(ms, mu))
    lost = sum(cu and not cs for cs, cu in zip(steered["correct"], unsteered["correct"]))
    won = sum(cs and not cu for cs, cu in zip(steered["correct"], unsteered["correct"]))
    return {"n": len(ms), "margin_drops": drop, "share": round(drop / len(ms), 3), "right_to_wrong": lost,
            "wrong_to_right": won}


def fmt_p(x: float) -> str:
    return f"{x:.2g}" if x < 0.001 else f"{x:.3f}"


def report(p: dict, command: str) -> Path:
    from steer_lens import ledger
    from steer_lens.io import write_json, write_text
    from steer_lens.stats import bh, holm

    rows = rows_of(p, "confirm")
    lines = ["# Confirmation: preregistered hypotheses on fresh items", "",
             f"Made by `{command}` from `results/confirmation/cache` (rows of `python analyses/confirmation.py`), "
             f"under the rule set `{p['rule_set']}` locked in [PREREGISTRATION.md](../PREREGISTRATION.md). "
             "Exact two-sided McNemar tests on the same items; `p_holm`: Holm over the primary family; `p_bh`: "
             "Benjamini-Hochberg over every secondary comparison listed. The primary family is tested only once all "
             "of its rows exist; the secondary family is marked provisional until then. Reading of the numbers: "
             "[notes.md](notes.md).", ""]
    # rows
    lines += ["## Rows", "", "| dataset | method | accuracy | 95% CI | n | strength | layers | choice |",
              "|---|---|---|---|---|---|---|---|"]
    for (d, m), r in sorted(rows.items()):
        choice = "recorded (test run)" if r.get("choice_from") else ("validation search" if r.get("val_curve")
                                                                     else "none")
        lines.append(f"| {d} | {m} | {r['accuracy']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['n']} | "
                     f"{r.get('strength', 0)} | {r.get('layers', [])} | {choice} |")
    out = {"rule_set": p["rule_set"], "rows": {f"{d}/{m}": r["accuracy"] for (d, m), r in rows.items()}}
    # primary
    prim = p["primary"]
    missing = [(h["dataset"], x) for h in prim for x in (h["a"], h["b"]) if (h["dataset"], x) not in rows]
    lines += ["", "## Primary hypotheses (confirmatory; Holm)", ""]
    if missing:
        lines.append(f"Not tested yet: rows missing: {sorted(set(missing))}.")
    else:
        tests = [{**h, **paired(rows[(h["dataset"], h["a"])], rows[(h["dataset"], h["b"])])} for h in prim]
        for t, adj in zip(tests, holm([t["p"] for t in tests])):
            t["p_holm"] = adj
            t["confirmed"] = bool(adj < p["alpha"] and t["diff"] > 0)
        lines += ["| id | hypothesis | dataset | a | b | diff | only a / only b | p | p_holm | confirmed |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for t in tests:
            lines.append(f"| {t['id']} | {t['text']} | {t['dataset']} | {t['acc_a']:.3f} | {t['acc_b']:.3f} | "
                         f"{t['diff']:+.3f} | {t['only_a']} / {t['only_b']} | {fmt_p(t['p'])} | {fmt_p(t['p_holm'])} | "
                         f"{'yes' if t['confirmed'] else 'no'} |")
        out["primary"] = tests
    # secondary
    pairs, planned = secondary_pairs(p, rows), planned_secondary(p)
    final = set(pairs) == set(planned)
    out["secondary_final"] = final
    lines += ["", "## Secondary comparisons (Benjamini-Hochberg over all listed)", ""]
    if pairs:
        tests = [{"dataset": d, "a": a, "b": b, **paired(rows[(d, a)], rows[(d, b)])} for d, a, b in pairs]
        for t, adj in zip(tests, bh([t["p"] for t in tests])):
            t["p_bh"] = adj
        status = (f"all {len(planned)} preregistered comparisons scored: the family is final." if final else
                  f"**provisional**: {len(tests)} of the {len(planned)} preregistered comparisons have both rows; "
                  "`p_bh` is over these and changes as the remaining rows are scored.")
        lines += [f"{len(tests)} comparisons with both rows scored; {status}", "",
                  "| dataset | a | b | acc a | acc b | diff | p | p_bh |", "|---|---|---|---|---|---|---|---|"]
        for t in tests:
            mark = " **" if t["p_bh"] < p["alpha"] else ""
            lines.append(f"| {t['dataset']} | {t['a']} | {t['b']} | {t['acc_a']:.3f} | {t['acc_b']:.3f} | "
                         f"{t['diff']:+.3f} | {fmt_p(t['p'])} | {fmt_p(t['p_bh'])}{mark} |")
        out["secondary"] = tests
    else:
        lines.append("No comparison has both rows scored yet.")
    # per item
    lines += ["", "## Anti-steerable items (primary steered rows)", "",
              "Items whose correct-answer margin is lower under steering than unsteered (Tan et al. 2024), "
              "and answers flipped each way.", "",
              "| dataset | method | margin drops | share | right -> wrong | wrong -> right |", "|---|---|---|---|---|---|"]
    out["anti_steerable"] = {}
    for d, m in sorted({(h["dataset"], x) for h in prim for x in (h["a"], h["b"])}):
        r, u = rows.get((d, m)), rows.get((d, "unsteered"))
        if r is None or u is None or not r.get("layers") or r.get("strength", 0) == 0:
            continue
        a = anti_steerable(r, u)
        out["anti_steerable"][f"{d}/{m}"] = a
        lines.append(f"| {d} | {m} | {a['margin_drops']} / {a['n']} | {a['share']:.3f} | {a['right_to_wrong']} | "
                     f"{a['wrong_to_right']} |")
    # ledger
    summ = ledger.summary()
    lines += ["", "## Ledger", "", "Scorings of each confirm split in results/ledger.jsonl (all under the locked "
              "rule set when the split is marked confirmatory):", "", "| dataset | rule sets | scorings (rows) | status |",
              "|---|---|---|---|"]
    for (d, split), s in sorted(summ.items()):
        if split == "confirm":
            lines.append(f"| {d} | {', '.join(s['rule_sets'])} | {s['lines']} | {s['status']} |")
    OUT.mkdir(parents=True, exist_ok=True)
    write_text(OUT / "README.md", "\n".join(lines) + "\n")
    write_json(OUT / "results.json", out)
    return OUT / "README.md"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="*", help="stage names of the preregistration (default: all, in order)")
    ap.add_argument("--datasets", nargs="*", help="only these of each stage's datasets (default: all); rows are "
                    "independent, so the run order of datasets changes no result")
    ap.add_argument("--report-only", action="store_true", help="only write results/confirmation from the cache")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = plan()
    if not a.report_only:
        run(p, a.stages, a.threads, a.datasets)
    print(report(p, "python analyses/confirmation.py --report-only"))


if __name__ == "__main__":
    sys.exit(main())
