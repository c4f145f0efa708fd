"""The benchmark report's figure: validation accuracy against strength, one panel per dataset."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_path


def plot_curves(rows: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in rows if r.get("val_curve")]
    datasets = sorted({r["dataset"] for r in curves})
    if not datasets:
        return False
    ncols = min(5, len(datasets))
    nrows = -(-len(datasets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, ds in zip(axes.flat, datasets):
        for r in (r for r in curves if r["dataset"] == ds):
            c = r["val_curve"]
            xs = [max(p["strength"], 0.01) for p in c]  # strength 0 (no steering) drawn at 0.01
            ys = [p["accuracy"] for p in c]
            err = [[y - p["ci_low"] for y, p in zip(ys, c)], [p["ci_high"] - y for y, p in zip(ys, c)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=2, alpha=0.8, label=r["method"])
        ax.set_xscale("log")
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel("strength (x median residual norm; 0 at 0.01)")
        ax.set_ylabel("validation accuracy")
    axes.flat[len(datasets) - 1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True
