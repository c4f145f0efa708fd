"""Where is the concept written, and which positions/components of the steering vector move the
answer? Per-token projections on the plan's vector at every target layer, and gradient × activation
attribution of the correct answer's log-prob to the steering perturbation.

    python analyses/token_attribution.py [--fast] [--out DIR]
Writes token_projection.png (layers × tokens heatmap for one test item, correct vs wrong answer),
grad_x_act.png (attribution per position and the largest components) and CSVs.
"""

from __future__ import annotations

import sys

import torch

from lens_common import figure, finish_args, fit_plan, items, layer_of, load_models, parser, save_figure, write_csv
from steer_lens.data import contrast_prompts
from steer_lens.io import write_text
from steer_lens.probes import steering_attribution, token_projections


def _label(tok: str) -> str:
    return repr(tok)[1:-1][:8]


def main(argv=None) -> dict:
    args = finish_args(parser("token_attribution", __doc__).parse_args(argv), "token_attribution")
    target, _ = load_models(args.fast)
    plan, _, _, _ = fit_plan(args)
    hook = next(h for h in plan.vectors if layer_of(h) == plan.pairs[0].target_layer)  # lowest-MI pair
    vec = plan.vectors[hook]
    test = items(args.dataset, "test", 4 if args.fast else 8, args.fast)
    pos, neg = contrast_prompts(test)
    fig, axes = figure(12, 5.5, nrows=2)
    rows = []
    for ax, prompt, kind in ((axes[0, 0], pos[0], "correct"), (axes[1, 0], neg[0], "wrong")):
        tp = token_projections(target, prompt, vec)
        keep = slice(max(0, len(tp.tokens) - 40), None)  # the last 40 tokens
        im = ax.imshow(tp.values[:, keep].numpy(), aspect="auto", cmap="RdBu_r", origin="lower",
                       vmin=-float(tp.values[:, keep].abs().max()), vmax=float(tp.values[:, keep].abs().max()))
        ax.set_xticks(range(len(tp.tokens[keep])), [_label(t) for t in tp.tokens[keep]], rotation=90, fontsize=6)
        ax.set_ylabel("target layer")
        ax.set_title(f"{kind} answer {prompt[1]!r}: residual · v (v from layer {layer_of(hook)})", fontsize=9)
        fig.colorbar(im, ax=ax)
        rows += [{"answer": kind, "layer": layer, "position": p, "token": tp.tokens[p], "projection": float(val)}
                 for li, layer in enumerate(tp.layers) for p, val in enumerate(tp.values[li].tolist())]
    png1 = save_figure(fig, args.out / "token_projection.png")
    write_csv(args.out / "token_projection.csv", rows)

    att = steering_attribution(target, pos, plan=plan, strength=args.strength)
    fig, axes = figure(12, 3.6, ncols=2)
    n0 = len(att.tokens[0])
    per_pos = sum(p[0, :n0] for p in att.per_position.values())
    keep = slice(max(0, n0 - 40), None)
    axes[0, 0].bar(range(len(per_pos[keep])), per_pos[keep].numpy())
    axes[0, 0].set_xticks(range(len(per_pos[keep])), [_label(t) for t in att.tokens[0][keep]], rotation=90, fontsize=6)
    axes[0, 0].set(ylabel="grad × δ (nats)", title="attribution of log p(correct answer) per steered position")
    comp = sum(c.sum(0) for c in att.per_component.values())
    top = torch.topk(comp.abs(), 15).indices
    axes[0, 1].bar(range(15), comp[top].numpy())
    axes[0, 1].set_xticks(range(15), [str(int(i)) for i in top], rotation=90, fontsize=7)
    axes[0, 1].set(xlabel="residual dimension", title=f"top components, summed over {len(pos)} items")
    fig.suptitle(f"Σ attribution = {float(att.total.mean()):.3f} vs actual Δ log p = "
                 f"{float((att.logprob_steered - att.logprob_clean).mean()):.3f} nats (mean over items)", fontsize=9)
    png2 = save_figure(fig, args.out / "grad_x_act.png")
    write_csv(args.out / "grad_x_act.csv", [
        {"item": i, "first_order": float(att.total[i]), "actual_delta": float(att.logprob_steered[i] - att.logprob_clean[i]),
         "logprob_clean": float(att.logprob_clean[i])} for i in range(len(pos))])
    write_text(args.out / "summary.md", f"Vector: {hook} (strength {args.strength}). First-order attribution "
               f"{float(att.total.mean()):.4f} vs actual {float((att.logprob_steered - att.logprob_clean).mean()):.4f} nats.\n")
    return {"png": [png1, png2], "csv": args.out / "grad_x_act.csv"}


if __name__ == "__main__":
    print(main(sys.argv[1:]))
