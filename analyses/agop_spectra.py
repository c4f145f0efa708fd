"""How concentrated is each pair's AGOP? Spectra of the RFM metric over iterations, per layer pair.

    python analyses/agop_spectra.py [--fast] [--out DIR]
Writes agop_spectra.png (left: top-20 eigenvalues of the final AGOP per pair, log scale; right:
top share and effective rank over RFM iterations) and agop_spectra.csv / .md.
"""

from __future__ import annotations

import sys

from lens_common import figure, finish_args, fit_plan, markdown, parser, save_figure, write_csv
from steer_lens.io import write_text
from steer_lens.probes import agop_history


def main(argv=None) -> dict:
    args = finish_args(parser("agop_spectra", __doc__).parse_args(argv), "agop_spectra")
    plan, directions, _, _ = fit_plan(args)
    fig, axes = figure(10, 3.6, ncols=3)
    rows = []
    for pair, d in zip(plan.pairs, directions):
        label = f"E{pair.expert_layer}→T{pair.target_layer}"
        ev = d.eigenvalues.double()
        axes[0, 0].semilogy(range(1, min(20, len(ev)) + 1), ev[:20].clamp_min(1e-12), marker="o", ms=3, label=label)
        hist = agop_history(d)
        its = [r["iteration"] for r in hist if r["iteration"] != "final"]
        axes[0, 1].plot(its, [r["top_share"] for r in hist[:-1]], marker="o", label=label)
        axes[0, 2].plot(its, [r["effective_rank"] for r in hist[:-1]], marker="o", label=label)
        for r in hist:
            rows.append({"pair": label, "iteration": r["iteration"], "top_share": r["top_share"],
                         "effective_rank": r["effective_rank"], "gap": r["gap"], "top": r["top"]})
    axes[0, 0].set(xlabel="eigenvalue rank", ylabel="AGOP eigenvalue", title="final AGOP spectrum")
    axes[0, 1].set(xlabel="RFM predictor (0: M = I)", ylabel="λ1 / Σλ", title="top share")
    axes[0, 2].set(xlabel="RFM predictor (0: M = I)", ylabel="exp(entropy)", title="effective rank")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"AGOP spectra of ExpertSteer's RFMs ({args.dataset})")
    png = save_figure(fig, args.out / "agop_spectra.png")
    write_csv(args.out / "agop_spectra.csv", rows)
    final = [r for r in rows if r["iteration"] == "final"]
    write_text(args.out / "agop_spectra.md", "# Final AGOP spectrum per pair\n\n" + markdown(final))
    return {"png": png, "csv": args.out / "agop_spectra.csv"}


if __name__ == "__main__":
    print(main(sys.argv[1:]))
