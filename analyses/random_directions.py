"""Is a steering row's gain specific to its direction? Many random controls, and where the vector points.

A benchmark row (``analyses/main_results.py``, the library's runner ``steer_lens.bench``) is judged
against ONE random control: a random unit vector at its hooks, norms and strength (seed 0). This script
refits the row's plan exactly as the runner fitted it (``steer_lens.methods.get(method).plan_of``: the
same train items and rules; the refit must land on the row's layers), scores ``--seeds`` more random
directions at the same hooks, norms and strength on the same TEST items, and measures the cosine of the
row's vector with the target's own directions at each steered layer: the label direction (answer 1 minus
answer 0, ``label_caa``'s recipe) and the correct-minus-wrong direction (``caa``'s). A gain that no random
direction reaches, from a vector that points along the target's own label direction, is a calibration
shift along that direction; one with no such cosine would need another explanation.

    python analyses/random_directions.py --dataset sst2 --method expertsteer_autoencoder --seeds 1 2 3 4
    python analyses/random_directions.py --fast --main-out DIR    # tiny models; DIR from main_results --fast

Resumable: each seed's test result is cached under ``<out>/cache/``. Writes ``<out>/README.md`` and
``<out>/points.csv`` from every cached result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lens_common import benchmark, layer_of, made_by, start_run, write_csv, write_report  # noqa: E402
from steer_lens import methods as M  # noqa: E402
from steer_lens.baselines import fit_caa, pooled_activations, random_plan  # noqa: E402
from steer_lens.evaluate import evaluate  # noqa: E402
from steer_lens.io import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _fixed_vectors(name: str) -> bool:
    """A registered method whose plan adds fixed vectors to the target's residual stream (no field, no
    attention heads, not the reverse direction): the methods this script's cosines are defined for."""
    m = M.get(name)
    if isinstance(m, M.ExpertSteerMethod):
        return m.variant.mode == "fixed" and not m.reverse
    return isinstance(m, M.LayerMethod)


METHODS = [m for m in M.available() if _fixed_vectors(m)]
SEED_PREFIX = {"independent": "seed", "rotation": "rotseed"}  # cache file names per random_plan structure


def refit(bench, dataset: str, method: str, row: dict):
    """The row's plan, refitted deterministically as the runner fitted it (same train items and rules)."""
    try:
        return M.get(method).plan_of(bench.context(dataset), row)
    except ValueError as err:
        raise RuntimeError(f"{err} (pass the analyses/main_results.py options the row was made with)") from None


def contrasts_of(ctx) -> dict:
    """The TRAIN contrasts of a run's context: "correct" (right minus wrong) and "label" (1 minus 0)."""
    return {c: ctx.contrast(c) for c in ("correct", "label")}


def own_directions(target, contrasts, layers: list[int]) -> dict[int, dict[str, torch.Tensor]]:
    """The target's label and correct-minus-wrong unit mean-difference directions at ``layers`` (one
    capture per contrast)."""
    out: dict[int, dict[str, torch.Tensor]] = {layer: {} for layer in layers}
    for c in ("label", "correct"):
        acts = pooled_activations(target, *contrasts[c], layers)
        for layer in layers:
            plan = fit_caa(target, *contrasts[c], layer, acts=acts, acts_layers=layers)
            out[layer][c] = next(iter(plan.vectors.values()))
    return out


def cosines(plan, own: dict[int, dict[str, torch.Tensor]]) -> dict[str, dict[str, float]]:
    """Per steered hook: cosine of the plan's vector with the target's own directions at that layer."""
    cos = torch.nn.functional.cosine_similarity
    return {hook: {c: float(cos(v.float().flatten(), d.float().flatten().to(v.device), dim=0))
                   for c, d in own[layer_of(hook)].items()}
            for hook, v in plan.vectors.items()}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="default sst2 (fast: arithmetic_2way)")
    p.add_argument("--method", default="expertsteer_autoencoder", choices=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4],
                   help="random-direction seeds (seed 0 is the benchmark's own control)")
    p.add_argument("--structure", choices=["independent", "rotation"], default="independent",
                   help="random_plan's structure: one random vector per hook (the benchmark's control) or the "
                        "row's vectors under one random rotation (keeps the cosines between hooks)")
    p.add_argument("--main-out", default=None, help="main_results --out of the row (default: results/benchmark)")
    p.add_argument("--out", default=None, help="default results/random_directions")
    p.add_argument("--fast", action="store_true", help="tiny random models (needs a main_results --fast run)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    a.dataset = a.dataset or ("arithmetic_2way" if a.fast else "sst2")
    a.out = a.out or str(ROOT / "results" / "random_directions")
    return a


def main_args(a) -> list[str]:
    """The options of the benchmark run whose row this script reads (``analyses/main_results.py``)."""
    return ["--datasets", a.dataset, *(["--fast"] if a.fast else []), *(["--out", a.main_out] if a.main_out else [])]


def run(a) -> None:
    bench, _ = benchmark(main_args(a))
    row_path = bench.row_path(a.dataset, a.method)
    if not row_path.is_file():
        raise SystemExit(f"no cached {a.method} row for {a.dataset} at {row_path}: run analyses/main_results.py "
                         f"{' '.join(main_args(a))} --methods {a.method} first")
    row = json.loads(row_path.read_text())
    cache = Path(a.out) / "cache"
    prefix = SEED_PREFIX[a.structure]
    todo = [s for s in [0, *a.seeds] if not (cache / f"{a.dataset}__{a.method}__{prefix}{s}.json").is_file()]
    if not todo and (cache / f"{a.dataset}__{a.method}__cosines.json").is_file():
        return
    bench, _ = benchmark(main_args(a), models=True)
    ctx = bench.context(a.dataset)
    plan = refit(bench, a.dataset, a.method, row)
    own = own_directions(bench.target, contrasts_of(ctx), row["layers"])
    cfile = cache / f"{a.dataset}__{a.method}__cosines.json"
    earlier = json.loads(cfile.read_text())["random"] if cfile.is_file() else {}  # a later run's seeds add to them
    cos = {"method": cosines(plan, own),
           "random": {**earlier, **{str(s): cosines(random_plan(plan, seed=s), own) for s in [0, *a.seeds]}}}
    write_json(cfile, cos)
    for s in todo:
        r = evaluate(bench.target, ctx.dataset, split=ctx.test_split, limit=bench.rules.limit_test,
                     plan=random_plan(plan, seed=s, structure=a.structure), strength=row["strength"],
                     batch_size=bench.batch_size)
        write_json(cache / f"{a.dataset}__{a.method}__{prefix}{s}.json",
                   {"seed": s, "strength": row["strength"], "layers": row["layers"], **r.to_dict(),
                    "method_accuracy": row["accuracy"], "method_ids": row["ids"]})


def _line(dataset: str, method: str, structure: str, seeds: list[dict], cos: dict, points: list[dict]) -> str:
    """One table line for a row's random directions of one structure; appends their points."""
    acc = seeds[0]["method_accuracy"]
    rnd = sorted(s["accuracy"] for s in seeds)
    for s in seeds:
        points.append({"dataset": dataset, "method": method, "structure": structure, "seed": s["seed"],
                       "strength": s["strength"], "layers": " ".join(map(str, s["layers"])), "accuracy": s["accuracy"],
                       "ci_low": s["ci_low"], "ci_high": s["ci_high"], "n": s["n"],
                       "same_items": s["ids"] == s["method_ids"]})
    mean = lambda key, d: sum(v[key] for v in d.values()) / len(d)  # noqa: E731 (over steered hooks)
    rcos = max(abs(mean("label", d)) for d in cos["random"].values()) if structure == "independent" else None
    return (f"| {dataset} | {method} | {' '.join(map(str, seeds[0]['layers']))} | {seeds[0]['strength']:g} | "
            f"{acc:.3f} | {structure} | {len(rnd)} | {rnd[0]:.3f} - {rnd[-1]:.3f} | {sum(r >= acc for r in rnd)} | "
            f"{mean('label', cos['method']):+.3f} | {mean('correct', cos['method']):+.3f} | "
            f"{'' if rcos is None else f'{rcos:.3f}'} |")


def report(a, command: str) -> Path:
    """README.md and points.csv from every cached seed and cosine file."""
    cache = Path(a.out) / "cache"
    points, lines = [], []
    for cfile in sorted(cache.glob("*__cosines.json")):
        dataset, method, _ = cfile.name.split("__")
        cos = json.loads(cfile.read_text())
        for structure, prefix in SEED_PREFIX.items():
            seeds = [json.loads(f.read_text()) for f in sorted(cache.glob(f"{dataset}__{method}__{prefix}*.json"))]
            if seeds:
                lines.append(_line(dataset, method, structure, seeds, cos, points))
    write_csv(Path(a.out) / "points.csv", points)
    text = f"""# Random directions: is a row's gain specific to its direction?

{made_by(command)}`analyses/random_directions.py`; every number is computed from `cache/`, all points in
`points.csv`). Each row's plan is refitted as `analyses/main_results.py` fitted it; random unit directions
(seed 0 = main_results' own control, then `--seeds`) sit at its hooks, norms and strength and are scored on
the same TEST items; structure "rotation" = the row's vectors under one random rotation (the cosines
between its hooks kept: the same direction at two layers stays one direction). Cosines are averaged over
the steered hooks: with the target's own label direction (answer 1 minus answer 0) and correct-minus-wrong
direction at the same layers; the last column is the largest |cosine| of an independent random direction
with the label direction.

| dataset | method | target layers | strength | method test acc | control structure | random directions | their test acc (min - max) | random >= method | cos(label dir) | cos(correct dir) | max random cos(label dir) |
|---|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(lines) + "\n"
    return write_report(Path(a.out) / "README.md", text,
                        test_splits={f.name.split("__")[0] for f in cache.glob("*__cosines.json")})


def main(argv=None) -> Path:
    a = parse(argv)
    _, command = start_run("random_directions", a, argv)
    if not a.report_only:
        run(a)
    return report(a, command)


if __name__ == "__main__":
    main()
