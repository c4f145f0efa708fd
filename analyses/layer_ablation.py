"""Which layer pairs carry the steering effect? Steer with each pair alone and with each removed.

    python analyses/layer_ablation.py [--fast] [--out DIR]
Writes layer_ablation.png (mean answer margin on test items per condition; margin = mean
per-token log-prob of the correct choice minus the best wrong one, in nats) and .csv / .md.
"""

from __future__ import annotations

import sys

from lens_common import figure, finish_args, fit_plan, items, load_models, markdown, parser, save_figure, write_csv
from steer_lens.io import write_text
from steer_lens.probes import answer_metrics, layer_ablation


def main(argv=None) -> dict:
    args = finish_args(parser("layer_ablation", __doc__).parse_args(argv), "layer_ablation")
    target, _ = load_models(args.fast)
    plan, _, _, _ = fit_plan(args)
    test = items(args.dataset, "test", 6 if args.fast else 60, args.fast)
    rows = layer_ablation(target, plan, answer_metrics(test), strength=args.strength)
    table = [{"condition": r["condition"].replace("blocks.", "L").replace(".hook_resid_post", ""),
              "margin": r["metric"], "vs_unsteered": r["vs_unsteered"], "accuracy": r["accuracy"]} for r in rows]
    write_csv(args.out / "layer_ablation.csv", table)
    write_text(args.out / "layer_ablation.md", f"# Layer ablation ({args.dataset}, {len(test)} test items, "
               f"strength {args.strength})\n\n" + markdown(table))
    fig, axes = figure(7, 0.5 + 0.4 * len(table), ncols=2)
    names = [t["condition"] for t in table][::-1]
    axes[0, 0].barh(names, [t["margin"] for t in table][::-1], color="tab:blue")
    axes[0, 0].axvline(table[0]["margin"], color="k", ls="--", lw=0.8, label="unsteered")
    axes[0, 0].set(xlabel="mean margin (nats)")
    axes[0, 0].legend(fontsize=7)
    axes[0, 1].barh(names, [t["accuracy"] for t in table][::-1], color="tab:green")
    axes[0, 1].axvline(table[0]["accuracy"], color="k", ls="--", lw=0.8)
    axes[0, 1].set(xlabel="accuracy")
    axes[0, 1].set_yticks([])
    fig.suptitle(f"Layer ablation of the plan ({args.dataset}, strength {args.strength})", fontsize=9)
    png = save_figure(fig, args.out / "layer_ablation.png")
    return {"png": png, "csv": args.out / "layer_ablation.csv"}


if __name__ == "__main__":
    print(main(sys.argv[1:]))
