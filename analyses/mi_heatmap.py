"""Which expert/target layer pairs does ExpertSteer pick? The aligned-expert × target MI matrix
with the chosen lowest-MI pairs boxed.

    python analyses/mi_heatmap.py [--fast] [--out DIR]
Writes mi_heatmap.png, mi_matrix.csv (rows expert layers, columns target layers, nats), pairs.md.
"""

from __future__ import annotations

import sys

from lens_common import finish_args, fit_plan, markdown, parser, write_csv
from steer_lens.io import write_text
from steer_lens.mi import LayerPair, plot_mi


def main(argv=None) -> dict:
    args = finish_args(parser("mi_heatmap", __doc__).parse_args(argv), "mi_heatmap")
    plan, _, _, _ = fit_plan(args)
    pairs = [LayerPair(p.expert_layer, p.target_layer, p.mi) for p in plan.pairs]
    png = args.out / "mi_heatmap.png"
    plot_mi(plan.mi, pairs, expert_layers=plan.expert_layers, target_layers=plan.target_layers, path=png,
            title=f"MI(aligned {plan.expert['name']}, {plan.target['name']}) on {args.dataset}")
    rows = [{"expert_layer": e, **{f"t{t}": round(float(plan.mi[i, j]), 5) for j, t in enumerate(plan.target_layers)}}
            for i, e in enumerate(plan.expert_layers)]
    write_csv(args.out / "mi_matrix.csv", rows)
    m = plan.mi
    text = (f"# Selected layer pairs ({args.dataset}, {args.n_train} train items)\n\n"
            + markdown([{"expert_layer": p.expert_layer, "target_layer": p.target_layer, "mi_nats": p.mi}
                        for p in plan.pairs])
            + f"\nMI range {float(m.min()):.3f}–{float(m.max()):.3f} nats (median {float(m.median()):.3f}).\n")
    write_text(args.out / "pairs.md", text)
    return {"png": png, "csv": args.out / "mi_matrix.csv", "md": args.out / "pairs.md"}


if __name__ == "__main__":
    print(main(sys.argv[1:]))
