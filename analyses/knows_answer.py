"""Where does a model know the answer? A per-layer probe map, for choosing (or rejecting) an expert.

For each model and dataset: every test item's prompt is completed with each of its choices, the
residual stream at the completion's last token is read at every layer (``steer_lens.activations``),
and an L2 logistic probe (5-fold CV, both completions of one item in the same fold) separates right
from wrong completions (``steer_lens.probes.logistic_probe_auroc``). AUROC 0.5: the layer does not
tell them apart; 1.0: it always does. The model's own accuracy (``steer_lens.evaluate``) is listed
beside it: a model whose probes are at chance everywhere cannot be tuned into an expert by
training its top blocks alone, and cannot hand a target knowledge it does not represent.

    python analyses/knows_answer.py --models gemma-3-270m <tuned expert folder> --dataset arithmetic_2way
    python analyses/knows_answer.py --fast

Writes ``results/knows_answer/<dataset>.csv`` and ``<dataset>.md`` (table + command).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lens_common import ROOT, load_models, markdown, start_run, write_csv  # noqa: E402
from steer_lens.activations import capture  # noqa: E402
from steer_lens.data import load_dataset  # noqa: E402
from steer_lens.evaluate import evaluate  # noqa: E402
from steer_lens.io import write_text  # noqa: E402
from steer_lens.ledger import split_section  # noqa: E402
from steer_lens.models import load_model  # noqa: E402
from steer_lens.probes import logistic_probe_auroc  # noqa: E402


def probe_map(model, items, *, batch_size: int = 16) -> list[float]:
    """Per layer: CV AUROC of right vs wrong (prompt + choice) at the completion's last token."""
    right = [(it.prompt(), it.completions()[it.answer]) for it in items]
    wrong = [(it.prompt(), c) for it in items for k, c in enumerate(it.completions()) if k != it.answer]
    groups = torch.tensor([i for i in range(len(items))]
                          + [i for i, it in enumerate(items) for k in range(len(it.choices)) if k != it.answer])
    layers = list(range(model.cfg.n_layers))
    acts = capture(model, right + wrong, layers=layers, position="last", batch_size=batch_size).tensor.float()
    pos, neg = acts[:len(right)], acts[len(right):]
    return [logistic_probe_auroc(pos[:, layer], neg[:, layer], groups=groups) for layer in layers]


def parse(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="analyses/knows_answer.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["gemma-3-270m"], help="registry names or HF folders")
    p.add_argument("--dataset", default="arithmetic_2way")
    p.add_argument("--limit-test", type=int, default=200, help="test items probed (and scored)")
    p.add_argument("--out", default=str(ROOT / "results" / "knows_answer"))
    p.add_argument("--fast", action="store_true", help="tiny random models, few items")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None) -> Path:
    a = parse(argv)
    out, command = start_run("knows_answer", a, argv)
    items = load_dataset(a.dataset).split("test", limit=16 if a.fast else a.limit_test)
    if a.fast:
        items = [it for it in items if len(it.prompt()) < 200]
    # fast: the 3-layer model first, so the table must hold models of different depths
    models = [("tiny_expert", load_models(True)[1]), ("tiny_target", load_models(True)[0])] if a.fast else \
        [(Path(m).name, load_model(m)) for m in a.models]
    rows = []
    for name, model in models:
        aurocs = probe_map(model, items)
        acc = evaluate(model, items)
        best = max(range(len(aurocs)), key=lambda i: aurocs[i])
        rows.append({"model": name, "accuracy": acc.accuracy, "ci95": f"[{acc.ci_low:.2f}, {acc.ci_high:.2f}]",
                     "best_layer": best, "best_auroc": aurocs[best],
                     **{f"L{i}": x for i, x in enumerate(aurocs)}})
    out.mkdir(parents=True, exist_ok=True)
    width = max(len([k for k in r if k.startswith("L")]) for r in rows)
    rows = [{**r, **{f"L{i}": r.get(f"L{i}", "") for i in range(width)}} for r in rows]  # models of any depth
    write_csv(out / f"{a.dataset}.csv", rows)
    summary = [{k: r[k] for k in ("model", "accuracy", "ci95", "best_layer", "best_auroc")} for r in rows]
    per_layer = [{"model": r["model"], **{f"L{i}": r.get(f"L{i}", "") for i in range(0, width, 2)}} for r in rows]
    text = (f"# Where does the model know the answer? ({a.dataset}, {len(items)} test items)\n\n"
            f"Command: `{command}`\n\n"
            "AUROC of a cross-validated logistic probe separating right from wrong (prompt + choice) "
            "completions at the completion's last token, per layer (0.5 = chance); accuracy: the model's "
            "own answers (length-normalised scoring, seeded bootstrap 95% CI).\n\n"
            + markdown(summary) + "\n\nEvery other layer (all in the CSV):\n\n" + markdown(per_layer) + "\n\n"
            + split_section([a.dataset]))
    write_text(out / f"{a.dataset}.md", text)
    return out / f"{a.dataset}.md"


if __name__ == "__main__":
    main()
