"""Dose-response: what each method does to the target as its strength runs from -2 to 2, on
VALIDATION items, and two positive controls showing the harness can see an effect at all.

Per dataset and method, at every signed strength (× median residual norm at the steered hooks):
accuracy, the share of each answer choice (for two-way sets the share of choice 1, e.g.
"positive" on SST-2), the share of the most common answer, the behaviour probability on A/B
sets, and the target's mean next-token loss on a fixed neutral text (where fluency breaks).
Methods sit at the layers their own train-only rules pick (no validation selection here):
``label_caa`` (answer 1 minus answer 0 on every item, the positive control (a)), ``caa`` and
``self_rfm`` (correct minus wrong), ``expertsteer_autoencoder`` / ``expertsteer_ridge`` (the paper's
lowest-MI pairs) and ``random`` (random unit vectors at expertsteer_autoencoder's hooks and norms).

Positive control (b), ``--topic``: an ActAdd-style topic vector (mean residual of a topic sentence
minus a neutral one) added at all positions must raise the rate of topic words in 50 seeded sampled
continuations monotonically with strength.

Resumable: every (dataset, method, strength) point is cached as JSON under
``results/dose_response/cache/``; a method's missing strengths are scored in one
``steer_lens.sweep`` (the blocks below the steered one run once), then written point by point.
Writes one figure per dataset, ``summary.md`` and ``points.csv``.

    python analyses/dose_response.py --topic                                  # everything (hours)
    python analyses/dose_response.py --datasets sst2 --methods label_caa caa
    python analyses/dose_response.py --fast                                    # tiny models, seconds
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from steer_lens import methods as M
from steer_lens.baselines import choose_layer, fit_caa, fit_self_rfm, pooled_activations, random_plan
from steer_lens.data import contrast_prompts, list_datasets, load_dataset
from steer_lens.io import write_json, write_text
from steer_lens.pipeline import ExpertSteer
from steer_lens.protocol import point
from steer_lens.sweep import sweep
from steer_lens.tokens import batch_encode

log = logging.getLogger("dose_response")
GRID = (-2.0, -1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
METHODS = ["label_caa", "caa", "self_rfm", "expertsteer_autoencoder", "expertsteer_ridge", "random"]
NEEDS_EXPERT = {"expertsteer_autoencoder", "expertsteer_ridge", "random"}
# a fixed, neutral text (written for this analysis) on which fluency is measured
NEUTRAL = ("The water cycle describes how water moves between the oceans, the air and the land. Heat from "
           "the sun evaporates water from the surface of the sea, and the vapour rises until it cools and "
           "condenses into clouds. When the droplets grow heavy enough they fall as rain or snow, which "
           "feeds rivers, lakes and underground stores before the water returns to the sea.")
TOPIC = {"name": "weddings",
         "positive": ["The bride and groom exchanged their wedding vows at the ceremony.",
                      "We are planning our wedding: the dress, the rings and the guest list.",
                      "At the wedding reception the married couple cut the cake.",
                      "She caught the bouquet at her sister's wedding.",
                      "The groom waited at the altar for his bride.",
                      "Their marriage ceremony was followed by a honeymoon in Italy.",
                      "The wedding guests threw rice as the newlyweds left the church.",
                      "He proposed, she said yes, and they set a date for the wedding."],
         "negative": ["The train left the station a few minutes after noon.",
                      "We are planning our budget: the rent, the bills and the groceries.",
                      "At the meeting the committee discussed the new schedule.",
                      "She caught the bus at the corner of the street.",
                      "The clerk waited at the counter for the next customer.",
                      "Their project review was followed by a short break in the office.",
                      "The visitors took photos as the tour group left the museum.",
                      "He called, she answered, and they set a time for the call."],
         "words": ("wedding", "weddings", "bride", "brides", "groom", "grooms", "marriage", "married", "marry",
                   "bridal", "honeymoon", "vows", "ceremony"),
         "prompts": ["I went up to my friend and said", "Yesterday afternoon I", "The best part of the day was",
                     "Let me tell you about", "My favourite thing to do is", "Last weekend we",
                     "The city was quiet when", "She opened the letter and", "Here is what happened:",
                     "In the morning, the family"]}


def neutral_loss(model, text: str = NEUTRAL) -> float:
    """Mean next-token loss (nats/token) of ``model`` on ``text`` (any active steering applies)."""
    batch = batch_encode(model, [text], chat_template=False)
    with torch.no_grad():
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
    lp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    return float(-lp.gather(-1, batch.tokens[0, 1:, None].to(lp.device)).mean())


def fit_method(method: str, target, expert, train) -> object:
    """The method's plan at the layers its own train-only rule picks."""
    by = "label" if method == "label_caa" else "correct"
    pos, neg = contrast_prompts(train, by=by)
    if method in ("label_caa", "caa", "self_rfm"):
        L = target.cfg.n_layers
        layers = list(range(L // 4, 3 * L // 4 + 1))
        acts = pooled_activations(target, pos, neg, layers)
        layer, _ = choose_layer(*acts, layers)
        fit = fit_self_rfm if method == "self_rfm" else fit_caa
        return fit(target, pos, neg, layer, acts=acts, acts_layers=layers)
    m = M.get(method)
    es = m.matched_method if isinstance(m, M.RandomControl) else m  # random: the paper's method's control
    plan = ExpertSteer(n_pairs=2, alignment=es.variant.alignment).fit(expert, target, pos, neg)
    return random_plan(plan, seed=0) if es is not m else plan


class Study:
    def __init__(self, args, target, expert):
        self.a, self.target, self.expert = args, target, expert
        self.out = Path(args.out)
        self.cache = self.out / "cache"
        self.cache.mkdir(parents=True, exist_ok=True)

    def dataset(self, name: str) -> list[dict]:
        a, T = self.a, self.target
        ds = load_dataset(name)
        train = ds.split("train", limit=a.limit_train)
        val = ds.split("validation", limit=a.limit_val)
        rows, plans = [], {}
        for method in a.methods:
            if method == "label_caa" and len({len(it.choices) for it in val}) != 1:
                continue
            paths = {s: self.cache / f"{name}__{method}__{s:+.3f}.json" for s in a.grid}
            todo = [s for s in a.grid if not paths[s].exists()]
            if todo and method not in plans:
                if method == "random" and "expertsteer_autoencoder" in plans:  # its hooks: no second fit
                    plans[method] = random_plan(plans["expertsteer_autoencoder"], seed=0)
                else:
                    plans[method] = fit_method(method, T, self.expert, train)
            # the missing strengths in one sweep (lower blocks once), then one cached JSON per point
            swept = dict(zip(todo, sweep(T, val, plans[method], todo, batch_size=a.batch_size))) if todo else {}
            for s in a.grid:
                path = paths[s]
                if s not in swept:
                    rows.append(json.loads(path.read_text()))
                    continue
                plan, res = plans[method], swept[s]
                with plan.apply(T, s):
                    loss = neutral_loss(T)
                row = {**point(s, res), "dataset": name, "method": method, "neutral_loss": loss,
                       "layers": sorted(int(h.split(".")[1]) for h in plan.vectors),
                       "format": val[0].format, "n_choices": len(val[0].choices), "shared_labels": same_choices(val)}
                write_json(path, row)
                log.info("%s / %s / %+.2f: acc %.3f shares %s loss %.3f", name, method, s, row["accuracy"],
                         [round(x, 2) for x in row["shares"]], loss)
                rows.append(row)
        return rows


def topic_control(model, out: Path, strengths, n_per_prompt: int = 5, layer: int | None = None,
                  max_new_tokens: int = 30) -> dict:
    """Positive control (b): topic-word rate of seeded sampled continuations vs strength. The topic
    vector is the mean residual (over all tokens) of eight wedding sentences minus eight matched
    neutral ones at ``layer`` (default: a third of the depth), added at every position."""
    from steer_lens import generate
    from steer_lens.baselines.common import baseline_plan, hook_norms

    path = out / "cache" / "topic.json"
    if path.exists():
        return json.loads(path.read_text())
    layer = model.cfg.n_layers // 3 if layer is None else layer
    pos = pooled_activations(model, TOPIC["positive"], TOPIC["negative"], [layer], chat_template=False)
    vec = pos[0][:, 0].mean(0) - pos[1][:, 0].mean(0)
    name = f"blocks.{layer}.hook_resid_post"
    norms = hook_norms(model, TOPIC["prompts"], [layer], "resid_post", False)
    plan = baseline_plan(model, {name: vec}, norms, method="topic", settings={"layer": layer})
    prompts = [p for p in TOPIC["prompts"] for _ in range(n_per_prompt)]
    rows = []
    for s in strengths:
        torch.manual_seed(0)
        with plan.apply(model, s):
            texts = generate(model, prompts, max_new_tokens=max_new_tokens, chat_template=False, do_sample=True,
                             temperature=1.0, top_k=50)
            loss = neutral_loss(model)
        hits = [any(w in t.lower().replace(",", " ").replace(".", " ").split() for w in TOPIC["words"])
                for t in texts]
        rows.append({"strength": s, "topic_rate": float(np.mean(hits)), "n": len(texts), "neutral_loss": loss,
                     "example": texts[0]})
        log.info("topic %s strength %.2f: rate %.2f loss %.3f | %s", TOPIC["name"], s, rows[-1]["topic_rate"], loss,
                 texts[0][:80].replace("\n", " "))
    res = {"topic": TOPIC["name"], "layer": layer, "words": TOPIC["words"], "rows": rows,
           "monotonic": bool(all(b["topic_rate"] >= a["topic_rate"] for a, b in zip(rows, rows[1:])))}
    write_json(path, res)
    return res


def topic_reading(topic: dict) -> str:
    """Whether the topic-word rate rises with strength up to its peak, and what happens after it."""
    rows = sorted(topic["rows"], key=lambda r: r["strength"])
    rates = [r["topic_rate"] for r in rows]
    k = max(range(len(rates)), key=lambda i: (rates[i], -i))
    rising = all(b >= a for a, b in zip(rates[: k + 1], rates[1: k + 1]))
    peak, base = rows[k], rows[0]
    text = (f"The rate rises {'monotonically' if rising else 'non-monotonically'} from {base['topic_rate']:.2f} "
            f"(strength {base['strength']:g}) to {peak['topic_rate']:.2f} at strength {peak['strength']:g} "
            f"(neutral-text loss {peak['neutral_loss']:.2f} vs {base['neutral_loss']:.2f} unsteered)")
    after = rows[k + 1:]
    if after:
        losses = ", ".join(f"{r['neutral_loss']:.1f}" for r in after)
        after_rates = ", ".join(f"{r['topic_rate']:.2f}" for r in after)
        text += f"; above it fluency collapses (loss {losses}) and the rate falls to {after_rates}"
    return text + "."


def spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _fluent_range(pts: list[dict], loss0: float) -> str:
    """The strengths (sorted) whose neutral-text loss stays below 1.5x the unsteered loss."""
    ok = [p["strength"] for p in pts if p["neutral_loss"] < 1.5 * loss0]
    return f"[{min(ok):g}, {max(ok):g}]" if ok else ""


def same_choices(items) -> bool:
    """Whether every item offers the same choices (SST-2's "negative"/"positive"): only then is
    "answer 1 minus answer 0" one label direction. Where the choices differ per item (numbers,
    MMLU options) choice 1 is just the second option's text, and positive control (a) does not apply."""
    return len({tuple(it.choices) for it in items}) == 1


@functools.lru_cache(maxsize=None)
def _bundled_same_choices(dataset: str) -> bool:
    return same_choices(load_dataset(dataset).split("validation"))


def shared_labels(point: dict) -> bool:
    """``same_choices`` of a point's validation items (points cached before it was recorded: looked
    up in the bundled dataset)."""
    if "shared_labels" in point:
        return point["shared_labels"]
    return _bundled_same_choices(point["dataset"])


def summarise(rows: list[dict]) -> list[dict]:
    """One line per (dataset, method): the numbers the positive-control questions need."""
    out = []
    by: dict = {}
    for r in rows:
        by.setdefault((r["dataset"], r["method"]), []).append(r)
    for (ds, method), pts in by.items():
        pts = sorted(pts, key=lambda p: p["strength"])
        s = np.array([p["strength"] for p in pts])
        zero = next((p for p in pts if p["strength"] == 0), pts[0])
        share1 = np.array([(p["shares"] + [0, 0])[1] for p in pts])
        loss0 = zero["neutral_loss"]
        line = {"dataset": ds, "method": method, "shared_labels": shared_labels(pts[0]),
                "layers": " ".join(map(str, pts[0]["layers"])),
                "n_choices": pts[0].get("n_choices", len(pts[0]["shares"])),
                "n_val": zero["n"], "acc_at_0": round(zero["accuracy"], 3),
                "best_acc": round(max(p["accuracy"] for p in pts), 3),
                "best_strength": max(pts, key=lambda p: (p["accuracy"], -abs(p["strength"])))["strength"],
                "share1_min": round(float(share1.min()), 2), "share1_max": round(float(share1.max()), 2),
                "share1_spearman": round(spearman(s, share1), 2),
                # monotone (non-decreasing) over the points where the neutral loss is < 1.5x unsteered
                "share1_monotone_fluent": bool(all(b >= a - 1e-9 for a, b in zip(fluent[:-1], fluent[1:])))
                if len(fluent := [x for x, p in zip(share1, pts) if p["neutral_loss"] < 1.5 * zero["neutral_loss"]]) > 1
                else "",
                "fluent_range": _fluent_range(pts, zero["neutral_loss"]),
                "loss_ratio_at_1": round(max(p["neutral_loss"] for p in pts if abs(p["strength"]) == 1) / loss0, 2)
                if any(abs(p["strength"]) == 1 for p in pts) else "",
                "loss_ratio_at_2": round(max(p["neutral_loss"] for p in pts if abs(p["strength"]) == 2) / loss0, 2)
                if any(abs(p["strength"]) == 2 for p in pts) else ""}
        if zero.get("behaviour_prob") is not None:
            # the largest move of P(behaviour) in the strength's sign at |s| <= 1 with loss up < 20%
            ok = [p for p in pts if 0 < abs(p["strength"]) <= 1 and p["neutral_loss"] < 1.2 * loss0]
            moves = [np.sign(p["strength"]) * (p["behaviour_prob"] - zero["behaviour_prob"]) for p in ok]
            line.update(bprob_at_0=round(zero["behaviour_prob"], 3),
                        max_signed_bprob_move=round(float(max(moves)), 3) if moves else "",
                        # either sign (a random direction has no behaviour sign of its own)
                        max_abs_bprob_move=round(float(max(map(abs, moves))), 3) if moves else "",
                        moves_by_0_10=bool(moves and max(moves) >= 0.10))
        out.append(line)
    return out


def plot_dataset(name: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r["method"] for r in rows}, key=lambda m: METHODS.index(m) if m in METHODS else 99)
    ab = rows[0]["format"] == "ab"
    panels = [("accuracy", "validation accuracy"),
              ("behaviour_prob" if ab else "share1", "P(behaviour letter)" if ab else "share of answers = choice 1"),
              ("pred_share", "share of the most common answer"), ("loss_ratio", "neutral-text loss / unsteered")]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for method in methods:
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["strength"])
        loss0 = next((p["neutral_loss"] for p in pts if p["strength"] == 0), pts[0]["neutral_loss"])
        xs = [p["strength"] for p in pts]
        vals = {"accuracy": [p["accuracy"] for p in pts], "pred_share": [p["pred_share"] for p in pts],
                "behaviour_prob": [p.get("behaviour_prob") for p in pts],
                "share1": [(p["shares"] + [0, 0])[1] for p in pts],
                "loss_ratio": [p["neutral_loss"] / loss0 for p in pts]}
        for ax, (key, _) in zip(axes, panels):
            ax.plot(xs, vals[key], marker="o", ms=3, label=method)
    for ax, (key, title) in zip(axes, panels):
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("strength (× median residual norm)")
        ax.set_title(title, fontsize=10)
        ax.axvline(0, color="grey", lw=0.5)
        if key == "loss_ratio":
            ax.axhline(1.2, color="grey", ls="--", lw=0.8)
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{name}: dose-response on validation ({rows[0]['n']} items)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_topic(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    xs = [r["strength"] for r in res["rows"]]
    ax.plot(xs, [r["topic_rate"] for r in res["rows"]], marker="o")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("strength (× median residual norm)")
    ax.set_ylabel(f"share of continuations with a '{res['topic']}' word")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"ActAdd topic vector, layer {res['layer']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, rows: list[dict], topic: dict | None, command: str) -> Path:
    from lens_common import made_by, write_report
    from steer_lens.bench.report import _md_table

    summary = summarise(rows)
    buf = io.StringIO()
    cols = ["dataset", "method", "strength", "accuracy", "pred_share", "behaviour_prob", "neutral_loss", "shares",
            "layers", "n"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: (r["dataset"], r["method"], r["strength"])))
    write_text(out / "points.csv", buf.getvalue())
    for name in sorted({r["dataset"] for r in rows}):
        plot_dataset(name, [r for r in rows if r["dataset"] == name], out / f"{name}.png")
    cols = ["dataset", "method", "shared_labels", "layers", "n_val", "acc_at_0", "best_acc", "best_strength",
            "share1_min",
            "share1_max", "share1_spearman", "share1_monotone_fluent", "fluent_range", "loss_ratio_at_1",
            "loss_ratio_at_2"]
    two_way = [r for r in summary if r["method"] == "label_caa" and r["n_choices"] == 2 and r["shared_labels"]]
    per_item = [r for r in summary if r["method"] == "label_caa" and r["n_choices"] == 2 and not r["shared_labels"]]
    behaviours = [r for r in summary if r["method"] == "caa" and "bprob_at_0" in r]
    md = ["# Dose-response and positive controls", "",
          f"{made_by(command)}`analyses/dose_response.py`; every number is computed from the cached points).",
          "Strength = × the median residual norm at each steered hook; points on VALIDATION items.", ""]
    if two_way:
        ok = [r for r in two_way if r["share1_min"] <= 0.1 and r["share1_max"] >= 0.9 and r["share1_spearman"] >= 0.9]
        ok_fluent = [r for r in two_way if r["share1_min"] <= 0.1 and r["share1_max"] >= 0.9
                     and r["share1_monotone_fluent"] is True]
        md += ["## Positive control (a): label direction moves the answers", "",
               f"A direction fitted by label (choice 1 minus choice 0 on every train item, CAA at the train-chosen "
               f"layer) moves the share of choice-1 answers from near 0 to near 1 on {len(ok)} of {len(two_way)} "
               "two-way sets with Spearman rho >= 0.9 over the whole signed grid, and on "
               f"{len(ok_fluent)} of {len(two_way)} non-decreasingly over the strengths where the model stays "
               "fluent (neutral-text loss < 1.5x unsteered: `fluent_range`). Criterion: min share <= 0.1, "
               "max >= 0.9. The control needs a label shared by every item (the same two choices, e.g. "
               "negative/positive); sets whose choices differ per item are listed apart.", "",
               _md_table(two_way, cols), ""]
    if per_item:
        md += ["Two-way sets whose choices differ per item (choice 1 is only the second option's text, so 'answer 1 "
               "minus answer 0' is no single label direction; the control does not apply):", "",
               _md_table(per_item, cols), ""]
    if topic:
        md += ["## Positive control (b): topic vector in generation", "",
               f"ActAdd-style vector ('{topic['topic']}' sentences minus neutral ones, layer {topic['layer']}), "
               f"{topic['rows'][0]['n']} seeded sampled continuations per strength; rate = share containing a "
               f"topic word. {topic_reading(topic)}", "",
               _md_table([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "example"}
                          for r in topic["rows"]], ["strength", "topic_rate", "n", "neutral_loss"]), "",
               "![topic control](topic.png)", ""]
    if behaviours:
        n_ok = sum(bool(r["moves_by_0_10"]) for r in behaviours)
        md += ["## Does CAA move behaviour?", "",
               f"CAA moves P(behaviour) by at least 0.10 in the sign of the strength, at some |strength| <= 1 "
               f"with neutral-text loss up by less than 20%, on {n_ok} of {len(behaviours)} behaviour sets.", "",
               _md_table(behaviours, ["dataset", "layers", "n_val", "bprob_at_0", "max_signed_bprob_move",
                                      "moves_by_0_10", "loss_ratio_at_1"]), ""]
    others = [r for r in summary if r["method"] != "caa" and "bprob_at_0" in r]
    if others:
        tally = []
        for method in sorted({r["method"] for r in others}, key=lambda m: METHODS.index(m) if m in METHODS else 99):
            mine = [r for r in others if r["method"] == method]
            tally.append({"method": method, "sets": len(mine),
                          "signed_move_ge_0_10": sum(bool(r["moves_by_0_10"]) for r in mine),
                          "any_move_ge_0_10": sum(r["max_abs_bprob_move"] != "" and r["max_abs_bprob_move"] >= 0.10
                                                  for r in mine),
                          "largest_any_move": max((r["max_abs_bprob_move"] for r in mine
                                                   if r["max_abs_bprob_move"] != ""), default="")})
        md += ["## The other methods on the behaviour sets", "",
               "The same criterion (|strength| <= 1, neutral-text loss up < 20%) for every other method on the A/B "
               "behaviour sets: a move of P(behaviour) by >= 0.10 in the strength's sign (RFM directions are "
               "oriented towards the behaviour-matching answers), and in either sign (a random vector's sign "
               "carries no behaviour: its moves are the reference a direction must beat).", "",
               _md_table(tally, list(tally[0])), "",
               _md_table(sorted(others, key=lambda r: (r["dataset"], r["method"])),
                         ["dataset", "method", "layers", "n_val", "bprob_at_0", "max_signed_bprob_move",
                          "max_abs_bprob_move", "moves_by_0_10", "loss_ratio_at_1"]), ""]
    md += ["## Every dataset and method", "", _md_table(summary, cols), ""]
    md += [f"![{n}]({n}.png)" for n in sorted({r["dataset"] for r in rows})]
    return write_report(out / "summary.md", "\n".join(md) + "\n")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=None, help="default: every bundled dataset")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    p.add_argument("--limit-val", type=int, default=60)
    p.add_argument("--limit-train", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--topic", action="store_true", help="also run positive control (b) in generation")
    p.add_argument("--topic-strengths", type=float, nargs="+", default=[0.0, 0.1, 0.25, 0.5, 1.0, 2.0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "results" / "dose_response"))
    p.add_argument("--fast", action="store_true", help="tiny random models, few items and strengths")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    if a.fast:
        a.datasets = a.datasets or ["sst2", "caa_refusal"]
        a.grid, a.limit_val, a.limit_train, a.topic_strengths = [-1.0, 0.0, 1.0], 4, 12, [0.0, 1.0]
    a.datasets = a.datasets or sorted(list_datasets(), key=lambda d: (d.startswith("caa_"), d))
    return a


def main(argv=None) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lens_common import start_run

    a = parse(argv)
    out, command = start_run("dose_response", a, argv)
    if a.report_only:
        rows = [json.loads(f.read_text()) for f in sorted((out / "cache").glob("*__*.json"))]
        topic_path = out / "cache" / "topic.json"
        return write_outputs(out, rows, json.loads(topic_path.read_text()) if topic_path.exists() else None, command)
    from steer_lens.models import load_model

    if a.fast:
        from steer_lens.testing import make_tiny_pair

        t, e = make_tiny_pair(tempfile.mkdtemp(prefix="steer_lens_dose_"), n_ctx=4096)
        target, expert = load_model(t), load_model(e)
    else:
        target = load_model("smollm2-135m-instruct")
        expert = load_model("gemma-3-270m") if NEEDS_EXPERT & set(a.methods) else None
    study = Study(a, target, expert)
    topic = topic_control(target, out, a.topic_strengths, n_per_prompt=1 if a.fast else 5,
                          max_new_tokens=4 if a.fast else 30) if a.topic else None
    if topic:
        plot_topic(topic, out / "topic.png")
    rows = []
    for name in a.datasets:
        rows += study.dataset(name)
        write_outputs(out, [json.loads(f.read_text()) for f in sorted((out / "cache").glob("*__*.json"))], topic,
                      command)
    all_rows = [json.loads(f.read_text()) for f in sorted((out / "cache").glob("*__*.json"))]
    return write_outputs(out, all_rows, topic, command)


if __name__ == "__main__":
    main()
