"""Robustness and sample-selection studies of the steering vectors (issue 14, section 2).

For ExpertSteer (auto-encoder and ridge alignment, the paper's lowest-MI pairs), CAA and self-RFM,
on three datasets (SST-2 and Financial PhraseBank with the label contrast "answer 1 minus answer 0",
where steering has a measurable effect; caa_sycophancy with CAA's own behaviour contrast):

- stability: the vectors refitted on bootstrap resamples of the train items; cosine to the vector
  fitted on all of them (same hooks: ExpertSteer's pairs are held at the full fit's pairs), and how
  often the MI rule picks the same layer pairs (Jaccard of the pair sets, share of identical sets);
- label noise: 0, 10, 20 and 40% of the contrast pairs swapped (positive <-> negative); cosine to the
  clean vector and the validation effect at a fixed strength;
- sample size: 16, 32, 64, 128 and all train items;
- perturbed test inputs (seeded typos, an irrelevant distractor sentence): steered vs unsteered
  accuracy, steering with the clean vector at the strength chosen on clean validation items.

Effect = the change (steered minus unsteered) of the rate the contrast points at: the share of
choice-1 answers for a label contrast, accuracy (= rate of the matching behaviour) for the behaviour
contrast, in the clean vector's sense. The fixed strength is the clean vector's strength of largest
|effect| on the signed grid (VALIDATION; ``effect_strength``); the perturbation strength is the one of
best validation accuracy (0 included), chosen on clean validation items only. Strength = × median residual norm at each steered hook.

Both models are run once per dataset (train activations captured at every layer); every refit
reuses that capture. Resumable: each result is a JSON file under ``results/robustness/cache/``.

    python analyses/robustness.py                          # the three datasets (about an hour each on 1 core)
    python analyses/robustness.py --report-only            # README, points.csv, figure from the cache
    python analyses/robustness.py --datasets sst2 --methods caa self_rfm
    python analyses/robustness.py --fast                   # tiny random models, seconds
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import random
import re
import sys
from pathlib import Path

import numpy as np
import torch

from steer_lens import methods as M
from steer_lens.baselines import choose_layer, fit_caa, fit_self_rfm, shortlist_layers
from steer_lens.data import Item, contrast_prompts, load_dataset
from steer_lens.evaluate import evaluate
from steer_lens.io import write_json, write_text
from steer_lens.pipeline import ExpertSteer
from steer_lens.protocol import point
from steer_lens.sweep import sweep

log = logging.getLogger("robustness")
DATASETS = {"sst2": "label", "financial_phrasebank": "label", "caa_sycophancy": "correct"}
METHODS = ["expertsteer_autoencoder", "expertsteer_ridge", "caa", "self_rfm"]
# the ExpertSteer methods' alignments, from the registered benchmark methods
ES_ALIGNMENT = {m: M.get(m).variant.alignment for m in METHODS if isinstance(M.get(m), M.ExpertSteerMethod)}
GRID = (-0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5)
NOISE = (0.0, 0.1, 0.2, 0.4)
SIZES = (16, 32, 64, 128)  # plus "all"
# irrelevant to every bundled task (written for this analysis)
DISTRACTOR = "The museum on the corner closes at six on Sundays, and the bus stops right outside."


# ---------------------------------------------------------------- perturbations

def _typo(word: str, rng: random.Random) -> str:
    """Swap two adjacent inner letters (keeps the first and last letter, like a typing slip)."""
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _split_content(it: Item) -> tuple[str, str]:
    """(content, instruction tail) of the question: typos and distractors touch the content only."""
    q = it.question
    cut = q.find("\n\nChoices:") if it.format == "ab" else q.rfind("\n")
    return (q[:cut], q[cut:]) if cut > 0 else (q, "")


def perturb(items: list[Item], kind: str, seed: int = 0, rate: float = 0.15) -> list[Item]:
    """Seeded copies of ``items``: ``"typos"`` swaps two inner letters in ``rate`` of the words of four
    or more letters in the item's content; ``"distractor"`` puts an irrelevant sentence on the line
    before it. Choices, answers and the instruction line are unchanged."""
    out = []
    for it in items:
        content, tail = _split_content(it)
        if kind == "typos":
            rng = random.Random(f"{seed}:typos:{it.id}")
            content = re.sub(r"[A-Za-z]{4,}", lambda m: _typo(m.group(0), rng) if rng.random() < rate
                             else m.group(0), content)
        elif kind == "distractor":
            content = f"{DISTRACTOR}\n{content}"
        else:
            raise ValueError(f"unknown perturbation {kind!r}; choose 'typos' or 'distractor'")
        out.append(Item(**{**it.to_dict(), "question": content + tail}))
    return out


# ---------------------------------------------------------------- fitting on subsets of one capture

class Fitter:
    """Every method refitted on any subset of the train contrast pairs, from one capture.

    Pair ``i`` is (positive ``i``, negative ``i``); ``flip`` swaps the two labels of a pair.
    Activations: (2n, layer, d) with the n positives first, for the expert and the target."""

    def __init__(self, expert, target, pos, neg, n_pairs: int = 3):
        self.E, self.T, self.pos, self.neg, self.n = expert, target, list(pos), list(neg), len(pos)
        self.n_pairs = n_pairs
        cfg = ExpertSteer()
        self.xe, self.xt = cfg.capture(expert, target, self.pos + self.neg)
        L = target.cfg.n_layers
        window = list(range(L // 4, 3 * L // 4 + 1))  # the same train-only layer rule as dose_response
        t_all = self.xt[:, window]
        _, scores = choose_layer(t_all[: self.n], t_all[self.n:], window)
        (self.layer,) = shortlist_layers(scores, 1)  # the main results' rule (ties spread over depth)
        self.clean_pairs: dict[str, list[tuple[int, int]]] = {}

    def _select(self, idx, flip):
        prompts = self.pos + self.neg
        p = [i + self.n if f else i for i, f in zip(idx, flip)]
        q = [i if f else i + self.n for i, f in zip(idx, flip)]
        sel = torch.tensor(p + q)
        return [prompts[i] for i in p], [prompts[i] for i in q], sel

    def fit(self, method: str, idx, flip=None, pairs=None):
        """The method's plan on pairs ``idx`` (``flip``: per pair, swap its labels). ExpertSteer uses
        the paper's lowest-MI rule unless ``pairs`` fixes them."""
        flip = flip if flip is not None else [False] * len(idx)
        P, N, sel = self._select(list(idx), list(flip))
        if method in ES_ALIGNMENT:
            cfg = ExpertSteer(n_pairs=self.n_pairs, alignment=ES_ALIGNMENT[method], pairs=pairs)
            return cfg.fit(self.E, self.T, P, N, activations=(self.xe[sel], self.xt[sel]))
        acts = (self.xt[sel[: len(P)]], self.xt[sel[len(P):]])
        layers = list(range(self.T.cfg.n_layers))
        f = fit_self_rfm if method == "self_rfm" else fit_caa
        return f(self.T, P, N, self.layer, acts=acts, acts_layers=layers)


def pairs_of(plan) -> list[tuple[int, int]]:
    return sorted((p.expert_layer, p.target_layer) for p in plan.pairs)


def cosine(a, b) -> float:
    """Mean over the hooks both plans steer of the cosine of their vectors (signed)."""
    common = sorted(set(a.vectors) & set(b.vectors))
    if not common:
        return float("nan")
    return float(np.mean([torch.nn.functional.cosine_similarity(a.vectors[h].double(), b.vectors[h].double(),
                                                                dim=0).item() for h in common]))


def effect_strength(points: list[dict], contrast: str) -> tuple[float, float]:
    """(strength, sign): the nonzero grid strength where the clean vector moves the contrast's rate
    most (ties: the smaller |strength|), and the sign of that move. A direction fitted in the
    auto-encoder's basis has no orientation in the target's, so both signs are searched; effects
    are then reported in the clean vector's sense (its own effect is positive)."""
    base = rate(next(p for p in points if p["strength"] == 0), contrast)
    best = max((p for p in points if p["strength"] != 0),
               key=lambda p: (abs(rate(p, contrast) - base), -abs(p["strength"]), p["strength"]))
    return best["strength"], 1.0 if rate(best, contrast) >= base else -1.0


def rate(p: dict, contrast: str) -> float:
    """The rate the contrast points at: share of choice 1 (label) or accuracy (correct)."""
    return (p["shares"] + [0.0, 0.0])[1] if contrast == "label" else p["accuracy"]


# ---------------------------------------------------------------- the studies

class Study:
    def __init__(self, args, target, expert):
        self.a, self.T, self.E = args, target, expert
        self.out = Path(args.out)
        # one folder per setting: results of other settings are never mixed in
        keys = ["grid", "noise", "sizes", "bootstrap", "n_pairs", "limit_train", "limit_val", "limit_test", "fast"]
        cfg = {k: getattr(args, k) for k in keys}
        self.cache = self.out / "cache" / hashlib.sha1(json.dumps(cfg).encode()).hexdigest()[:10]
        self.cache.mkdir(parents=True, exist_ok=True)
        write_json(self.cache / "config.json", cfg)

    def cached(self, key: str, compute):
        path = self.cache / f"{key}.json"
        if path.exists():
            return json.loads(path.read_text())
        row = compute()
        write_json(path, row)
        log.info("%s: %s", key, {k: v for k, v in row.items() if not isinstance(v, (list, dict))})
        return row

    def dataset(self, name: str) -> list[dict]:
        a = self.a
        contrast = DATASETS.get(name, "correct")
        ds = load_dataset(name)
        train = ds.split("train", limit=a.limit_train)
        val = ds.split("validation", limit=a.limit_val)
        test = ds.split("test", limit=a.limit_test)
        pos, neg = contrast_prompts(train, by=contrast)
        n = len(pos)
        fitter = None

        def get_fitter():
            nonlocal fitter
            if fitter is None:
                fitter = Fitter(self.E, self.T, pos, neg, n_pairs=a.n_pairs)
            return fitter

        rows = []
        for method in a.methods:
            key = f"{name}__{method}"
            plans = {}

            def clean():
                if "clean" not in plans:
                    plans["clean"] = get_fitter().fit(method, range(n))
                return plans["clean"]

            def grid():
                pts = [point(s, r) for s, r in zip(a.grid, sweep(self.T, val, clean(), a.grid,
                                                                  batch_size=a.batch_size))]
                acc = max(pts, key=lambda p: (p["accuracy"], -abs(p["strength"])))
                return {"points": pts, "s_accuracy": acc["strength"],
                        "layers": sorted(int(h.split(".")[1]) for h in clean().vectors),
                        "pairs": pairs_of(clean()) if method in ES_ALIGNMENT else []}

            g = self.cached(f"{key}__grid", grid)
            base = rate(next(p for p in g["points"] if p["strength"] == 0), contrast)
            s_eff, sign = effect_strength(g["points"], contrast)
            fixed = [tuple(p) for p in g["pairs"]] or None
            common = {"dataset": name, "method": method, "contrast": contrast, "n_train": n,
                      "layers": " ".join(map(str, g["layers"]))}

            def record(study, level, compute):
                """One result row, cached as ``<dataset>__<method>__<study><level>.json``."""
                tag = f"{study}_{level}" if study == "perturbation" else f"{study}{level:g}"
                rows.append(self.cached(f"{key}__{tag}", lambda: {**common, "study": study, "level": level,
                                                                  **compute()}))

            def effect(plan) -> dict:
                (res,) = sweep(self.T, val, plan, [s_eff], batch_size=a.batch_size)
                p = point(s_eff, res)
                return {"effect": sign * (rate(p, contrast) - base), "val_accuracy": p["accuracy"],
                        "effect_strength": s_eff}

            # stability: bootstrap resamples of the train pairs
            for b in range(a.bootstrap):
                def boot(b=b):
                    idx = np.random.default_rng(b).integers(0, n, n).tolist()
                    plan = get_fitter().fit(method, idx, pairs=fixed)
                    row = {"cosine": cosine(plan, clean())}
                    if method in ES_ALIGNMENT:
                        ruled = get_fitter().fit(method, idx)
                        mine, ref = set(pairs_of(ruled)), set(map(tuple, g["pairs"]))
                        row.update(pairs=sorted(mine), pair_jaccard=len(mine & ref) / len(mine | ref),
                                   same_pairs=mine == ref)
                    return row
                record("bootstrap", b, boot)

            # label noise: a seeded share of the pairs swapped
            for frac in a.noise:
                def noisy(frac=frac):
                    rng = np.random.default_rng(1000 + int(round(frac * 100)))
                    flip = np.zeros(n, dtype=bool)
                    flip[rng.choice(n, int(round(frac * n)), replace=False)] = True
                    plan = clean() if frac == 0 else get_fitter().fit(method, range(n), flip.tolist(), pairs=fixed)
                    return {"cosine": cosine(plan, clean()), "flipped": int(flip.sum()), **effect(plan)}
                record("noise", frac, noisy)

            # sample size: seeded subsets of the train pairs
            for size in [s for s in a.sizes if s < n] + [n]:
                def subset(size=size):
                    idx = sorted(np.random.default_rng(2000 + size).choice(n, size, replace=False).tolist())
                    plan = clean() if size == n else get_fitter().fit(method, idx, pairs=fixed)
                    return {"cosine": cosine(plan, clean()), **effect(plan)}
                record("size", size, subset)

            # perturbed test inputs: steered (clean vector, strength chosen on clean validation) vs unsteered
            for kind in ("clean", "typos", "distractor"):
                def perturbed(kind=kind):
                    items = test if kind == "clean" else perturb(test, kind)
                    un = self.cached(f"{name}__unsteered_{kind}", lambda: point(0.0, evaluate(
                        self.T, items, batch_size=a.batch_size)))  # shared by the methods
                    s = g["s_accuracy"]
                    st = point(s, evaluate(self.T, items, plan=clean(), strength=s, batch_size=a.batch_size)) \
                        if s else un
                    return {"strength": s, "n": un["n"], "unsteered": un["accuracy"], "steered": st["accuracy"],
                            "steered_ci": [st["ci_low"], st["ci_high"]], "unsteered_ci": [un["ci_low"], un["ci_high"]]}
                record("perturbation", kind, perturbed)
        return rows


# ---------------------------------------------------------------- report

def summarise(rows: list[dict]) -> list[dict]:
    """One line per (dataset, method): the numbers the reading needs."""
    out = []
    for (ds, m), group in _groups(rows).items():
        boot = [r for r in group if r["study"] == "bootstrap"]
        noise = {r["level"]: r for r in group if r["study"] == "noise"}
        size = {r["level"]: r for r in group if r["study"] == "size"}
        pert = {r["level"]: r for r in group if r["study"] == "perturbation"}
        line = {"dataset": ds, "method": m, "layers": group[0]["layers"], "n_train": group[0]["n_train"]}
        if boot:
            cos = np.array([r["cosine"] for r in boot])
            line.update(boot_cos_median=round(float(np.median(cos)), 3), boot_cos_min=round(float(cos.min()), 3))
            if "same_pairs" in boot[0]:
                line.update(same_pairs=f"{sum(r['same_pairs'] for r in boot)}/{len(boot)}",
                            pair_jaccard=round(float(np.mean([r["pair_jaccard"] for r in boot])), 2))
        for lv in (0.0, 0.2, 0.4):
            if lv in noise:
                line[f"noise{int(lv * 100)}_cos"] = round(noise[lv]["cosine"], 3)
                line[f"noise{int(lv * 100)}_effect"] = round(noise[lv]["effect"], 3)
        if size:
            small = min(size)
            line.update(**{f"n{small}_cos": round(size[small]["cosine"], 3),
                           f"n{small}_effect": round(size[small]["effect"], 3)})
        for kind in ("clean", "typos", "distractor"):
            if kind in pert:
                line[f"{kind}_steered_minus_unsteered"] = round(pert[kind]["steered"] - pert[kind]["unsteered"], 3)
        out.append(line)
    return out


def _groups(rows):
    by: dict = {}
    for r in rows:
        by.setdefault((r["dataset"], r["method"]), []).append(r)
    return by


def plot(rows: list[dict], path: Path) -> None:
    from lens_common import figure, save_figure

    datasets = sorted({r["dataset"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    fig, axes = figure(22, 3.6 * len(datasets), ncols=5, nrows=len(datasets))
    for d, ds in enumerate(datasets):
        ax = axes[d]
        for k, m in enumerate(methods):
            g = [r for r in rows if r["dataset"] == ds and r["method"] == m]
            boot = [r["cosine"] for r in g if r["study"] == "bootstrap"]
            if boot:
                ax[0].scatter([k] * len(boot), boot, s=12, label=m)
            for j, (study, col) in enumerate((("noise", "cosine"), ("noise", "effect"), ("size", "effect"))):
                pts = sorted((r["level"], r[col]) for r in g if r["study"] == study)
                if pts:
                    ax[j + 1].plot(*zip(*pts), marker="o", label=m)
            pert = {r["level"]: r for r in g if r["study"] == "perturbation"}
            kinds = [x for x in ("clean", "typos", "distractor") if x in pert]
            ax[4].plot(range(len(kinds)), [pert[x]["steered"] - pert[x]["unsteered"] for x in kinds], marker="o",
                       label=m)
            ax[4].set_xticks(range(len(kinds)), kinds)
        ax[0].set(title=f"{ds}: bootstrap cosine to full fit", xticks=range(len(methods)))
        ax[0].set_xticklabels([m.replace("expertsteer_", "es_") for m in methods], rotation=20, fontsize=7)
        ax[1].set(title="label noise: cosine to clean", xlabel="share of pairs flipped")
        ax[2].set(title="label noise: validation effect", xlabel="share of pairs flipped")
        ax[3].set(title="sample size: validation effect", xlabel="train pairs", xscale="log")
        ax[4].set(title="test: steered - unsteered accuracy")
        for a_ in ax[1:]:
            a_.axhline(0, color="grey", lw=0.5)
        ax[4].legend(fontsize=7)
    save_figure(fig, path, dpi=90)


def write_outputs(out: Path, rows: list[dict], command: str) -> Path:
    from lens_common import made_by, write_report
    from steer_lens.bench.report import _md_table

    cols = ["dataset", "method", "study", "level", "cosine", "effect", "val_accuracy", "pair_jaccard", "same_pairs",
            "unsteered", "steered", "strength", "n", "layers", "n_train"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: (r["dataset"], r["method"], r["study"], str(r["level"]))))
    write_text(out / "points.csv", buf.getvalue())
    if rows:
        plot(rows, out / "robustness.png")
    summary = summarise(rows)
    cols = list(dict.fromkeys(k for line in summary for k in line))
    md = ["# Robustness and sample selection", "",
          f"{made_by(command)}`analyses/robustness.py`; every number is computed from the cached results in "
          "`cache/`, all points in `points.csv`).",
          "Cosines are signed and averaged over the steered hooks; effect = steered minus unsteered rate of the "
          "contrast's answer on VALIDATION items at the clean vector's strength of largest effect; the "
          "perturbation columns are TEST accuracy differences at the strength of best clean-validation accuracy.",
          "", _md_table(summary, cols), "", "![robustness](robustness.png)"]
    return write_report(out / "README.md", "\n".join(md) + "\n", test_splits={r["dataset"] for r in rows})


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    p.add_argument("--noise", type=float, nargs="+", default=list(NOISE))
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--bootstrap", type=int, default=10)
    p.add_argument("--n-pairs", type=int, default=3, help="ExpertSteer layer pairs (paper: 3)")
    p.add_argument("--limit-train", type=int, default=None, help="default: every train item")
    p.add_argument("--limit-val", type=int, default=60)
    p.add_argument("--limit-test", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "results" / "robustness"))
    p.add_argument("--fast", action="store_true", help="tiny random models, few items")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    if 0.0 not in a.grid or not any(s > 0 for s in a.grid):
        p.error("--grid must contain 0 and at least one positive strength")
    if any(not 0 <= x < 1 for x in a.noise):
        p.error("--noise values are shares of flipped pairs in [0, 1)")
    if a.fast:
        a.datasets = a.datasets if a.datasets != list(DATASETS) else ["sst2", "caa_sycophancy"]
        a.grid, a.noise, a.sizes, a.bootstrap = [0.0, 1.0], [0.0, 0.4], [8], 2
        a.limit_train, a.limit_val, a.limit_test, a.n_pairs = 16, 4, 4, 2
    return a


def main(argv=None) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lens_common import start_run

    a = parse(argv)
    out, command = start_run("robustness", a, argv)

    def all_rows():  # every cached result row (the per-method grids are not rows)
        return [json.loads(f.read_text()) for f in sorted((out / "cache").glob("*/*__*__*.json"))
                if not f.name.endswith("__grid.json") and "__unsteered_" not in f.name]

    if not a.report_only:
        from lens_common import load_models

        target, expert = load_models(a.fast, **({"n_ctx": 4096} if a.fast else {}))
        study = Study(a, target, expert)
        for name in a.datasets:
            study.dataset(name)
            write_outputs(out, all_rows(), command)
    return write_outputs(out, all_rows(), command)


if __name__ == "__main__":
    main()
