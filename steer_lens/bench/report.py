"""The benchmark report: ``main_results.csv``, ``README.md``, ``items.json`` and the strength-curve PNG,
from the runner's rows.

Everything written here is computed from the rows (no numbers are typed in by hand)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from ..evaluate import mcnemar
from ..io import write_text
from ..ledger import split_section
from ..stats import bh as bh_adjust
from .figures import plot_curves
from .paired import (_unique_tests, alternative_comps, calibration_comps, comparisons, control_comps, label_comps,
                     report_family, significance_summary, with_bh)
from .views import REFERENCES

COLUMNS = ["dataset", "domain", "method", "accuracy", "ci_low", "ci_high", "n", "majority_rate", "layers",
           "strength", "model", "accuracy_sum", "val_accuracy", "behaviour_prob", "delta_vs_unsteered",
           "p_mcnemar_vs_unsteered", "p_bh_vs_unsteered", "letter_bias", "debiased_accuracy", "pred_share"]


def _answers(dataset: str) -> dict[str, int]:
    from ..data import load_dataset

    try:
        ds = load_dataset(dataset)
    except ValueError:
        return {}
    return {it.id: it.answer for items in ds.splits.values() for it in items if len(it.choices) == 2}


def pred_share(row, answers: dict[str, int]) -> float | str:
    """Share of test items given the most common predicted choice (1.0 = a constant answer).
    Only for 2-choice items (the prediction is the answer when correct, the other choice
    otherwise); blank for datasets with more choices, where a wrong answer does not name one."""
    if not answers or any(i not in answers for i in row["ids"]):
        return ""
    preds = [answers[i] if ok else 1 - answers[i] for i, ok in zip(row["ids"], row["correct"])]
    return round(max(preds.count(k) for k in set(preds)) / len(preds), 3)


def _val_acc(row):
    curve = row.get("val_curve") or []
    hit = [c["accuracy"] for c in curve if c["strength"] == row.get("strength")]
    return round(hit[0], 4) if hit else ""


def csv_rows(rows: list[dict]) -> list[dict]:
    """One line per row. ``p_bh_vs_unsteered``: Benjamini-Hochberg over every row's test against its
    unsteered row in this table (the unsteered rows themselves left out)."""
    # the unsteered row of the same model (Gemma's for the reverse direction)
    # (a fine-tuned target's row: the unsteered row of the target it was tuned from)
    base = {(r["dataset"], r.get("model")): r for r in rows if r["method"] in ("unsteered", "expert_unsteered")}
    target = {r["dataset"]: r for r in rows if r["method"] == "unsteered"}
    out, answers, tested = [], {}, {}
    for r in rows:
        if r["dataset"] not in answers:
            answers[r["dataset"]] = _answers(r["dataset"])
        b = target.get(r["dataset"]) if "finetune" in r else base.get((r["dataset"], r.get("model")))
        same = b is not None and b["ids"] == r["ids"] and ("finetune" in r or b.get("model") == r.get("model"))
        p = mcnemar(r["correct"], b["correct"])["p"] if same else None
        if same and b is not r:
            tested[len(out)] = p
        out.append({
            "dataset": r["dataset"], "domain": r["domain"], "method": r["method"],
            "accuracy": round(r["accuracy"], 4), "ci_low": round(r["ci_low"], 4), "ci_high": round(r["ci_high"], 4),
            "n": r["n"], "majority_rate": round(r["majority_rate"], 4),
            "layers": " ".join(map(str, r.get("layers") or [])), "strength": r.get("strength", 0.0),
            "model": r.get("model", ""), "accuracy_sum": round(r["accuracy_sum"], 4), "val_accuracy": _val_acc(r),
            "behaviour_prob": "" if r.get("behaviour_prob") is None else round(r["behaviour_prob"], 4),
            "pred_share": pred_share(r, answers[r["dataset"]]),
            "letter_bias": "" if r.get("letter_bias") is None else round(r["letter_bias"], 3),
            "debiased_accuracy": "" if r.get("debiased_accuracy") is None else round(r["debiased_accuracy"], 4),
            "delta_vs_unsteered": round(r["accuracy"] - b["accuracy"], 4) if same else "",
            "p_mcnemar_vs_unsteered": round(p, 4) if same else "", "p_bh_vs_unsteered": "",
        })
    for i, q in zip(tested, bh_adjust(list(tested.values()))):
        out[i]["p_bh_vs_unsteered"] = round(q, 4)
    return out


def _md_table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def reading(rows: list[dict], comps: list[dict]) -> str:
    """Plain statements derived from the numbers (no interpretation typed in by hand)."""
    lines, n_sig = [], 0
    for c in comps:
        if c["vs"] not in ("random", "self_rfm", "unsteered"):
            continue
        n_sig += c["verdict"] != 0
        verdict = {1: "beats", -1: "is worse than", 0: "is not distinguishable from"}[c["verdict"]]
        lines.append(f"- {c['dataset']}: ExpertSteer (autoencoder) {verdict} {c['vs']} "
                     f"(paired diff {c['diff']:+.3f}, 95% CI {c['ci']}, McNemar p={c['p_mcnemar']}).")
    if lines:
        lines.append(f"- {n_sig} of {len(lines)} comparisons above are significant (bootstrap CI excludes 0 and "
                     f"exact McNemar p < 0.05, uncorrected); about {0.05 * len(lines):.1f} would be expected "
                     "by chance alone.")
    for r in rows:
        if r.get("pairs") and r["method"] != "random":
            pairs = ", ".join(f"expert {p['expert_layer']} -> target {p['target_layer']} (MI {p['mi']:.2f})"
                              for p in r["pairs"])
            lines.append(f"- {r['dataset']} / {r['method']}: layer pairs {pairs}.")
    grid = sorted({c["strength"] for r in rows for c in (r.get("val_curve") or [])})
    chosen = [r.get("strength") for r in rows if r.get("val_curve") and r["method"] not in REFERENCES]
    nonzero = [g for g in grid if g != 0]
    if nonzero and chosen:
        lo, hi = nonzero[0], nonzero[-1]
        lines.append(f"- Strength selections of the steering rows: {sum(s == 0 for s in chosen)} of {len(chosen)} "
                     "chose 0 (no steering), "
                     f"{sum(s == lo for s in chosen)} the smallest nonzero value ({lo}), "
                     f"{sum(s == hi for s in chosen)} the largest ({hi}; the best may lie above the grid).")
    return "\n".join(lines) or "- (no ExpertSteer rows yet)"


RULES_TEXT = """Rules (`steer_lens.methods.RuleSet`, hashed into every row's `rule_set`): steering vectors fitted
on TRAIN only; strengths searched on VALIDATION (`limit_val` items, `steer_lens.protocol`): strength 0
(= do not steer: the unsteered test row is reused), a coarse log grid, upward extension (0.5, 1, 2) while
the best is the largest tried, then `refine_rounds` rounds bisecting next to the best point and where the
answers change most; one ranking rule (accuracy, mean margin, smaller strength); TEST scored once per
method. Contrasts: "correct" (right minus wrong completion: `caa`, `self_rfm`, `pca`, `iti`,
`expertsteer_*`) and "label" (choice 1 minus choice 0 on every item, signed strengths: `label_caa`,
`expertsteer_label*`). CAA-like methods shortlist target layers (middle half) by a train-only split-half
separation score (layers tied at the cut-off spread over depth) and choose layer and strength on
VALIDATION, every candidate searched in full. ExpertSteer pairs: the paper's lowest-MI rule
(`expertsteer_autoencoder`, the paper's specification, `_ridge`, `_procrustes`,
`expertsteer_label_lowest_mi`) or the validation rule (`expertsteer_label`: `pair_shortlist` expert
layers {window} with the best train-only label separation, each paired with the target layer at the same
depth, chosen on VALIDATION). Each `random*` row is its method's matched control: random unit vectors at
its hooks, norms and selected strength (no selection of its own); the `*_field` methods' controls
(`random_field`, `random_label_field`) are the same mode on RFMs refitted to shuffled labels.
Every method's docstring: `steer-lens bench --list`."""


COLS = ["dataset", "method", "vs", "diff", "ci", "p_mcnemar", "p_bh"]


def _section(title: str, comps: list[dict], bh: Mapping | None) -> str:
    """A report section: its title and the paired comparisons with BH-adjusted p ("" when there are none)."""
    return f"\n## {title}\n" + _md_table(with_bh(comps, bh), COLS) + "\n" if comps else ""


def label_section(rows: list[dict], bh: Mapping | None = None) -> str:
    """Paired comparisons of the expert's label direction (validation-chosen pair), fixed vector
    and context-dependent field."""
    return _section("Paired comparisons of ExpertSteer with the label contrast (validation-chosen pair)",
                    label_comps(rows), bh)


def control_section(rows: list[dict], bh: Mapping | None = None) -> str:
    """Every method against its own random control (same hooks, norms and strength), paired."""
    return _section("Each method against its own random control (paired, same test items)", control_comps(rows), bh)


def calibration_section(rows: list[dict], bh: Mapping | None = None) -> str:
    """Every steering method against the calibration baseline (paired, same test items): a gain it
    does not beat is a shift of the answer margins that needs no model internals."""
    return _section("Each method against the calibration baseline (no steering: unsteered margins plus a bias fitted "
                    "on validation; paired, same test items)", calibration_comps(rows), bh)


def alternatives_section(rows: list[dict]) -> str:
    """What a user could do instead of steering (prompting, the fine-tuned target, the expert) against
    the unsteered target, and every steering method against each of them (paired, same test items). Its
    own BH family: adding these tests (many with tiny p) to the report's family would loosen the
    adjustment of the tests that were there before."""
    return _section("What a user could do instead: each alternative against the unsteered target, each method "
                    "against each alternative (paired, same test items; `p_bh` over this section's tests "
                    "only)", alternative_comps(rows), None)


ITEMS = "items.json"  # per-item correctness of every row, for paired comparisons across runs


def per_item(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """``{dataset: {method: {"ids": [...], "correct": [...]}}}``: which test items each row got right, so
    rows of two runs (another expert, another window) can be compared item by item (McNemar, paired bootstrap)."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if "ids" in r and "correct" in r:
            out[r["dataset"]][r["method"]] = {"ids": list(r["ids"]), "correct": [bool(c) for c in r["correct"]]}
    return dict(out)


def _means(table: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Mean accuracy per value of ``keys`` over the rows that have it, in first-seen order."""
    acc: dict = defaultdict(list)
    for r in table:
        acc[tuple(r[k] for k in keys)].append(r["accuracy"])
    return [{**dict(zip(keys, k)), "mean_accuracy": round(sum(v) / len(v), 4), "datasets": len(v)}
            for k, v in acc.items()]


def write_report(rows: list[dict], out: Path, config: dict, notes: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table = csv_rows(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(table)
    write_text(out / "main_results.csv", buf.getvalue())
    write_text(out / ITEMS, json.dumps(per_item(rows), separators=(",", ":")) + "\n")
    dom = sorted(_means(table, ("domain", "method", "model")), key=lambda r: (r["domain"], r["method"], r["model"]))
    avg = _means(table, ("method", "model"))
    comps = comparisons(rows)
    bh = report_family(rows)
    has_png = plot_curves(rows, out / "strength_curves.png")
    cfg = "\n".join(f"- {k}: {v}" for k, v in config.items())
    secs = defaultdict(float)
    for r in rows:
        secs[r["dataset"]] += r.get("seconds", 0.0)
    cfg += "\n- compute (s, fitting + selection + test, per dataset): " + ", ".join(
        f"{d} {s:.0f}" for d, s in secs.items())
    if not notes and (out / "notes.md").exists():  # hand-written notes stay in their own file
        notes = "Notes on these rows: [notes.md](notes.md)."
    window = "of the middle half"
    if config.get("expert_layers"):
        first, last = config["expert_layers"]
        window = f"among {first}-{last} (`--expert-layers`)"
    protocol = RULES_TEXT.replace("{window}", window)
    text = f"""# Main results

Generated by `{config.get("command", "steer-lens bench")}` from the cached rows (numbers below are computed, not typed).
{protocol}
Accuracy = length-normalised log-likelihood choice (`accuracy_sum` = summed); CI = seeded
percentile bootstrap (2000 resamples). `expert_unsteered` is {config.get("expert", "Gemma-3-270m")} itself;
`reverse_expertsteer_autoencoder` steers Gemma with SmolLM2 as the expert (compare with
`expert_unsteered`).

## Configuration
{cfg}

## Test accuracy
{_md_table(table, ["dataset", "method", "accuracy", "ci_low", "ci_high", "n", "majority_rate", "layers", "strength", "val_accuracy", "delta_vs_unsteered", "p_mcnemar_vs_unsteered", "p_bh_vs_unsteered", "pred_share"])}

`pred_share` = share of test items given the most common predicted choice (1.0 = the model answers
the same choice every time, so accuracy = that choice's base rate). `p_mcnemar_vs_unsteered`: exact McNemar p
against the model's unsteered row, uncorrected; `p_bh_vs_unsteered`: Benjamini-Hochberg adjusted over every
row of this table with such a test (exploratory).

"ab" (behaviour) rows: `behaviour_prob` = mean P(matching letter) over the two letters; `letter_bias`
= mean logit(A) - logit(B) over test items; `debiased_accuracy` = accuracy after subtracting that
constant (diagnostic only: the constant is estimated on the test items themselves).
{_md_table([r for r in table if r["letter_bias"] != ""], ["dataset", "method", "accuracy", "behaviour_prob", "letter_bias", "debiased_accuracy"])}

## Average over datasets (each method over the datasets it has finished)
{_md_table(avg, ["method", "model", "mean_accuracy", "datasets"])}

## Per-domain averages
{_md_table(dom, ["domain", "method", "model", "mean_accuracy", "datasets"])}

## Paired comparisons of ExpertSteer (autoencoder) on the same test items
`p_mcnemar`: exact McNemar p, uncorrected; `p_bh`: Benjamini-Hochberg adjusted over all {len(bh)} paired tests in
this report ({sum(v < 0.05 for v in bh.values())} of them below 0.05 after adjustment, {sum(c["p"] < 0.05 for c in _unique_tests(rows))}
before). Every comparison here is exploratory: the rules were refined while looking at these test splits.
{_md_table(with_bh(comps, bh), ["dataset", "vs", "diff", "ci", "p_mcnemar", "p_bh"]) if comps else "(none yet)"}
{label_section(rows, bh)}{control_section(rows, bh)}{calibration_section(rows, bh)}{alternatives_section(rows)}
## How often each method is significantly better / worse (paired, per dataset)
Counts over datasets; "better" needs the paired-bootstrap 95% CI above 0 and exact McNemar p < 0.05
(uncorrected for the many comparisons: expect ~5% false positives). `chose_no_steering` = datasets
where validation picked strength 0.
{_md_table(significance_summary(rows), ["method", "datasets", "chose_no_steering", "vs_unsteered_n", "vs_unsteered_better", "vs_unsteered_worse", "vs_random_n", "vs_random_better", "vs_random_worse", "vs_calibration_n", "vs_calibration_better", "vs_calibration_worse"])}

## Reading (derived from the paired tests above)
{reading(rows, comps)}

{split_section({r["dataset"] for r in rows}, config.get("test_split", "test"))}

{"![validation accuracy vs strength](strength_curves.png)" if has_png else ""}
{notes}
"""
    write_text(out / "README.md", text)
    return out / "README.md"
