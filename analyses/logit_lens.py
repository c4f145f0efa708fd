"""What do the steering vectors say in token space? Logit lens of each plan vector (and of the CAA
mean difference at the same layer), and the direct effect of steering on next-token predictions.

    python analyses/logit_lens.py [--fast] [--out DIR]
Writes logit_lens.md/.csv (top/bottom tokens per vector; the target's final RMSNorm, gamma
included, is applied to the vector before the unembedding) and direct_effect.png/.md (tokens whose
mean log-prob after test prompts rises/falls most under the full plan, and the KL it causes).
"""

from __future__ import annotations

import sys

import torch

from lens_common import (figure, finish_args, fit_plan, items, layer_of, load_models, markdown, mean_difference,
                         parser, save_figure, write_csv)
from steer_lens.io import write_text
from steer_lens.probes import direct_effect, logit_lens


def main(argv=None) -> dict:
    args = finish_args(parser("logit_lens", __doc__).parse_args(argv), "logit_lens")
    target, _ = load_models(args.fast)
    plan, _, pos, neg = fit_plan(args)
    k = 10
    rows, md = [], [f"# Logit lens of steering vectors ({args.dataset})\n",
                    "Scores: ln_final(v) @ W_U (final RMSNorm with its gamma; |v| irrelevant).\n"]
    for hook, vec in plan.vectors.items():
        for method, v in (("expertsteer", vec), ("caa", mean_difference(target, pos, neg, layer_of(hook)))):
            lens = logit_lens(target, v, k=k)
            md += [f"\n## {method}, target layer {layer_of(hook)}\n", markdown(lens.table(), ".2f")]
            rows += [{"method": method, "target_layer": layer_of(hook), **r} for r in lens.table()]
    write_csv(args.out / "logit_lens.csv", rows)
    write_text(args.out / "logit_lens.md", "".join(md))
    prompts = [it.prompt() for it in items(args.dataset, "test", 6 if args.fast else 24, args.fast)]
    eff = direct_effect(target, prompts, plan=plan, strength=args.strength, k=k)
    fig, axes = figure(7, 3.6)
    toks = eff.bottom[::-1] + eff.top[::-1]
    ax = axes[0, 0]
    ax.barh(range(len(toks)), [s for _, s in toks], color=["tab:red"] * k + ["tab:blue"] * k)
    ax.set_yticks(range(len(toks)), [repr(t) for t, _ in toks], fontsize=7)
    ax.axvline(0, color="k", lw=0.5)
    ax.set(xlabel="mean Δ log-prob of next token (nats)",
           title=f"Direct effect of the plan at strength {args.strength} ({len(prompts)} test prompts)\n"
                 f"mean KL(steered‖clean) = {float(eff.kl.mean()):.3f} nats")
    png = save_figure(fig, args.out / "direct_effect.png")
    table = [{"rank": i + 1, "promoted": t[0], "dlogprob_up": t[1], "suppressed": b[0], "dlogprob_down": b[1]}
             for i, (t, b) in enumerate(zip(eff.top, eff.bottom))]
    write_text(args.out / "direct_effect.md",
               f"# Direct effect on next-token log-probs (strength {args.strength})\n\n"
               f"Mean KL(steered || clean): {float(eff.kl.mean()):.4f} nats; "
               f"max |Δ logit| {float(eff.delta.abs().max()):.3f}.\n\n" + markdown(table))
    return {"png": png, "md": args.out / "logit_lens.md", "kl": float(torch.as_tensor(eff.kl).mean())}


if __name__ == "__main__":
    print(main(sys.argv[1:]))
