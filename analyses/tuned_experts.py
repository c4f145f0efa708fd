"""Table of the task-tuned experts from their cards (copies of each expert folder's
expert_card.json, written by ``steer-lens finetune --card-copy``), and README.md: the steering
rows of every expert that has been run as the expert of the main protocol
(``analyses/main_results.py --expert <folder>`` writes ``results/tuned_experts/<folder name>/``),
next to the target's own rows on the same dataset (``results/benchmark/main_results.csv``).

    python analyses/tuned_experts.py [--cards results/tuned_experts/cards] [--out results/tuned_experts/experts.md]

The weights are never committed: each row's command rebuilds the expert into the steer-lens cache
(``<cache>/experts/<base>-<dataset>-<settings hash>``), and the same command later reuses it.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from lens_common import NOTES_LINK
from steer_lens import methods as M
from steer_lens.evaluate import mcnemar, paired_bootstrap
from steer_lens.io import write_text
from steer_lens.ledger import split_section
from steer_lens.stats import bh

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["expert", "base", "dataset", "rows", "steps x batch", "lr", "trained blocks", "train time (wall / CPU)",
           "train acc", "validation acc", "test acc [95% CI]", "base validation acc"]


def command(card: dict) -> str:
    s = card["settings"]
    parts = [f"steer-lens finetune --model {card['base_model']} --dataset {card['dataset']}",
             f"--steps {s['steps']} --batch-size {s['batch_size']} --lr {s['lr']:g} --seed {s['seed']}"]
    if s.get("train_layers"):
        parts.append(f"--train-layers {s['train_layers']}")
    if s.get("train_limit"):
        parts.append(f"--train-limit {s['train_limit']}")
    if s.get("train_splits"):
        parts.append(f"--splits {','.join(s['train_splits'])}")
    if s.get("weight_decay"):
        parts.append(f"--weight-decay {s['weight_decay']:g}")
    if s.get("warmup") != 0.1:
        parts.append(f"--warmup {s['warmup']:g}")
    if not s.get("balance", True):
        parts.append("--no-balance")
    test_n, train_n = card["accuracy"]["test"]["n"], card["accuracy"]["train"]["n"]
    parts.append(f"--eval-limit {test_n} --train-eval {train_n}" + ("" if "base_validation" in card else " --no-base-eval"))
    return " ".join(parts) + f" --threads {card.get('torch_threads', 1)}"


def row(name: str, card: dict) -> list[str]:
    acc, s = card["accuracy"], card["settings"]
    test = acc["test"]
    base = card.get("base_validation", {}).get("accuracy")
    return [name, card["base_model"], card["dataset"], f"{card['rows']} ({'+'.join(card['train_splits'])})",
            f"{s['steps']} x {s['batch_size']}", f"{s['lr']:g}", str(s.get("train_layers") or "all"),
            f"{card['train_seconds']:.0f} s / {card.get('train_cpu_seconds', float('nan')):.0f} s",
            f"{acc['train']['accuracy']:.3f} (n={acc['train']['n']})",
            f"{acc['validation']['accuracy']:.3f} (n={acc['validation']['n']})",
            f"{test['accuracy']:.3f} [{test['ci95'][0]:.2f}, {test['ci95'][1]:.2f}] (n={test['n']})",
            "-" if base is None else f"{base:.3f}"]


# the steering table: the expert itself, the target's own label direction and the expert's, each
# followed by its random control (same hooks, norms and strength), then the correct-vs-wrong methods
STEERING = M.with_controls(["expert_unsteered", "unsteered", "calibration", "label_caa", "expertsteer_label",
                          "expertsteer_label_lowest_mi", "caa", "self_rfm", "expertsteer_autoencoder", "expertsteer_ridge",
                          "expertsteer_procrustes", "expertsteer_hybrid"])


# rows that do not depend on the expert: the target's own methods and their random controls
TARGET_ONLY = {m for m in M.available() if not M.get(m).needs_expert}
# the steering rows that depend on the expert: all but the target's own rows and the expert itself
EXPERT_METHODS = set(STEERING) - TARGET_ONLY - {"expert_unsteered"}


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open())) if path.is_file() else []


def _items(folder: Path) -> dict:
    """Per-item correctness of a main-results folder (``items.json``, written by ``steer_lens.bench.report``), or {}."""
    path = folder / "items.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def paired(tuned: dict | None, base: dict | None) -> tuple[str, float | None]:
    """Tuned minus base expert on the same test items: the text (mean difference [95% CI], McNemar p (exact,
    uncorrected) and the discordant counts) and the raw p; ("", None) when either row has no per-item record."""
    if not tuned or not base:
        return "", None
    if tuned["ids"] != base["ids"]:
        raise ValueError("the tuned and base rows were scored on different test items; re-run both with the "
                         "same --limit-test")
    pb, mc = paired_bootstrap(tuned["correct"], base["correct"]), mcnemar(tuned["correct"], base["correct"])
    return (f"{pb['diff']:+.3f} [{pb['ci_low']:+.3f}, {pb['ci_high']:+.3f}], p = {mc['p']:.3g} "
            f"({mc['only_a']} vs {mc['only_b']})"), mc["p"]


def _p(p) -> str:
    """A p-value of a results CSV (4 d.p.) as the table shows it."""
    return "" if p in ("", None) else ("< 1e-4" if float(p) == 0 else f"{float(p):.3g}")


def _row(expert: str, window: str, method: str, r: dict, vs_tuned: str = "",
         p_tuned: float | None = None) -> dict:
    return {"expert": expert, "expert layers": window, "dataset": r["dataset"], "method": method,
            "model": r["model"], "test acc [95% CI]": f"{float(r['accuracy']):.3f} "
            f"[{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}]", "n": r["n"],
            "layers": r.get("layers", ""), "strength": r.get("strength", ""), "val acc": r.get("val_accuracy", ""),
            "p vs unsteered": _p(r.get("p_mcnemar_vs_unsteered")),
            "p vs unsteered (BH)": _p(r.get("p_bh_vs_unsteered")),
            "share of top answer": r.get("pred_share", ""), "tuned - base (paired)": vs_tuned, "_p_tuned": p_tuned}


def card_name(folder: str, cards: dict) -> str:
    """The card of an expert's results folder ``<base>-<dataset>-<hash>``: the card named like the
    folder, else the longest card name it extends (``gemma-3-270m-sst2`` for ``...-sst2-da2e015fa406``;
    a card named with the hash wins over an older one of the same base and dataset), else itself."""
    if folder in cards:
        return folder
    return max((n for n in cards if folder.startswith(n + "-")), key=len, default=folder)


def steering_rows(root: Path, cards: dict, base_csv: Path) -> list[dict]:
    """One line per (expert, pair window, method) from each expert's main-results folder and its
    ``expert_layers_<first>_<last>`` subfolders (runs with ``--expert-layers``; ``extend_flat`` below
    either: runs with ``--extend-flat``); target-only rows (``TARGET_ONLY``) missing there
    come from the main benchmark run (same target, same settings, shared cache), never a row that
    depends on the expert. Each expert-dependent row is followed by the base expert's row in the same
    window (``<base_csv folder>/<window>/``; the main folder: only where the tuned expert has that
    row too), the comparison that says what the tuning changed. The base expert's window runs are read from
    ``<root>/<card's base model>/<window>/`` when the base model was run as the expert there (e.g.
    ``--expert smollm2-135m-instruct``), else from the main run's folder (the default expert)."""
    base = {(r["dataset"], r["method"]): r for r in _csv(base_csv)}
    bases = {c["base_model"] for c in cards.values()}  # runs of a base model as the expert: <root>/<base model>/
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in bases):
        name = card_name(folder.name, cards)
        card_base = cards[name]["base_model"] if name in cards else None
        base_root = root / card_base if card_base and (root / card_base).is_dir() else base_csv.parent
        windows = sorted(folder.glob("expert_layers_*_*"))
        subs = [folder, *windows, *[w / "extend_flat" for w in [folder, *windows]]]
        for sub in [s for s in subs if (s / "main_results.csv").is_file()]:
            rel = sub.relative_to(folder)
            window = next(("-".join(p.split("_")[2:]) for p in rel.parts if p.startswith("expert_layers_")),
                          "middle half") + (", extend-flat search" if "extend_flat" in rel.parts else "")
            rows = {(r["dataset"], r["method"]): r for r in _csv(sub / "main_results.csv")}
            main_run = sub == folder and base_root == base_csv.parent  # the default expert's own table
            base_window = base if main_run else {(r["dataset"], r["method"]): r
                                                 for r in _csv(base_root / rel / "main_results.csv")}
            items, base_items = _items(sub), _items(base_root / rel)
            for ds in sorted({d for d, _ in rows}):
                for m in STEERING:
                    # a row the expert does not change may come from the main run; an expert's own never does
                    r = rows.get((ds, m)) or (base.get((ds, m)) if m in TARGET_ONLY and sub == folder else None)
                    if r is not None:
                        out.append(_row(name, window, m, r))
                for m in STEERING:  # the main folder: only where the tuned expert has the row too
                    if m in EXPERT_METHODS and (ds, m) in base_window and ((ds, m) in rows or sub != folder):
                        vs, p = (paired(items.get(ds, {}).get(m), base_items.get(ds, {}).get(m))
                                 if (ds, m) in rows else ("", None))
                        out.append(_row(name, window, f"{m} (base expert)", base_window[(ds, m)], vs, p))
    # the tuned - base comparisons of this table are one family: BH over them
    tested = [r for r in out if r["_p_tuned"] is not None]
    for r, q in zip(tested, bh([r["_p_tuned"] for r in tested])):
        r["tuned - base (paired)"] += f", BH {q:.3g}"
    return out


def readme(root: Path, cards: dict, experts_md: str, base_csv: Path) -> str:
    rows = steering_rows(root, cards, base_csv)
    cols = ["expert", "expert layers", "dataset", "method", "model", "test acc [95% CI]", "n", "layers", "strength", "val acc",
            "p vs unsteered", "p vs unsteered (BH)", "share of top answer", "tuned - base (paired)"]
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                      + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])
    text = ["# Task-tuned experts as the expert of ExpertSteer", "",
            "Generated by `analyses/tuned_experts.py`. Target: stock SmolLM2-135M-Instruct. The benchmark's rules "
            "(`analyses/main_results.py --expert <folder> --datasets <its dataset>`): fit on train, layer pairs and "
            "strength chosen on 100 validation items, test scored once; each random control sits at its method's "
            "hooks, norms and strength. Target-only rows (unsteered, label_caa, caa, self_rfm and their controls) "
            "are shared with `results/benchmark`. On a \"(base expert)\" row, *tuned - base (paired)* compares the "
            "tuned expert's row above it with the base expert's in the same window item by item: mean difference "
            "[95% paired-bootstrap CI], exact McNemar p (uncorrected), (items right only with the tuned expert's "
            "direction vs only with the base one's) and the p adjusted by Benjamini-Hochberg over every such "
            "comparison in this table. *p vs unsteered*: exact McNemar p against the unsteered row, uncorrected, "
            "and *(BH)* as adjusted in the report the row comes from (over the tests against unsteered of that "
            "report's table). Every row here is exploratory: scored on the test splits.", "",
            table if rows else "(no expert has been run through the main protocol yet)", "",
            *([split_section({r["dataset"] for r in rows})] if rows else []),
            experts_md.replace("# Task-tuned experts", "## The experts", 1)]
    if (root / "notes.md").is_file():
        text += ["", NOTES_LINK]
    return "\n".join(text) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cards", type=Path, default=ROOT / "results" / "tuned_experts" / "cards")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "tuned_experts" / "experts.md",
                    help="the experts table; README.md is written next to it")
    ap.add_argument("--base-csv", type=Path, default=ROOT / "results" / "benchmark" / "main_results.csv",
                    help="the main run's rows (target-only methods are taken from it)")
    args = ap.parse_args(argv)
    cards = {p.stem: json.loads(p.read_text()) for p in sorted(args.cards.glob("*.json"))}
    if not cards:
        raise SystemExit(f"no expert cards in {args.cards}; build experts with `steer-lens finetune --card-copy`")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(n, c)) + " |" for n, c in cards.items()]
    cmds = [f"- `{n}`: `{command(c)}`" for n, c in cards.items()]
    text = ("# Task-tuned experts\n\n" "Generated by `analyses/tuned_experts.py` from `cards/*.json`. Accuracy: "
            "length-normalised answer scoring (`steer_lens.evaluate`); train = a seeded subsample of the "
            "training rows; validation/test = the bundled splits (test: seeded subsample of n items); "
            "95% CI: seeded bootstrap.\n\n" + "\n".join(lines) + "\n\n## Commands\n\n" + "\n".join(cmds) + "\n")
    write_text(args.out, text)
    write_text(args.out.parent / "README.md", readme(args.out.parent, cards, text, args.base_csv))
    print(text)


if __name__ == "__main__":
    main()
