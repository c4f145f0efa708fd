"""The demo's positive control: the share of choice-1 answers against the signed strength along a label
direction and along its random control (``dose_response``), as a text table and a figure."""

from __future__ import annotations

from pathlib import Path

from .common import table


def dose_response(target, items, plan, control, strengths_, batch_size: int, dataset: str) -> dict:
    """Share of choice-1 answers and accuracy on ``items`` (of ``dataset``) at each signed strength, along
    ``plan``'s direction and along ``control`` (the same hooks and norms), both in one ``sweep`` each."""
    import numpy as np

    from ..protocol import point
    from ..sweep import SweepInputs, sweep

    inputs = SweepInputs(target, items, batch_size=batch_size, keep=1)
    curves = {}
    for name, p in (("direction", plan), ("control", control)):
        pts = [point(s, r) for s, r in zip(strengths_, sweep(target, items, p, strengths_, batch_size=batch_size,
                                                               inputs=inputs))]
        curves[name] = [{"strength": q["strength"], "share1": (q["shares"] + [0.0, 0.0])[1],
                         "accuracy": q["accuracy"]} for q in pts]
    share = [q["share1"] for q in curves["direction"]]
    rho = float(np.corrcoef(np.argsort(np.argsort(strengths_)), np.argsort(np.argsort(share)))[0, 1]) \
        if len(set(share)) > 1 else None
    return {"dataset": dataset, "strengths": list(strengths_), "curves": curves, "n": len(items),
            "choices": list(items[0].choices),
            "monotone": all(b >= a - 1e-9 for a, b in zip(share, share[1:])),
            "share1_range": [min(share), max(share)], "spearman": rho}


def render_dose(d: dict, method: str, control: str, chosen: float) -> str:
    c1 = d["choices"][1]
    head = ["strength"] + [f"{s:+g}" for s in d["strengths"]]
    rows = [[f"share '{c1}' ({method})"] + [f"{q['share1']:.2f}" for q in d["curves"]["direction"]],
            [f"share '{c1}' ({control})"] + [f"{q['share1']:.2f}" for q in d["curves"]["control"]],
            [f"accuracy ({method})"] + [f"{q['accuracy']:.2f}" for q in d["curves"]["direction"]],
            [f"accuracy ({control})"] + [f"{q['accuracy']:.2f}" for q in d["curves"]["control"]]]
    lo, hi = d["share1_range"]
    if hi > lo:
        way = "rises" if d["spearman"] > 0 else "falls"
        verdict = (f"{way} {'monotonically' if d['monotone'] else 'though not monotonically'} between {lo:.2f} and "
                   f"{hi:.2f} (Spearman {d['spearman']:+.2f} with the strength)")
    else:
        verdict = "does not move"
    return (f"positive control on {d['dataset']} ({d['n']} validation items): the share of '{c1}' answers (choice 1) "
            f"against the signed strength (x median residual norm) along {method}'s direction and along "
            f"its random control\n" + table(rows, head) +
            f"\nalong the label direction the share of '{c1}' {verdict}; validation chose strength {chosen:g}")


def plot_dose(d: dict, method: str, control: str, chosen: float, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io import atomic_path

    fig = Figure(figsize=(8, 3), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for key, ax, label in (("share1", axes[0], f"share of '{d['choices'][1]}' answers"),
                           ("accuracy", axes[1], "validation accuracy")):
        for name, style in (("direction", "o-"), ("control", "s--")):
            pts = d["curves"][name]
            ax.plot([q["strength"] for q in pts], [q[key] for q in pts], style,
                    label=method if name == "direction" else control)
        if chosen:
            ax.axvline(chosen, color="grey", lw=0.8, ls=":", label=f"chosen {chosen:g}")
        ax.set(xlabel="signed strength (x median residual norm)", ylabel=label, ylim=(-0.03, 1.03))
    axes[0].legend(fontsize=7)
    fig.suptitle(f"positive control on {d['dataset']} ({d['n']} validation items): {method} vs {control}",
                 fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
