"""Is the steering direction a good read-out? Held-out AUROC of projecting (correct vs wrong
answer) activations on each plan vector at every target layer, against a full logistic probe.

    python analyses/probe_accuracy.py [--fast] [--out DIR]
Writes probe_accuracy.png and probe_accuracy.csv / .md (test items, span-mean resid_post; the probe's
CV folds keep both answers of an item together).
"""

from __future__ import annotations

import sys

import torch

from lens_common import (figure, finish_args, fit_plan, items, layer_of, load_models, markdown, mean_difference,
                         parser, save_figure, write_csv)
from steer_lens.activations import capture
from steer_lens.data import contrast_prompts
from steer_lens.io import write_text
from steer_lens.probes import probe_along_vector, projection_auroc


def main(argv=None) -> dict:
    args = finish_args(parser("probe_accuracy", __doc__).parse_args(argv), "probe_accuracy")
    target, _ = load_models(args.fast)
    plan, _, tr_pos, tr_neg = fit_plan(args)
    pos, neg = contrast_prompts(items(args.dataset, "test", 10 if args.fast else 80, args.fast))
    layers = list(range(target.cfg.n_layers))
    acts = capture(target, pos + neg, layers=layers, position="mean").tensor
    p, n = acts[: len(pos)], acts[len(pos):]
    pairs = torch.cat([torch.arange(len(pos)), torch.arange(len(neg))])  # keep each item's two rows in one fold
    fig, axes = figure(7, 3.6)
    ax = axes[0, 0]
    rows = []
    for idx, (hook, vec) in enumerate(plan.vectors.items()):
        res = probe_along_vector(p, n, vec, layers, folds=3 if args.fast else 5, groups=pairs)
        ax.plot(layers, [r["projection_auroc"] for r in res], marker=".", label=f"ES vector of L{layer_of(hook)}")
        ax.axvline(layer_of(hook), color=f"C{idx}", lw=0.6, ls=":")
        rows += [{"vector": f"expertsteer_L{layer_of(hook)}", **r} for r in res]
    caa = {layer_of(h): mean_difference(target, tr_pos, tr_neg, layer_of(h)) for h in plan.vectors}
    for layer, v in caa.items():
        rows.append({"vector": f"caa_L{layer}", "layer": layer, "projection_auroc": projection_auroc(p[:, layer],
                     n[:, layer], v), "probe_auroc": next(r["probe_auroc"] for r in rows if r["layer"] == layer)})
        ax.scatter([layer], [rows[-1]["projection_auroc"]], marker="x", color="k", zorder=3)
    ax.plot(layers, [r["probe_auroc"] for r in rows if r["vector"] == rows[0]["vector"]], color="k", lw=2,
            label="logistic probe (CV)")
    ax.scatter([], [], marker="x", color="k", label="CAA at its layer")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set(xlabel="target layer", ylabel="held-out AUROC (correct vs wrong answer)", ylim=(0, 1.02),
           title=f"Reading the concept along the steering vector\n({args.dataset}, {len(pos)} test items, "
                 f"{args.alignment} alignment)")
    ax.legend(fontsize=7)
    png = save_figure(fig, args.out / "probe_accuracy.png")
    write_csv(args.out / "probe_accuracy.csv", rows)
    write_text(args.out / "probe_accuracy.md", "# Projection vs probe AUROC\n\n" + markdown(rows))
    return {"png": png, "csv": args.out / "probe_accuracy.csv"}


if __name__ == "__main__":
    print(main(sys.argv[1:]))
