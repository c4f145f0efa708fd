"""Do different methods find the same direction? Cosine similarity, at each of the plan's target
layers, between ExpertSteer (autoencoder and ridge alignment), CAA mean difference, self-RFM
(the target's own RFM) and a random control.

    python analyses/method_cosine.py [--fast] [--out DIR]
Writes method_cosine.png (one matrix per target layer) and method_cosine.csv / .md.
"""

from __future__ import annotations

import sys

from lens_common import (figure, finish_args, fit_plan, layer_of, load_models, markdown, mean_difference, parser,
                         save_figure, write_csv)
from steer_lens.io import write_text
from steer_lens.probes import method_similarity


def method_vectors(args, plan, pos, neg) -> dict:
    """Method name → {hook: vector} at the plan's hooks."""
    target, expert = load_models(args.fast)
    from steer_lens.pipeline import ExpertSteer
    from steer_lens.rfm import RFMConfig

    methods = {"expertsteer": plan.vectors}
    other = "procrustes" if plan.settings.get("alignment") == "ridge" else "ridge"
    alt = ExpertSteer(n_pairs=len(plan.vectors), alignment=other, target_layers=[layer_of(h) for h in plan.vectors],
                      rfm=RFMConfig(iters=3) if args.fast else RFMConfig()).fit(expert, target, pos, neg)
    methods[f"expertsteer_{other}_own_pairs"] = alt.vectors
    try:
        from steer_lens.baselines import fit_caa, fit_self_rfm, random_plan
    except ImportError:
        fit_caa = fit_self_rfm = random_plan = None
    caa, srfm = {}, {}
    for hook in plan.vectors:
        layer = layer_of(hook)
        if fit_caa is not None:
            caa[hook] = fit_caa(target, pos, neg, layer).vectors[hook]
            srfm[hook] = fit_self_rfm(target, pos, neg, layer).vectors[hook]
        else:
            caa[hook] = mean_difference(target, pos, neg, layer)
    methods["caa"] = caa
    if srfm:
        methods["self_rfm"] = srfm
    if random_plan is not None:
        methods["random"] = random_plan(plan).vectors
    return methods


def main(argv=None) -> dict:
    args = finish_args(parser("method_cosine", __doc__).parse_args(argv), "method_cosine")
    plan, _, pos, neg = fit_plan(args)
    methods = method_vectors(args, plan, pos, neg)
    sims = method_similarity(methods, hooks=list(plan.vectors))
    fig, axes = figure(3.6 * len(sims) + 0.6, 3.4, ncols=len(sims))
    rows = []
    for ax, (hook, (names, m)) in zip(axes[0], sims.items()):
        im = ax.imshow(m.numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
        short = [n.replace("expertsteer", "ES").replace("_own_pairs", "*") for n in names]
        ax.set_xticks(range(len(names)), short, rotation=60, fontsize=7)
        ax.set_yticks(range(len(names)), short, fontsize=7)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{float(m[i, j]):.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(f"target layer {layer_of(hook)}", fontsize=9)
        rows += [{"target_layer": layer_of(hook), "a": names[i], "b": names[j], "cosine": float(m[i, j])}
                 for i in range(len(names)) for j in range(i + 1, len(names))]
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cosine")
    fig.suptitle(f"Steering-vector cosine similarity ({args.dataset}); * = vector at this layer from its own fit",
                 fontsize=9)
    png = save_figure(fig, args.out / "method_cosine.png")
    write_csv(args.out / "method_cosine.csv", rows)
    write_text(args.out / "method_cosine.md", "# Cosine between methods per target layer\n\n" + markdown(rows))
    return {"png": png, "csv": args.out / "method_cosine.csv"}


if __name__ == "__main__":
    print(main(sys.argv[1:]))
