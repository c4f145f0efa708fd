"""Why does CAA not move behaviour on SmolLM2? The candidate reasons issue 12 names, one at a time.

On the A/B behaviour sets, CAA fitted with its own recipe (activation difference read at the
answer-letter token, ``fit_caa(position="last")``) is swept over layers of the whole depth, with
and without the chat template, at signed strengths on VALIDATION items. Per (dataset, template,
layer): P(behaviour) at every strength, the largest move in the strength's sign at |strength| <= 1,
and the raw CAA vector's norm relative to the median residual norm there (what CAA's own
multipliers mean in this project's units: multiplier m on the raw vector = strength m x ratio).

    python analyses/caa_diagnosis.py                      # two behaviours (about 20 min each on 1 core)
    python analyses/caa_diagnosis.py --fast               # tiny random model, seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from steer_lens.baselines import fit_caa, pooled_activations
from steer_lens.data import contrast_prompts, load_dataset
from steer_lens.io import write_json
from steer_lens.protocol import point
from steer_lens.sweep import sweep

log = logging.getLogger("caa_diagnosis")
DATASETS = ["caa_sycophancy", "caa_myopic_reward"]
GRID = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)
DEPTHS = (0.15, 0.3, 0.45, 0.6, 0.75)  # layers at these fractions of the depth


def diagnose(target, name: str, chat: bool, layers: list[int], args, cache: Path) -> list[dict]:
    """One row per (layer, strength) for one dataset and template setting (cached per layer)."""
    ds = load_dataset(name)
    train, val = ds.split("train", limit=args.limit_train), ds.split("validation", limit=args.limit_val)
    pos, neg = contrast_prompts(train)  # matching minus not matching the behaviour
    acts = None
    rows = []
    for layer in layers:
        path = cache / f"{name}__chat{int(chat)}__L{layer}.json"
        if not path.exists():
            if acts is None:
                acts = pooled_activations(target, pos, neg, layers, chat_template=chat, position="last")
            i = layers.index(layer)
            raw = float((acts[0][:, i].mean(0) - acts[1][:, i].mean(0)).norm())
            plan = fit_caa(target, pos, neg, layer, acts=acts, acts_layers=layers, chat_template=chat,
                           position="last")
            (hook,) = plan.vectors
            results = sweep(target, val, plan, list(args.grid), batch_size=args.batch_size, chat_template=chat)
            pts = [point(s, r) for s, r in zip(args.grid, results)]
            write_json(path, {"dataset": name, "chat_template": chat, "layer": layer,
                              "raw_norm_ratio": raw / plan.norms[hook], "points": pts})
            log.info("%s chat=%s layer %d: P(behaviour) %s", name, chat, layer,
                     [round(p["behaviour_prob"], 3) for p in pts])
        rows.append(json.loads(path.read_text()))
    return rows


def letter_decomposition(target, name: str, layers: list[int], limit_train: int) -> list[dict]:
    """How much of CAA's contrast is the answer letter itself. Per item, positive minus negative
    activation (read at the letter) is signed by which letter matches the behaviour; if those signed
    differences all point one way (the "A minus B" direction), the context barely changes the letter's
    representation, and the CAA mean over letter-balanced items is ~(2 x share of A - 1) x that
    direction: a letter-imbalance artefact, not a behaviour."""
    train = load_dataset(name).split("train", limit=limit_train)
    pos, neg = contrast_prompts(train)
    a_matches = torch.tensor([c.strip() == "(A" for _, c in pos])
    P, N = pooled_activations(target, pos, neg, layers, position="last")
    sign = torch.where(a_matches, 1.0, -1.0)[:, None]
    out = []
    for i, layer in enumerate(layers):
        d = P[:, i] - N[:, i]
        letter = (d * sign).mean(0)
        cos = torch.nn.functional.cosine_similarity(d * sign, letter[None], dim=1)
        out.append({"dataset": name, "layer": layer, "share_A_matches": round(float(a_matches.float().mean()), 3),
                    "median_cos_item_to_letter_dir": round(float(cos.median()), 3),
                    "caa_norm_over_letter_norm": round(float(d.mean(0).norm() / letter.norm()), 3),
                    "caa_norm_over_item_norm": round(float(d.mean(0).norm() / d.norm(dim=1).mean()), 3)})
    return out


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        pts = r["points"]
        zero = next(p for p in pts if p["strength"] == 0)["behaviour_prob"]
        moves = [np.sign(p["strength"]) * (p["behaviour_prob"] - zero) for p in pts if 0 < abs(p["strength"]) <= 1]
        best = max((p for p in pts if p["strength"] != 0), key=lambda p: np.sign(p["strength"]) * (
            p["behaviour_prob"] - zero))
        out.append({"dataset": r["dataset"], "chat_template": r["chat_template"], "layer": r["layer"],
                    "raw_norm_ratio": round(r["raw_norm_ratio"], 3), "bprob_at_0": round(zero, 3),
                    "max_signed_move": round(float(max(moves)), 3), "at_strength": best["strength"],
                    "top_answer_share_there": round(best["pred_share"], 2)})
    return out


def write_outputs(out: Path, rows: list[dict], command: str, letters: list[dict] | None = None) -> Path:
    from lens_common import write_report
    from steer_lens.bench.report import _md_table

    summary = summarise(rows)
    n_ok = len({(r["dataset"]) for r in summary if r["max_signed_move"] >= 0.10})
    md = ["# Why CAA does not move behaviour here: layers, chat template, vector norm", "",
          f"Made by `{command}` (`analyses/caa_diagnosis.py`); VALIDATION items; strength = x the median residual "
          "norm at the layer; CAA read at the answer letter (`position=\"last\"`), steering every position.", "",
          f"Datasets where some (template, layer) moves P(behaviour) by >= 0.10 in the strength's sign at "
          f"|strength| <= 1: {n_ok} of {len({r['dataset'] for r in summary})}.", "",
          _md_table(summary, list(summary[0]) if summary else []), ""]
    if letters:
        md += ["## How much of the contrast is the letter (`letter_decomposition`, train items)", "",
               "Per item, (matching minus non-matching activation at the answer letter) x (+1 if the matching letter "
               "is A, else -1); cosine of each to their mean (the A-minus-B direction), and the CAA vector's norm "
               "relative to that direction and to the items' differences.", "",
               _md_table(letters, list(letters[0])), ""]
    return write_report(out / "README.md", "\n".join(md) + "\n")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    p.add_argument("--limit-train", type=int, default=140)
    p.add_argument("--limit-val", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "results" / "caa_diagnosis"))
    p.add_argument("--fast", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--letters-only", action="store_true", help="only the letter decomposition (one capture per set)")
    a = p.parse_args(argv)
    if 0.0 not in a.grid:
        p.error("--grid must contain 0 (the unsteered point)")
    if a.fast:
        a.datasets, a.grid, a.limit_train, a.limit_val = a.datasets[:1], [-1.0, 0.0, 1.0], 4, 4
    return a


def main(argv=None) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lens_common import start_run

    a = parse(argv)
    out, command = start_run("caa_diagnosis", a, argv)
    settings = {k: getattr(a, k) for k in ("grid", "limit_train", "limit_val", "fast")}
    cache = out / "cache" / hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:10]
    cache.mkdir(parents=True, exist_ok=True)
    write_json(cache / "config.json", settings)
    if not a.report_only:
        from lens_common import load_models

        target, _ = load_models(a.fast, **({"n_ctx": 4096} if a.fast else {}))
        L = target.cfg.n_layers
        layers = sorted({min(L - 1, round(f * L)) for f in ((0.3, 0.75) if a.fast else DEPTHS)})
        for name in a.datasets:
            path = cache / f"{name}__letters.json"
            if not path.exists():
                write_json(path, letter_decomposition(target, name, layers, a.limit_train))
            if not a.letters_only:
                for chat in (True, False):
                    diagnose(target, name, chat, layers, a, cache)
    rows = [json.loads(f.read_text()) for f in sorted((out / "cache").glob("*/*__chat*__L*.json"))]
    letters = [r for f in sorted((out / "cache").glob("*/*__letters.json")) for r in json.loads(f.read_text())]
    return write_outputs(out, rows, command, letters)


if __name__ == "__main__":
    main()
