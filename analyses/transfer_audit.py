"""Where does the right-vs-wrong answer signal live, and does ExpertSteer's vector carry it into
the target? Per dataset, on the held-out TEST items the main results score (span-mean resid_post
of prompt + correct vs prompt + wrong completion):

- ``expert_probe`` / ``target_probe``: the best layer's cross-validated logistic-probe AUROC in each
  model (is the signal linearly present at all?); ``target_probe_steered``: at the steered layers
- ``<alignment>_in_expert``: AUROC of projecting the *aligned* held-out expert activations of each
  pair's expert layer on its ExpertSteer vector: the direction read where it was found
- ``<alignment>_in_target``: AUROC of projecting the target's held-out activations at the steered
  layer on the same vector: the direction read where it is added

Plans are refitted exactly as ``analyses/main_results.py`` fits them (same train items, 2 pairs,
lowest MI); the audit checks that it steers the same layers as the cached main-results row.
Probe folds keep an item's two rows together. Accuracies come from results/main_results.csv.

    python analyses/transfer_audit.py [--fast] [--datasets ...] [--report-only]
Writes transfer_audit.csv / .md / .png under results/transfer_audit/ (per-dataset JSON in cache/).
"""

from __future__ import annotations

import csv
import json
import sys

import torch

from lens_common import ROOT, figure, finish_args, items, load_models, markdown, parser, save_figure, write_csv
from steer_lens.data import contrast_prompts, list_datasets
from steer_lens.io import write_json, write_text
from steer_lens.pipeline import ExpertSteer
from steer_lens.probes import logistic_probe_auroc, projection_auroc

ALIGNMENTS = ("autoencoder", "ridge")


def main_cache():
    """The cache folder of ``analyses/main_results.py``'s default configuration."""
    import main_results

    return main_results.Runner(main_results.parse([]), None, None).cache


def _pos_neg(x: torch.Tensor, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:n, layer], x[n:, layer]


def audit_dataset(name: str, target, expert, *, n_train: int, n_test: int, folds: int, fast: bool) -> dict:
    """Probe and projection AUROCs of one dataset (see the module docstring). The items are
    those of ``split(limit=n)``, as in the main results (fast: short prompts only)."""
    pos, neg = contrast_prompts(items(name, "train", n_train, fast))
    t_pos, t_neg = contrast_prompts(items(name, "test", n_test, fast))
    n = len(t_pos)
    groups = torch.cat([torch.arange(n), torch.arange(n)])  # an item's two rows share a fold
    base = ExpertSteer(n_pairs=2)
    xe, xt = base.capture(expert, target, list(t_pos) + list(t_neg))  # held-out: (2n, layer, d)
    train_acts = base.capture(expert, target, list(pos) + list(neg))

    def probe(x, layer):
        return logistic_probe_auroc(*_pos_neg(x, layer, n), folds=folds, groups=groups)

    e_probe = [probe(xe, i) for i in range(xe.shape[1])]
    t_probe = [probe(xt, j) for j in range(xt.shape[1])]
    row = {"dataset": name, "n_test_items": n, "expert_probe": max(e_probe), "expert_probe_layer": e_probe.index(max(e_probe)),
           "target_probe": max(t_probe), "target_probe_layer": t_probe.index(max(t_probe))}
    for alignment in ALIGNMENTS:
        plan = ExpertSteer(n_pairs=2, alignment=alignment).fit(expert, target, pos, neg, activations=train_acts)
        in_expert, in_target, steered_probe = [], [], []
        for (e, t), aligner in plan.aligners.items():
            v = plan.vectors[f"blocks.{t}.hook_resid_post"]
            z = aligner.transform(xe[:, e].double()).float()
            in_expert.append(projection_auroc(z[:n], z[n:], v))
            in_target.append(projection_auroc(*_pos_neg(xt, t, n), v))
            steered_probe.append(t_probe[t])
        row[f"{alignment}_pairs"] = " ".join(f"{e}->{t}" for e, t in plan.aligners)
        row[f"{alignment}_in_expert"] = sum(in_expert) / len(in_expert)
        row[f"{alignment}_in_target"] = sum(in_target) / len(in_target)
        row[f"{alignment}_target_probe_steered"] = sum(steered_probe) / len(steered_probe)
        cached = main_cache() / f"{name}__expertsteer_{alignment}.json"
        if not fast and cached.exists():  # the same vectors the main results evaluated?
            row[f"{alignment}_same_layers_as_main"] = (sorted(json.loads(cached.read_text())["layers"])
                                                       == sorted({t for _, t in plan.aligners}))
    return row


def accuracies(path) -> dict:
    """(dataset, method) -> test accuracy from the main-results CSV (empty when absent)."""
    if not path.exists():
        return {}
    with open(path) as f:
        return {(r["dataset"], r["method"]): float(r["accuracy"]) for r in csv.DictReader(f)}


def report(rows: list[dict], out, acc: dict) -> dict:
    table = []
    for r in rows:
        d = r["dataset"]
        t = {"dataset": d, "expert_acc": acc.get((d, "expert_unsteered"), float("nan")),
             "target_acc": acc.get((d, "unsteered"), float("nan")),
             "expert_probe": r["expert_probe"], "target_probe": r["target_probe"]}
        for al in ALIGNMENTS:
            t[f"{al}_in_expert"], t[f"{al}_in_target"] = r[f"{al}_in_expert"], r[f"{al}_in_target"]
            t[f"{al}_probe_at_layer"] = r[f"{al}_target_probe_steered"]
        t["ES_delta_acc"] = acc.get((d, "expertsteer_autoencoder"), float("nan")) - t["target_acc"]
        table.append(t)
    write_csv(out / "transfer_audit.csv", rows)
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
    write_text(out / "transfer_audit.md", "# Transfer audit\n\n" + (__doc__ or "").split("\n\n    python")[0]
               + "\n\n" + markdown(table) + "\n![AUROCs per dataset](transfer_audit.png)\n")
    return {"png": str(out / "transfer_audit.png"), "table": table, "rows": rows}


def main(argv=None) -> dict:
    p = parser("transfer_audit", __doc__)
    p.add_argument("--datasets", nargs="+", default=None, help="default: every bundled dataset")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from cache/ (no models)")
    args = finish_args(p.parse_args(argv), "transfer_audit")
    names = args.datasets or (["arithmetic_2way", "sst2"] if args.fast else list_datasets())
    cache = args.out / "cache"
    cache.mkdir(exist_ok=True)
    if not args.report_only:
        target, expert = load_models(args.fast)
        for name in names:
            path = cache / f"{name}.json"
            if path.exists():
                continue
            n_train, n_test = (8, 6) if args.fast else (64, 100)  # main_results' defaults
            write_json(path, audit_dataset(name, target, expert, n_train=n_train, n_test=n_test,
                                           folds=2 if args.fast else 5, fast=args.fast))
            print(f"{name}: done", file=sys.stderr)
    rows = [json.loads((cache / f"{n}.json").read_text()) for n in sorted(list_datasets()) if (cache / f"{n}.json").exists()]
    return report(rows, args.out, {} if args.fast else accuracies(ROOT / "results" / "main_results.csv"))


if __name__ == "__main__":
    main()
