"""What does a two-way steering row do to the answers? A constant shift, a readout direction, or more?

For a benchmark row of ``analyses/main_results.py`` on a two-way set (refitted as
``analyses/random_directions.py`` refits it), with "margin" = score of choice 1 minus choice 0
(``evaluate``'s length-normalised scores, nats per token):

1. **Shift (TEST, from the cached rows, no model):** steered minus unsteered margin per item: its
   mean, SD and the correlation of steered with unsteered margins; the accuracy of the unsteered
   margins moved by the row's mean shift (a pure constant shift of the same size).
2. **Calibration baseline (zero cost):** the bias fitted on the unsteered VALIDATION margins
   (``steer_lens.baselines.fit_bias``, the same items the row's strength was chosen on), scored once
   on TEST and paired with the row. A row that cannot beat it moves answers, not knowledge.
3. **Readout (VALIDATION):** the gradient of the margin with respect to one vector added at every
   position of each steered hook (``probes.answer_gradient``), averaged over items. For the row's
   vector, the target's own label direction (answer 1 minus answer 0) at the same hooks and random
   directions (same hooks, norms): cosine with that readout, the first-order margin shift it
   predicts at the row's strength, and the measured mean shift at +strength and -strength (a linear
   effect flips sign with the strength; a shift of one sign at both is not along the vector).
4. **Geometry (VALIDATION prompts):** where each of these directions sits in the target's residual
   distribution at the steered hooks (mean direction, variance along it, principal directions, single
   coordinates), to tell a special direction from a typical one; the row's vector split into its largest
   coordinate and the rest, each steered alone (what the residual holds at that coordinate, e.g. a massive
   activation of the attention-sink token).
5. **Components (VALIDATION):** where the margin change enters: a direct logit attribution of each
   item's margin (``probes.margin_components``, per attention head and MLP) with and without the
   steering, for the row's vector at +strength and -strength, the target's label direction and the
   random directions; grouped into the added vectors' direct effect, the final norm's rescaling, the
   attention heads and the MLPs, per layer, and the largest single terms. Needs two-way items whose
   choices differ only in their last token (SST-2 on SmolLM2); otherwise the part records why not.
   The MLP that changes most is then split into its neurons at +strength and -strength.

    python analyses/steering_mechanism.py --dataset sst2 --method expertsteer_autoencoder
    python analyses/steering_mechanism.py --fast --main-out DIR    # tiny models; DIR from main_results --fast

Each row's numbers are cached in ``<out>/cache/``; README.md and points.csv are written from the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import random_directions as rd  # noqa: E402
from lens_common import benchmark, layer_of, made_by, start_run, write_csv, write_report  # noqa: E402
from steer_lens import methods as M  # noqa: E402
from steer_lens.activations import capture  # noqa: E402
from steer_lens.baselines import calibrated, fit_bias, random_plan, signed_margins  # noqa: E402
from steer_lens.evaluate import EvalResult, evaluate  # noqa: E402
from steer_lens.io import write_json  # noqa: E402
from steer_lens.probes import answer_gradient, auroc, margin_components  # noqa: E402
from steer_lens.protocol import paired  # noqa: E402
from steer_lens.stats import bh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
as_result = EvalResult.from_dict  # the EvalResult stored in a benchmark row


def auroc_ci(margins: np.ndarray, answers: np.ndarray, n_boot: int = 1000, seed: int = 0,
             minus: np.ndarray | None = None) -> list[float]:
    """AUROC of the margins for choice 1 (minus that of ``minus``, the same items' other margins: a paired
    difference) and its seeded percentile-bootstrap 95% CI (items resampled)."""
    def stat(i):
        a = auroc(torch.as_tensor(margins[i]), torch.as_tensor(answers[i]))
        return a if minus is None else a - auroc(torch.as_tensor(minus[i]), torch.as_tensor(answers[i]))

    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(answers), len(answers))
        if 0 < answers[i].sum() < len(i):
            boots.append(stat(i))
    return [stat(np.arange(len(answers))), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]


def shift_stats(steered: EvalResult, unsteered: EvalResult, items, control: EvalResult | None = None) -> dict:
    """Per-item margin shift on the same items, what a constant shift of its mean would score, and
    the AUROC of the unsteered, steered and (if given) matched random-control margins."""
    if steered.ids != unsteered.ids:
        raise ValueError("the steered and unsteered rows were scored on different items")
    s, u = signed_margins(steered, items), signed_margins(unsteered, items)
    d = s - u
    answers = np.asarray([{it.id: it.answer for it in items}[i] for i in steered.ids])
    const = float(np.mean((u + d.mean() > 0) == (answers == 1)))
    out = {"mean_shift": float(d.mean()), "sd_shift": float(d.std()),
           "r_steered_unsteered": float(np.corrcoef(s, u)[0, 1]), "constant_shift_accuracy": const,
           "steered_accuracy": steered.accuracy, "unsteered_accuracy": unsteered.accuracy,
           # threshold-free: does steering re-rank the items (knowledge) or only move the threshold (calibration)?
           "auroc_unsteered": auroc_ci(u, answers), "auroc_steered": auroc_ci(s, answers), "auroc_control": None}
    out["auroc_steered_minus_unsteered"] = auroc_ci(s, answers, minus=u)
    if control is not None and control.ids == steered.ids:
        c = signed_margins(control, items)
        out["auroc_control"] = auroc_ci(c, answers)
        out["auroc_steered_minus_control"] = auroc_ci(s, answers, minus=c)
    return out


def readout(target, plan, items, batch_size: int) -> dict[str, torch.Tensor]:
    """Per steered hook: the margin's gradient "n d" (choice 1 minus choice 0, per-token scores)."""
    pairs = [(it.prompt(), c) for it in items for c in it.completions()]
    g = answer_gradient(target, pairs, list(plan.vectors), per_token=True, batch_size=batch_size)
    return {h: v[1::2] - v[0::2] for h, v in g.items()}


def direction_row(name: str, plan, grads, target, val, strength: float, base: np.ndarray, batch_size: int) -> dict:
    """Cosine with the mean readout, predicted and measured validation margin shifts at ±strength."""
    cos, pred = [], torch.zeros(len(val))
    for h, v in plan.vectors.items():
        unit = (v.float() / v.float().norm()).to(grads[h].device)
        cos.append(float(torch.nn.functional.cosine_similarity(unit, grads[h].mean(0), dim=0)))
        pred += (strength * plan.norms[h] * grads[h] @ unit).cpu()
    out = {"direction": name, "cos_readout": float(np.mean(cos)), "predicted_shift": float(pred.mean())}
    for sign, key in ((1, "plus"), (-1, "minus")):
        r = evaluate(target, val, plan=plan, strength=sign * strength, batch_size=batch_size)
        out[f"shift_{key}"] = float((signed_margins(r, val) - base).mean())
        out[f"accuracy_{key}"] = r.accuracy
    return out


def run(a) -> None:
    bench, _ = benchmark(rd.main_args(a))
    paths = {m: bench.row_path(a.dataset, m) for m in (a.method, "unsteered")}
    for m, p in paths.items():
        if not p.is_file():
            raise SystemExit(f"no cached {m} row for {a.dataset} at {p}: run analyses/main_results.py "
                             f"{' '.join(rd.main_args(a))} --methods {m} first")
    tag = "" if a.strength is None else f"__s{a.strength:g}"
    out = Path(a.out) / "cache" / f"{a.dataset}__{a.method}{tag}.json"
    res = json.loads(out.read_text()) if out.is_file() else {}
    row, unsteered = (json.loads(p.read_text()) for p in paths.values())
    _, ds = bench.dataset(a.dataset)
    val = ds.split("validation", limit=bench.rules.limit_val)
    ctrl_path = bench.row_path(a.dataset, M.control_of(a.method))
    control = as_result(json.loads(ctrl_path.read_text())) if ctrl_path.is_file() else None
    if "auroc_steered_minus_unsteered" not in res.get("test_shift", {"auroc_steered_minus_unsteered": 0}):  # cheap
        res["test_shift"] = shift_stats(as_result(row), as_result(unsteered), ds.split("test"), control)
    if all(k in res for k in PARTS):  # older cache files gain only what they lack
        write_json(out, res)
        return
    bench, _ = benchmark(rd.main_args(a), models=True)
    target, batch_size = bench.target, bench.batch_size
    plan = rd.refit(bench, a.dataset, a.method, row)
    own = rd.own_directions(target, rd.contrasts_of(bench.context(a.dataset)), row["layers"])
    label = dataclasses.replace(plan, vectors={h: own[layer_of(h)]["label"] for h in plan.vectors})
    plans = [(a.method, plan), ("target label direction", label)] + [(f"random seed {s}", random_plan(plan, seed=s))
                                                                      for s in a.seeds]
    if "readout" not in res:
        test = ds.split("test")
        strength = row["strength"] if a.strength is None else a.strength
        res = {"dataset": a.dataset, "method": a.method, "strength": row["strength"], "readout_strength": strength,
               "layers": row["layers"], "choices": list(val[0].choices), "n_val": len(val)}
        res["test_shift"] = shift_stats(as_result(row), as_result(unsteered), test, control)
        u_val = evaluate(target, val, batch_size=batch_size)
        base = signed_margins(u_val, val)
        bias = fit_bias(base, [it.answer for it in val])
        cal_val, cal = calibrated(u_val, val, bias), calibrated(as_result(unsteered), test, bias)
        res["calibration"] = {"bias": bias, "val_accuracy": cal_val.accuracy, "unsteered_val_accuracy": u_val.accuracy,
                              "accuracy": cal.accuracy, "ci_low": cal.ci_low, "ci_high": cal.ci_high,
                              "row_minus_calibration": paired(as_result(row), cal)}
        grads = readout(target, plan, val, batch_size)
        res["readout"] = [direction_row(n, p, grads, target, val, strength, base, batch_size) for n, p in plans]
        res["readout_norm"] = {h: float(g.mean(0).norm()) for h, g in grads.items()}
    if "geometry" not in res or "coordinate" not in res:
        resid, first = residuals(target, val, row["layers"], batch_size)
    if "geometry" not in res:
        res["geometry"] = [{"direction": n, **geometry(p, resid)} for n, p in plans]
    if "coordinate" not in res:
        strength = res["readout_strength"]
        base = signed_margins(evaluate(target, val, batch_size=batch_size), val)
        grads = readout(target, plan, val, batch_size)
        top, rest, info = split_top_coordinate(plan, resid, first)
        res["coordinate"] = {"hooks": info, "readout": [
            direction_row(n, p, grads, target, val, strength, base, batch_size)
            for n, p in ((f"{a.method}: its largest coordinate only", top),
                         (f"{a.method}: without its largest coordinate", rest))]}
    if "components" not in res:
        res["components"] = components_part(target, val, plans, res["readout_strength"], batch_size)
    if "neurons" not in res:
        res["neurons"] = neurons_part(target, val, plan, res["readout_strength"], res["components"], batch_size)
    write_json(out, res)


PARTS = ("readout", "geometry", "coordinate", "components", "neurons")


def neurons_part(target, items, plan, strength: float, components: dict, batch_size: int, top: int = 8) -> dict:
    """The MLP whose output changes most under the row's vector (components part, +strength) split into
    its neurons at +strength and -strength: how many neurons carry half of the change, and the largest."""
    if "runs" not in components:
        return {"skipped": components.get("skipped", "no components part")}
    layer = max(components["runs"][0]["per_layer"], key=lambda x: abs(x["mlp"]))["layer"]
    change, base = {}, margin_components(target, items, neurons=[layer], batch_size=batch_size)
    for s in (strength, -strength):
        att = margin_components(target, items, plan=plan, strength=s, neurons=[layer], clean=base,
                                batch_size=batch_size)
        cols = [k for k, t in enumerate(att.terms) if t.startswith(f"blocks.{layer}.mlp.n")]
        change[s] = att.delta[:, cols].double().mean(0)
    plus, minus = change[strength], change[-strength]
    mag = plus.abs().sort(descending=True).values
    half = int((mag.cumsum(0) < 0.5 * mag.sum()).sum()) + 1
    order = plus.abs().argsort(descending=True)[:top].tolist()
    return {"layer": layer, "n_neurons": len(plus), "change_plus": float(plus.sum()), "change_minus": float(minus.sum()),
            "neurons_for_half": half, "top": [{"neuron": i, "plus": float(plus[i]), "minus": float(minus[i])}
                                              for i in order]}


def components_part(target, items, plans, strength: float, batch_size: int, top: int = 6) -> dict:
    """Direct logit attribution of the mean margin change of each plan at +strength (and of the first,
    the row's, at -strength too): grouped terms, per-layer attention and MLP, the largest single terms
    and how consistently their sign holds over the items."""
    try:  # the unsteered split once, shared by every plan
        base = margin_components(target, items, heads=True, batch_size=batch_size)
    except ValueError as err:  # e.g. choices of several tokens (checked before any forward): no exact split
        return {"skipped": str(err)}
    runs = [(n, p, strength) for n, p in plans] + [(f"{plans[0][0]} at -strength", plans[0][1], -strength)]
    out = []
    for name, plan, s in runs:
        att = margin_components(target, items, plan=plan, strength=s, heads=True, clean=base, batch_size=batch_size)
        d = att.delta.double()
        col = {t: k for k, t in enumerate(att.terms)}

        def group(pred) -> float:
            return float(d[:, [k for t, k in col.items() if pred(t)]].sum(1).mean())

        per_layer = [{"layer": layer, "attention": group(lambda t: t.startswith(f"blocks.{layer}.attn")),
                      "mlp": group(lambda t: t == f"blocks.{layer}.mlp")} for layer in range(target.cfg.n_layers)]
        mean = d.mean(0)
        largest = sorted(range(len(att.terms)), key=lambda k: -abs(float(mean[k])))[:top]
        out.append({"direction": name, "strength": s, "n": len(items),
                    "margin_change": float((att.margin_steered - att.margin_clean).mean()),
                    "direct": group(lambda t: t == "steering"), "final_norm": group(lambda t: t == "final_norm_scale"),
                    "attention": group(lambda t: ".attn." in t), "mlp": group(lambda t: t.endswith(".mlp")),
                    "per_layer": per_layer,
                    "largest": [{"term": att.terms[k], "mean": float(mean[k]),
                                 "same_sign": float((torch.sign(d[:, k]) == torch.sign(mean[k])).double().mean())}
                                for k in largest]})
    return {"runs": out}


def split_top_coordinate(plan, resid: dict[int, torch.Tensor], first: dict[int, torch.Tensor]):
    """The plan's steering split at each hook into its largest coordinate k and the rest (each keeps its
    exact share of the added vector: unit direction, norm scaled by the share's length), and what the
    target's residual holds at k: mean |value| on the first (attention-sink) token and on the others."""
    top, rest, tnorm, rnorm, info = {}, {}, {}, {}, {}
    for h, v in plan.vectors.items():
        u = v.float() / v.float().norm()
        k = int(torch.argmax(u ** 2))
        e = torch.zeros_like(u)
        e[k] = 1.0 if u[k] > 0 else -1.0
        r = u.clone()
        r[k] = 0.0
        top[h], rest[h] = e, r / r.norm()
        tnorm[h], rnorm[h] = plan.norms[h] * float(u[k].abs()), plan.norms[h] * float(r.norm())
        layer = layer_of(h)
        x0, x = first[layer][:, k].abs(), resid[layer][:, k].abs()
        info[h] = {"coordinate": k, "share": float(u[k] ** 2), "sink_mean_abs": float(x0.mean()),
                   "other_mean_abs": float(x.mean()), "other_median_abs_all_coords": float(resid[layer].abs().median()),
                   "sink_rank": int((first[layer].abs().mean(0) > x0.mean()).sum()) + 1}
    return (dataclasses.replace(plan, vectors=top, norms=tnorm), dataclasses.replace(plan, vectors=rest, norms=rnorm),
            info)


def residuals(target, items, layers: list[int], batch_size: int) -> tuple[dict, dict]:
    """Per layer: the residual "tokens d" (resid_post) of every real token of the items' prompts but
    the first, and of the first tokens "n d" apart (the attention sink, whose massive activations
    would dominate the statistics)."""
    cap = capture(target, [it.prompt() for it in items], layers=layers, position="all", batch_size=batch_size)
    mask = cap.mask.clone()
    mask[:, 0] = False
    return ({layer: cap.tensor[:, i][mask] for i, layer in enumerate(layers)},
            {layer: cap.tensor[:, i, 0] for i, layer in enumerate(layers)})


def geometry(plan, resid: dict[int, torch.Tensor]) -> dict:
    """Where a plan's unit vectors sit in the residual distribution (means over its hooks): cosine with
    the mean residual, residual variance along it relative to an isotropic direction (1 = typical),
    its energy share in the top-10 principal directions, and its largest single-coordinate share."""
    stats = []
    for h, v in plan.vectors.items():
        x = resid[layer_of(h)].double()
        u = (v.double() / v.double().norm()).to(x.device)
        mu, cov = x.mean(0), torch.cov(x.T)
        _, vecs = torch.linalg.eigh(cov)
        stats.append([float(torch.nn.functional.cosine_similarity(u, mu, dim=0)),
                      float(u @ cov @ u / (cov.trace() / cov.shape[0])),
                      float(((vecs[:, -10:].T @ u) ** 2).sum()), float((u ** 2).max())])
    cos_mean, var_ratio, pc10, top_coord = np.mean(stats, axis=0)
    return {"cos_mean_resid": cos_mean, "variance_ratio": var_ratio, "top10_pc_share": pc10,
            "top_coordinate_share": top_coord}


def _ci(v, sign: str = "") -> str:
    return "" if not v else f"{v[0]:{sign}.3f} [{v[1]:{sign}.3f}, {v[2]:{sign}.3f}]"


def report(a, command: str) -> Path:
    """README.md and points.csv from every cached row."""
    cache = Path(a.out) / "cache"
    shift_lines, read_lines, geo_lines, coord_lines, points = [], [], [], [], []
    comp_lines, layer_lines, neuron_lines = [], [], []
    rows = [json.loads(f.read_text()) for f in sorted(cache.glob("*.json"))]
    # the table's row - calibration tests are one family: Benjamini-Hochberg over them
    adjusted = bh([r["calibration"]["row_minus_calibration"]["mcnemar_p"] for r in rows])
    for r, p_bh in zip(rows, adjusted):
        t, c = r["test_shift"], r["calibration"]
        pc = c["row_minus_calibration"]
        head = f"| {r['dataset']} | {r['method']} | {' '.join(map(str, r['layers']))} | {r['strength']:g} |"
        shift_lines.append(
            f"{head} {t['unsteered_accuracy']:.3f} | {t['steered_accuracy']:.3f} | {t['mean_shift']:+.3f} | "
            f"{t['sd_shift']:.3f} | {t['r_steered_unsteered']:.3f} | {t['constant_shift_accuracy']:.3f} | "
            f"{_ci(t.get('auroc_unsteered'))} | {_ci(t.get('auroc_steered'))} | {_ci(t.get('auroc_control'))} | "
            f"{_ci(t.get('auroc_steered_minus_unsteered'), '+')} | {_ci(t.get('auroc_steered_minus_control'), '+')} | "
            f"{c['bias']:+.3f} | {c['val_accuracy']:.2f} | {c['accuracy']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}] | "
            f"{pc['diff']:+.3f} [{pc['ci_low']:+.3f}, {pc['ci_high']:+.3f}], p = {pc['mcnemar_p']:.2g}, "
            f"BH {p_bh:.2g} |")
        for d in r["readout"]:
            read_lines.append(f"{head} {r['readout_strength']:g} | {d['direction']} | {d['cos_readout']:+.3f} | "
                              f"{d['predicted_shift']:+.3f} | "
                              f"{d['shift_plus']:+.3f} | {d['shift_minus']:+.3f} | {d['accuracy_plus']:.2f} | "
                              f"{d['accuracy_minus']:.2f} |")
            points.append({"dataset": r["dataset"], "method": r["method"], "strength": r["strength"],
                           "readout_strength": r["readout_strength"], **d})
        for d in r.get("coordinate", {}).get("readout", []):
            read_lines.append(f"{head} {r['readout_strength']:g} | {d['direction']} | {d['cos_readout']:+.3f} | "
                              f"{d['predicted_shift']:+.3f} | {d['shift_plus']:+.3f} | {d['shift_minus']:+.3f} | "
                              f"{d['accuracy_plus']:.2f} | {d['accuracy_minus']:.2f} |")
        for hook, c in r.get("coordinate", {}).get("hooks", {}).items():
            coord_lines.append(f"{head} {hook} | {c['coordinate']} | {c['share']:.3f} | {c['sink_mean_abs']:.2f} | "
                               f"{c['sink_rank']} | {c['other_mean_abs']:.2f} | {c['other_median_abs_all_coords']:.2f} |")
        comp = r.get("components", {})
        if "skipped" in comp:
            comp_lines.append(f"{head} (not split: {comp['skipped'].split(';')[0]}) | | | | | | | |")
        for c in comp.get("runs", []):
            big = "; ".join(f"{t['term'].replace('blocks.', 'L')} {t['mean']:+.3f} ({t['same_sign']:.0%})"
                            for t in c["largest"])
            comp_lines.append(f"{head} {c['direction']} | {c['strength']:+g} | {c['margin_change']:+.3f} | "
                              f"{c['direct']:+.3f} | {c['final_norm']:+.3f} | {c['attention']:+.3f} | {c['mlp']:+.3f} | "
                              f"{big} |")
            first = min(r["layers"])
            if c is comp["runs"][0]:  # the row's own vector at +strength: where, layer by layer
                layer_lines += [f"{head} {x['layer']} | {x['attention']:+.3f} | {x['mlp']:+.3f} |"
                                for x in c["per_layer"] if x["layer"] >= first]
        nr = r.get("neurons", {})
        if "layer" in nr:
            big = "; ".join(f"n{t['neuron']} {t['plus']:+.3f} / {t['minus']:+.3f}" for t in nr["top"])
            neuron_lines.append(f"{head} {nr['layer']} | {nr['change_plus']:+.3f} | {nr['change_minus']:+.3f} | "
                                f"{nr['neurons_for_half']} of {nr['n_neurons']} | {big} |")
        for g in r.get("geometry", []):
            geo_lines.append(f"{head} {g['direction']} | {g['cos_mean_resid']:+.3f} | {g['variance_ratio']:.2f} | "
                             f"{g['top10_pc_share']:.3f} | {g['top_coordinate_share']:.3f} |")
    write_csv(Path(a.out) / "points.csv", points)
    text = f"""# Steering mechanism: constant shift, readout direction, calibration baseline

{made_by(command)}`analyses/steering_mechanism.py`; every number is computed from `cache/`, the readout
rows in `points.csv`). Margin = score of choice 1 minus choice 0 (nats per completion token). Method and
the choice of rows: the script's docstring.

## What steering does to the TEST margins, and the zero-cost calibration baseline

Shift = steered minus unsteered margin per test item; "constant shift" = accuracy of the unsteered margins
all moved by the mean shift; AUROC = how well the margins rank choice-1 items above choice-0 items
(threshold-free: a pure calibration shift leaves it unchanged, added item knowledge raises it; the
method's matched random control shows how much any perturbation of that size re-ranks the items);
calibration = unsteered margins plus a bias fitted on the unsteered validation margins (the items the
row's strength was chosen on), scored once on test; last column: row minus calibration on the same items
(bootstrap 95% CI, exact McNemar p uncorrected, and Benjamini-Hochberg adjusted over this table's rows).

| dataset | method | target layers | strength | unsteered | steered | mean shift | SD of shift | r(steered, unsteered) | constant shift | AUROC unsteered | AUROC steered | AUROC random control | AUROC steered - unsteered (paired) | AUROC steered - control (paired) | calibration bias | calibration val | calibration test [95% CI] | row - calibration |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(shift_lines) + """

## Along which direction? Readout gradient on the validation items

Readout = mean over validation items of the margin's gradient with respect to one vector added at every
position of the hook (averaged over the row's hooks). Predicted = first-order margin shift at the readout
strength (the row's unless `--strength` says otherwise); measured = mean margin shift at +strength and at
-strength; accuracy at both.

| dataset | method | target layers | strength | readout strength | direction | cos(readout) | predicted shift | shift at +s | shift at -s | accuracy at +s | accuracy at -s |
|---|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(read_lines) + """

## Where the vectors sit in the target's residual distribution (validation prompts)

Over every prompt token but the first (the attention sink) at the steered hooks, averaged over hooks:
cosine with the mean residual; residual variance along the direction relative to the average direction
(1 = typical; an isotropic random direction is near 1); its energy share in the top-10 principal
directions (random: about 10/d); its largest single-coordinate share (random: a few / d).

| dataset | method | target layers | strength | direction | cos(mean residual) | variance ratio | top-10 PC share | largest coordinate share |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(geo_lines) + """

## The vector's largest coordinate

Per steered hook: the coordinate carrying most of the vector's energy (its share of the squared unit
vector), the target's mean |residual| there on the first (attention-sink) token and that token's rank among
all coordinates (1 = its largest), and on the other tokens, against the median |residual| of any coordinate.
The readout table above has the row's steering split into that coordinate alone and everything else (each
with its exact share of the added vector).

| dataset | method | target layers | strength | hook | coordinate | share | sink-token mean abs | rank on sink token | other tokens mean abs | median abs (all coordinates) |
|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(coord_lines) + """

## Where the margin change enters: direct logit attribution (validation items)

Each item's margin (logit of choice 1 minus choice 0 where the answer token is predicted; the same
difference as the scores above when the choices are one token each) split exactly into the embeddings,
every attention head and MLP, the added vectors themselves and the final norm's rescaling
(`steer_lens.probes.margin_components`); steered minus unsteered, mean over the validation items. "direct" =
the added vectors read straight through the unembedding; "attention"/"MLP" = the summed change of every
head's/MLP's output (all layers; those below the first steered layer cannot change); largest terms: mean
change and the share of items where it has that sign (L18.attn.head3 = block 18's head 3).

| dataset | method | target layers | strength | direction | steering strength | margin change | direct | final-norm rescaling | attention | MLP | largest terms |
|---|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(comp_lines) + """

Per layer, for the row's own vector at +strength (layers from the first steered one):

| dataset | method | target layers | strength | layer | attention change | MLP change |
|---|---|---|---|---|---|---|
""" + "\n".join(layer_lines) + """

The MLP whose output changes most under the row's vector, split into its neurons (activation x output row, read
through the unembedding as above), at +strength and -strength: the summed change, how many neurons carry half of
the summed |change|, and the largest neurons (change at +s / at -s; the same sign at both = an even response).

| dataset | method | target layers | strength | MLP layer | change at +s | change at -s | neurons for half | largest neurons (+s / -s) |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(neuron_lines) + "\n"
    return write_report(Path(a.out) / "README.md", text, test_splits={r["dataset"] for r in rows})


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="a two-way set (default sst2; fast: arithmetic_2way)")
    p.add_argument("--method", default="expertsteer_autoencoder", choices=rd.METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="random directions for the readout table")
    p.add_argument("--strength", type=float, default=None,
                   help="strength of the readout table (default: the row's chosen strength)")
    p.add_argument("--main-out", default=None, help="main_results --out of the row (default: results/benchmark)")
    p.add_argument("--out", default=None, help="default results/steering_mechanism")
    p.add_argument("--fast", action="store_true", help="tiny random models (needs a main_results --fast run)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    a.dataset = a.dataset or ("arithmetic_2way" if a.fast else "sst2")
    a.out = a.out or str(ROOT / "results" / "steering_mechanism")
    return a


def main(argv=None) -> Path:
    a = parse(argv)
    _, command = start_run("steering_mechanism", a, argv)
    if not a.report_only:
        run(a)
    return report(a, command)


if __name__ == "__main__":
    main()
