"""Does a faster strength search choose as well as the reference search? Per cached row.

For each row file (``results/benchmark/cache/<key>/<dataset>__<method>.json``, whose ``val_curve``
holds the points the reference search scored) the row's method is refitted on TRAIN with the
models and rules of the row's folder (``config.json``), and its validation choice is made again
with ``StrengthSearch(strategy=...)`` (``--strategy``: "flips", the default, or "halving"; the
rules' grid, extension and refinement otherwise).
Reported per row: the reference's chosen validation accuracy and the new search's, in items of the
validation set, the strengths and the candidates chosen; rows that differ by more than one item
are listed. TEST is never read.

Rows that choose nothing (references, random controls, which read their method's strength) are
skipped; for a method whose ``run`` makes several validation choices the first one is compared.

Usage:
  python analyses/selection_equivalence.py ROW.json [ROW.json ...] [--strategy flips] [--out FILE.md] [--threads 1]
  python analyses/selection_equivalence.py --fast   # tiny random models: reference rows are made
                                                     # first (RuleSet.fast()), then compared
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAST_METHODS = ("caa", "label_caa", "expertsteer_label")


class _Chosen(Exception):
    """Raised by the patched ``Context.select`` to stop a method's run after its validation choice."""

    def __init__(self, choice, n_val):
        super().__init__("chosen")
        self.choice, self.n_val = choice, n_val


def validation_choice(method, ctx, strategy: str):
    """The ``Choice`` ``method`` makes on ``ctx``'s validation items under ``strategy`` (its first
    ``ctx.select``), without scoring TEST."""
    from steer_lens.protocol import choose

    def select(model, candidates, *, signed=False, base_method="unsteered", **_):  # its own search, no store
        search = dataclasses.replace(ctx.search(signed), strategy=strategy)
        c = choose(model, ctx.val, candidates, search=search, zero=ctx.val0(model),
                   batch_size=ctx.batch_size)
        raise _Chosen(c, len(ctx.val))

    ctx.select = select
    try:
        method.run(ctx)
    except _Chosen as done:
        return done.choice, done.n_val
    return None, len(ctx.val)  # the method chose nothing on validation


def reference_point(row: dict) -> dict | None:
    """The row's chosen validation point: the point of ``val_curve`` at the row's strength."""
    curve = row.get("val_curve") or []
    at = [p for p in curve if abs(p["strength"] - float(row.get("strength", 0.0))) < 1e-9]
    if at:
        return at[0]
    from steer_lens.protocol import rank

    return max(curve, key=rank) if curve else None


def compare_row(row: dict, ctx, method, strategy: str = "flips") -> dict:
    ref = reference_point(row)
    out = {"dataset": row.get("dataset"), "method": row.get("method"), "n_val": row.get("n_val")}
    if ref is None:
        return {**out, "skipped": "no validation curve (the row chooses nothing)"}
    t0 = time.perf_counter()
    choice, n_val = validation_choice(method, ctx, strategy)
    if choice is None:
        return {**out, "skipped": "the method made no validation choice"}
    n = row.get("n_val") or n_val
    ref_items = round(ref["accuracy"] * n)
    new_items = round(choice.best["accuracy"] * n)
    return {**out, "n_val": n, "reference_strength": ref["strength"], "reference_accuracy": ref["accuracy"],
            "reference_items": ref_items, "strategy": strategy, "new_strength": choice.strength,
            "new_key": str(choice.key), "new_accuracy": choice.best["accuracy"], "new_items": new_items,
            "difference_items": new_items - ref_items, "seconds": round(time.perf_counter() - t0, 1)}


def load_models(config: dict, loader):
    target = loader(config["target"])
    expert = loader(config["expert"]) if config.get("expert") else None
    return target, expert


def run(paths, loader, threads: int = 1, done: dict | None = None, save=None, strategy: str = "flips") -> list[dict]:
    """Compare every row file in ``paths``; ``loader(model_id) -> model``. ``done``: earlier results by
    row file (reused, not recomputed); ``save(results)`` is called after each row (resumable runs)."""
    import torch

    import steer_lens.methods as M
    from steer_lens.data import load_dataset

    torch.set_num_threads(threads)
    models: dict = {}
    results = []
    done = done or {}
    for path in map(Path, paths):
        if str(path) in done:
            results.append(done[str(path)])
            continue
        row = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        if "rules" not in config:
            results.append({"dataset": row.get("dataset"), "method": row.get("method"),
                            "skipped": "its folder holds rows that choose nothing"})
            continue
        rules = M.RuleSet(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["rules"].items()})
        key = (config["target"], config.get("expert"))
        try:
            if key not in models:
                models[key] = load_models(config, loader)
        except Exception as exc:  # a model this machine cannot load: say so, go on
            results.append({"dataset": row.get("dataset"), "method": row.get("method"),
                            "skipped": f"cannot load the models {key}: {exc}"})
            continue
        target, expert = models[key]
        dataset = row.get("dataset") or path.stem.split("__")[0]
        ctx = M.Context(load_dataset(dataset), target, expert, rules)
        results.append({**compare_row(row, ctx, M.get(row["method"]), strategy), "row": str(path)})
        print(json.dumps(results[-1]), flush=True)
        if save is not None:
            save(results)
    return results


def render(results: list[dict], notes: bool = False, strategy: str = "flips") -> str:
    done = [r for r in results if "skipped" not in r]
    within = sum(abs(r["difference_items"]) <= 1 for r in done)
    worst = min((r["difference_items"] for r in done), default=0)
    passed = bool(done) and within >= 0.8 * len(done) and worst >= -3
    lines = [f"# Selection equivalence: the {strategy} search vs the reference search (validation)", "",
             *(["Reading of the numbers and the command that made them: [notes.md](notes.md).", ""] if notes else []),
             f"| dataset | method | n_val | reference (strength, items) | {strategy} (strength, items) | difference |",
             "|---|---|---|---|---|---|"]
    for r in done:
        lines.append(f"| {r['dataset']} | {r['method']} | {r['n_val']} | {r['reference_strength']:g}, "
                     f"{r['reference_items']} | {r['new_strength']:g}, {r['new_items']} | "
                     f"{r['difference_items']:+d} |")
    far = [r for r in done if abs(r["difference_items"]) > 1]
    lines += ["", f"Rows differing by more than one item: {len(far)} of {len(done)}"
              + ("" if not far else ": " + ", ".join(f"{r['dataset']}/{r['method']} ({r['difference_items']:+d})"
                                                   for r in far)), "",
              f"Within one item: {within} of {len(done)}; worst difference: {worst:+d} items. The rule "
              "(within one item on at least 80% of rows, never more than three items worse): "
              + ("met." if passed else "not met."), ""]
    skipped = [r for r in results if "skipped" in r]
    if skipped:
        lines += ["Skipped:", "", *[f"- {r['dataset']}/{r['method']}: {r['skipped']}" for r in skipped], ""]
    return "\n".join(lines)


def fast_rows(folder: Path) -> tuple[list[Path], object]:
    """Reference rows on tiny models (RuleSet.fast()) in a cache-like folder; returns the row
    files and a loader mapping the folder's model names to the tiny models."""
    import steer_lens.methods as M
    from steer_lens.data import load_dataset
    from steer_lens.io import write_json
    from steer_lens.models import load_model
    from steer_lens.testing import make_tiny_pair

    target_dir, expert_dir = make_tiny_pair(folder / "tiny")
    loaded = {"tiny-target": load_model(target_dir), "tiny-expert": load_model(expert_dir)}
    rules = M.RuleSet.fast(limit_val=24, refine_rounds=2)
    config = {"format": 2, "rules": rules.to_dict(), "target": "tiny-target", "expert": "tiny-expert"}
    cache = folder / "cache" / "fast"
    write_json(cache / "config.json", config)
    paths = []
    for method in FAST_METHODS:
        ctx = M.Context(load_dataset("sst2"), loaded["tiny-target"], loaded["tiny-expert"], rules)
        choice, n_val = validation_choice(M.get(method), ctx, "reference")
        row = {"dataset": "sst2", "method": method, "strength": choice.strength, "n_val": n_val,
               "val_curve": choice.curves[choice.key]}
        write_json(cache / f"sst2__{method}.json", row)
        paths.append(cache / f"sst2__{method}.json")
    return paths, loaded.__getitem__


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("rows", nargs="*", help="row JSON files (results/benchmark/cache/<key>/<dataset>__<method>.json)")
    p.add_argument("--fast", action="store_true", help="tiny random models: make reference rows, then compare")
    p.add_argument("--out", default=None, help="write the report (Markdown) here; a .json beside it")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--strategy", choices=("flips", "halving"), default="flips", help="the search compared")
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    if args.fast:
        import torch

        torch.set_num_threads(args.threads)
        paths, loader = fast_rows(Path(tmp.name))
    else:
        if not args.rows:
            p.error("give row files, or --fast")
        from steer_lens.models import load_model

        paths, loader = args.rows, load_model
    done, save = {}, None
    if args.out:
        from steer_lens.io import write_json

        out_json = Path(args.out).with_suffix(".json")
        if out_json.exists():  # resume: rows compared before are kept
            done = {r["row"]: r for r in json.loads(out_json.read_text())
                    if "row" in r and "skipped" not in r and r.get("strategy") == args.strategy}
        save = lambda results: write_json(out_json, results)  # noqa: E731
    results = run(paths, loader, args.threads, done, save, args.strategy)
    text = render(results, notes=bool(args.out) and (Path(args.out).parent / "notes.md").is_file(),
                  strategy=args.strategy)
    print(text)
    if args.out:
        from steer_lens.io import write_text

        write_text(Path(args.out), text)
        save(results)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
