"""Where does the right-vs-wrong answer signal live, and does ExpertSteer's vector carry it into
the target? Per dataset, on the held-out TEST items the main results score (span-mean resid_post
of prompt + correct vs prompt + wrong completion):

- ``expert_probe`` / ``target_probe``: the best layer's cross-validated logistic-probe AUROC in each
  model (is the signal linearly present at all?); ``target_probe_steered``: at the steered layers
- ``<alignment>_in_expert``: AUROC of projecting the *aligned* held-out expert activations of each
  pair's expert layer on its ExpertSteer vector: the direction read where it was found
- ``<alignment>_in_target``: AUROC of projecting the target's held-out activations at the steered
  layer on the same vector: the direction read where it is added
- ``<alignment>_meandiff_in_expert`` / ``_in_target``: the same two read-outs for the train
  mean difference of the aligned expert activations (CAA in the aligned space) instead of the RFM
  vector, and ``<alignment>_expert_probe_at_layer``: the probe at the pairs' expert layers. Together
  they separate three causes: no signal at the chosen layers, an RFM direction that misses it, an
  alignment that does not carry it

Plans are fitted as the benchmark fits ``expertsteer_autoencoder`` / ``expertsteer_ridge`` (the registered
methods' ``ExpertSteer``: 2 pairs, lowest MI); the audit checks that each steers the same layers as the
benchmark's cached row (``results/benchmark/cache``, the current rules), where there is one.
Probe folds keep an item's two rows together. Accuracies come from --accuracies: the audited fixed-grid
run's CSV, `git show v0.4.0:results/main_results.csv` (its numbers are in CHANGELOG.md, release 0.2.0).

    python analyses/transfer_audit.py [--fast] [--datasets ...] [--report-only]
Writes transfer_audit.csv / .md / .png and probe_by_depth.png under results/transfer_audit/
(per-dataset JSON in cache/, so runs over disjoint --datasets lists can share the work).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import torch

from lens_common import (ROOT, benchmark, figure, finish_args, items, load_models, markdown, parser, save_figure,
                         write_csv)
from steer_lens import methods as M
from steer_lens.data import contrast_prompts, list_datasets, load_dataset
from steer_lens.io import write_json, write_text
from steer_lens.pipeline import ExpertSteer
from steer_lens.probes import logistic_probe_auroc, projection_auroc

ALIGNMENTS = ("autoencoder", "ridge")
METHOD = {al: f"expertsteer_{al}" for al in ALIGNMENTS}  # the registered benchmark method of each alignment


def benchmark_rows():
    """``(dataset, method) -> path`` of the benchmark's cached row under the current rules (the default
    run of ``analyses/main_results.py``: results/benchmark/cache); the path may not exist."""
    bench, _ = benchmark([])
    return bench.row_path


def es_config(alignment: str, dataset, target, expert, rules=None) -> ExpertSteer:
    """The unfitted ExpertSteer of the benchmark's method for ``alignment`` on ``dataset`` under ``rules``
    (default: the current rule set), from the method registry."""
    ctx = M.Context(dataset, target, expert, rules or M.RuleSet.reference())
    return M.get(METHOD[alignment]).config(ctx)


def _pos_neg(x: torch.Tensor, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:n, layer], x[n:, layer]


def audit_dataset(name: str, target, expert, *, n_train: int, n_test: int, folds: int, fast: bool,
                  main_rows=None) -> dict:
    """Probe and projection AUROCs of one dataset (see the module docstring). The items are
    those of ``split(limit=n)``, as in the main results (fast: short prompts only); ``main_rows``:
    ``(dataset, method) -> path`` of the benchmark's cached rows, to check that the same layers are steered."""
    pos, neg = contrast_prompts(items(name, "train", n_train, fast))
    dataset = load_dataset(name)
    t_pos, t_neg = contrast_prompts(items(name, "test", n_test, fast))
    n = len(t_pos)
    groups = torch.cat([torch.arange(n), torch.arange(n)])  # an item's two rows share a fold
    base = ExpertSteer(n_pairs=2)  # captures every layer, so a tensor's layer index is the layer number
    xe, xt = base.capture(expert, target, list(t_pos) + list(t_neg))  # held-out: (2n, layer, d)
    train_acts = base.capture(expert, target, list(pos) + list(neg))

    def probe(x, layer):
        return logistic_probe_auroc(*_pos_neg(x, layer, n), folds=folds, groups=groups)

    e_probe = [probe(xe, i) for i in range(xe.shape[1])]
    t_probe = [probe(xt, j) for j in range(xt.shape[1])]
    row = {"dataset": name, "n_test_items": n, "expert_probe": max(e_probe), "expert_probe_layer": e_probe.index(max(e_probe)),
           "target_probe": max(t_probe), "target_probe_layer": t_probe.index(max(t_probe)),
           "expert_probe_by_layer": e_probe, "target_probe_by_layer": t_probe}
    m = len(pos)
    for alignment in ALIGNMENTS:
        plan = es_config(alignment, dataset, target, expert).fit(expert, target, pos, neg, activations=train_acts)
        cols: dict[str, list[float]] = {}
        for (e, t), aligner in plan.aligners.items():
            z = aligner.transform(xe[:, e].double()).float()  # held-out expert, aligned
            z_train = aligner.transform(train_acts[0][:, e].double()).float()
            for kind, v in (("rfm", plan.vectors[f"blocks.{t}.hook_resid_post"]),  # what ExpertSteer adds
                            ("meandiff", z_train[:m].mean(0) - z_train[m:].mean(0))):  # CAA in aligned space
                cols.setdefault(f"{kind}_in_expert", []).append(projection_auroc(z[:n], z[n:], v))
                cols.setdefault(f"{kind}_in_target", []).append(projection_auroc(*_pos_neg(xt, t, n), v))
            cols.setdefault("expert_probe_at_layer", []).append(e_probe[e])
            cols.setdefault("target_probe_steered", []).append(t_probe[t])
        row[f"{alignment}_pairs"] = " ".join(f"{e}->{t}" for e, t in plan.aligners)
        for key, values in cols.items():  # mean over the plan's pairs
            row[f"{alignment}_{key.removeprefix('rfm_')}"] = sum(values) / len(values)
        cached = main_rows(name, METHOD[alignment]) if main_rows else None
        if cached is not None and cached.exists():  # the same vectors the main results evaluated?
            row[f"{alignment}_same_layers_as_main"] = (sorted(json.loads(cached.read_text())["layers"])
                                                       == sorted({t for _, t in plan.aligners}))
    return row


def accuracies(path) -> dict:
    """(dataset, method) -> test accuracy from the main-results CSV (empty when absent)."""
    if not path.exists():
        return {}
    with open(path) as f:
        return {(r["dataset"], r["method"]): float(r["accuracy"]) for r in csv.DictReader(f)}


DECOMPOSITION = ("expert_probe_at_layer", "in_expert", "meandiff_in_expert", "in_target", "meandiff_in_target",
                 "target_probe_steered")


def _with_mean(table: list[dict]) -> list[dict]:
    """``table`` plus a row of column means (numeric columns; NaN-free ones only)."""
    keys = [k for k, v in table[0].items() if isinstance(v, float)]
    mean = {k: "" for k in table[0]} | {"dataset": "**mean**"}
    mean |= {k: sum(t[k] for t in table) / len(table) for k in keys if all(t[k] == t[k] for t in table)}
    return table + [mean]


def plot_depth(rows: list[dict], out):
    """probe_by_depth.png: per-layer probe AUROC against layer / (n_layers - 1), both models."""
    fig, axes = figure(5.5, 3.2)
    ax = axes[0, 0]
    for key, label, color in (("expert_probe_by_layer", "expert (Gemma-3)", "C0"),
                              ("target_probe_by_layer", "target (SmolLM2)", "C1")):
        curves = torch.tensor([r[key] for r in rows])
        depth = torch.linspace(0, 1, curves.shape[1])
        for c in curves:
            ax.plot(depth, c, color=color, lw=0.4, alpha=0.35)
        ax.plot(depth, curves.mean(0), color=color, lw=2, label=label)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xlabel("relative depth (layer / last layer)")
    ax.set_ylabel("held-out probe AUROC")
    ax.legend(fontsize=7)
    return save_figure(fig, out / "probe_by_depth.png")


def report(rows: list[dict], out, acc: dict) -> dict:
    """transfer_audit.csv (every cached number), .md (headline + one decomposition table per
    alignment) and .png (the headline AUROCs per dataset)."""
    table = [{"dataset": r["dataset"], "expert_acc": acc.get((r["dataset"], "expert_unsteered"), float("nan")),
              "target_acc": acc.get((r["dataset"], "unsteered"), float("nan")),
              "ES_acc": acc.get((r["dataset"], "expertsteer_autoencoder"), float("nan")),
              "expert_probe": r["expert_probe"], "target_probe": r["target_probe"],
              **{f"{al}_{k}": r[f"{al}_{k}"] for al in ALIGNMENTS for k in ("in_expert", "in_target")}}
             for r in rows]
    write_csv(out / "transfer_audit.csv", [{k: v for k, v in r.items() if not k.endswith("_by_layer")} for r in rows])
    fig, axes = figure(9.5, 0.32 * len(table) + 1.2)
    ax = axes[0, 0]
    keys = [("expert_probe", "expert: best-layer probe", "C0", "o"), ("target_probe", "target: best-layer probe", "C1", "o"),
            ("autoencoder_in_expert", "AE vector, aligned expert", "C2", "^"),
            ("autoencoder_in_target", "AE vector, target", "C3", "v"),
            ("ridge_in_expert", "ridge vector, aligned expert", "C4", "^"), ("ridge_in_target", "ridge vector, target", "C5", "v")]
    for k, label, color, marker in keys:
        ax.scatter([t[k] for t in table], range(len(table)), label=label, color=color, marker=marker, s=22)
    ax.axvline(0.5, color="k", lw=0.8, ls=":")
    ax.set_yticks(range(len(table)), [t["dataset"] for t in table], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("held-out AUROC, correct vs wrong completion (0.5 = chance)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, out / "transfer_audit.png")
    md = ["# Transfer audit", "", (__doc__ or "").split("\n\n    python")[0], "", "## Headline", "",
          markdown(_with_mean(table)), "![AUROCs per dataset](transfer_audit.png)", ""]
    if all("expert_probe_by_layer" in r for r in rows):
        md += ["Where the signal lives: probe AUROC by relative depth, mean over the datasets (thin lines: "
               "each dataset).", "", f"![probe AUROC by depth]({plot_depth(rows, out).name})", ""]
    for al in ALIGNMENTS:
        if all(f"{al}_{DECOMPOSITION[-1]}" in r for r in rows):
            md += [f"## Decomposition: {al} alignment (means over the plan's 2 pairs)", "",
                   markdown(_with_mean([{"dataset": r["dataset"], "pairs": r[f"{al}_pairs"],
                                         **{k: r[f"{al}_{k}"] for k in DECOMPOSITION}} for r in rows]))]
    write_text(out / "transfer_audit.md", "\n".join(md))
    return {"png": str(out / "transfer_audit.png"), "table": table, "rows": rows}


def main(argv=None) -> dict:
    p = parser("transfer_audit", __doc__)
    p.add_argument("--datasets", nargs="+", default=None, help="default: every bundled dataset")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from cache/ (no models)")
    p.add_argument("--expert", default=None, help="another expert (registry name or HF folder, e.g. a tuned "
                   "expert); its audit goes to results/transfer_audit/<expert name>/ unless --out is given")
    p.add_argument("--accuracies", default=None, help="main-results CSV the report reads accuracies from "
                   "(default results/main_results.csv if present; none with --expert)")
    args = p.parse_args(argv)
    if args.expert and args.out is None:
        args.out = str(ROOT / "results" / "transfer_audit" / Path(args.expert).name)
    args = finish_args(args, "transfer_audit")
    names = args.datasets or (["arithmetic_2way", "sst2"] if args.fast else list_datasets())
    cache = args.out / "cache"
    cache.mkdir(exist_ok=True)
    if not args.report_only:
        target, expert = load_models(args.fast, args.expert)
        main_rows = None if args.fast or args.expert else benchmark_rows()  # the benchmark's rows: the base expert's
        for name in names:
            path = cache / f"{name}.json"
            if path.exists():
                continue
            n_train, n_test = (8, 6) if args.fast else (64, 100)  # main_results' defaults
            write_json(path, audit_dataset(name, target, expert, n_train=n_train, n_test=n_test,
                                           folds=2 if args.fast else 5, fast=args.fast, main_rows=main_rows))
            print(f"{name}: done", file=sys.stderr)
    rows = [json.loads((cache / f"{n}.json").read_text()) for n in sorted(list_datasets()) if (cache / f"{n}.json").exists()]
    csv_path = args.accuracies or (None if args.fast or args.expert else ROOT / "results" / "main_results.csv")
    return report(rows, args.out, accuracies(Path(csv_path)) if csv_path else {})


if __name__ == "__main__":
    main()
