"""``steer-lens bench``: models x datasets x methods, resumable, with the CSV and the report.

    steer-lens bench --datasets sst2 --methods expertsteer_label random_label calibration \\
        --expert gemma-3-270m --target smollm2-135m-instruct --out results/sst2
    steer-lens bench --fast                      # tiny random models, seconds
    steer-lens bench --list                      # every registered method with its docstring
    steer-lens bench ... --shard 3/8             # the 4th of 8 deterministic parts (a job array)
    steer-lens bench ... --report-only           # rewrite the report from the cache, no models
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from .. import methods as M
from ..data import COMPACT_DATASETS, list_datasets
from .cache import model_id
from .runner import Bench

TARGET, EXPERT = "smollm2-135m-instruct", "gemma-3-270m"
# the comparison every dataset gets first, then the ablations (each with its random control)
CORE = ["unsteered", "expert_unsteered", "calibration", "label_caa", "expertsteer_label", "caa", "self_rfm",
        M.PAPER]
ABLATIONS = ["iti", "pca", "expertsteer_ridge", "expertsteer_procrustes", "expertsteer_highest_mi",
             "expertsteer_label_lowest_mi", "expertsteer_ridge_field", "expertsteer_label_field"]
EXTRA = ["expertsteer_hybrid"]  # not in the default list (compute); name it in --methods
REVERSE = ["reverse_expertsteer_autoencoder"]


def suites() -> dict[str, list[str]]:
    return {"core": M.with_controls(CORE), "ablations": M.with_controls(ABLATIONS), "extra": M.with_controls(EXTRA),
            "reverse": M.with_controls(REVERSE)}


def default_datasets() -> list[str]:
    """Every bundled dataset, behaviours last."""
    return sorted(list_datasets(), key=lambda d: (d.startswith("caa_"), d))


def shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= I < N")
    return i, n


def add_bench_args(p: argparse.ArgumentParser, *, out_default: str | None = "bench-results",
                   search_default: str | None = None) -> None:
    """The runner's options (shared by ``steer-lens bench`` and ``analyses/main_results.py``).
    ``search_default``: the validation search when ``--search`` is not given (None: the rule set's
    default, "flips"; ``analyses/main_results.py`` keeps "reference", the search its committed rows
    were made under)."""
    default = M.RuleSet()
    search_default = search_default or default.strategy
    p.add_argument("--datasets", nargs="+", default=None,
                   help="bundled names, dataset folders or JSONL files (default: every bundled dataset)")
    p.add_argument("--compact", action="store_true", help=f"one dataset per domain: {' '.join(COMPACT_DATASETS)}")
    p.add_argument("--methods", nargs="+", default=None,
                   help="registered method names (default: the core methods and the ablations, each with its "
                        "random control; see --list)")
    p.add_argument("--list", action="store_true", help="list the registered methods with their docstrings")
    p.add_argument("--target", default=TARGET, help="target model: registry name or local HF folder")
    p.add_argument("--expert", default=EXPERT, help="expert model: registry name or local HF folder "
                   "(e.g. a tuned expert from `steer-lens finetune`)")
    p.add_argument("--reverse", nargs="*", default=None,
                   help="datasets for the reverse direction (the target steers the expert); bare flag: the first dataset")
    p.add_argument("--out", default=out_default, help="report folder (CSV, README, items.json)")
    p.add_argument("--cache", default=None, help="row cache root (default <out>/cache)")
    p.add_argument("--shard", type=shard, default=None, metavar="I/N",
                   help="run only the I-th of N deterministic parts of the rows (0 <= I < N), into the shared cache")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from cached rows, no models")
    p.add_argument("--fast", action="store_true", help="tiny random models and a few items (seconds)")
    g = p.add_argument_group("rules (hashed into every row's cache key)")
    g.add_argument("--limit-test", type=int, default=None, help=f"test items (default {default.limit_test})")
    g.add_argument("--limit-val", type=int, default=None, help=f"validation items (default {default.limit_val})")
    g.add_argument("--limit-train", type=int, default=None, help=f"train items (default {default.limit_train})")
    g.add_argument("--strengths", type=float, nargs="+", default=None,
                   help=f"coarse grid of nonzero strengths, x median residual norm (default "
                        f"{' '.join(map(str, default.grid))}); 0 = no steering is always a candidate")
    g.add_argument("--refine-rounds", type=int, default=None, help=f"default {default.refine_rounds}")
    g.add_argument("--pair-shortlist", type=int, default=None,
                   help=f"expert layers shortlisted on train for the validation pair rule (default {default.pair_shortlist})")
    g.add_argument("--layer-shortlist", type=int, default=None,
                   help=f"CAA-like methods: target layers shortlisted on train (default {default.layer_shortlist})")
    g.add_argument("--n-pairs", type=int, default=None, help=f"MI-rule layer pairs (default {default.n_pairs})")
    g.add_argument("--iti-heads", type=int, default=None, help=f"default {default.iti_heads}")
    g.add_argument("--ae-epochs", type=int, default=None, help=f"hybrid aligner epochs (default {default.ae_epochs})")
    g.add_argument("--expert-layers", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                   help="validation pair rule: shortlist expert layers FIRST..LAST (default: the middle half)")
    g.add_argument("--search", choices=("flips", "reference", "halving"), default=search_default,
                   help=f"validation search (default {search_default}): flips (the reference's points, each run only "
                        "on the items whose answer is not yet known), reference (every point on every item) or "
                        "halving (screens on a quarter of the items); steer_lens.protocol")
    g.add_argument("--extend-flat", action="store_true",
                   help="strength search: also try larger strengths while no strength has changed the answers")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N, mps, auto")
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    p.add_argument("--device-map", default=None, help="accelerate placement for models larger than one GPU")


def rules_of(a) -> M.RuleSet:
    """The rule set the options describe."""
    base = M.RuleSet.fast() if a.fast else M.RuleSet()
    changes = {k: v for k, v in {
        "limit_test": a.limit_test, "limit_val": a.limit_val, "limit_train": a.limit_train,
        "grid": tuple(a.strengths) if a.strengths else None, "refine_rounds": a.refine_rounds,
        "pair_shortlist": a.pair_shortlist, "layer_shortlist": a.layer_shortlist, "n_pairs": a.n_pairs,
        "iti_heads": a.iti_heads, "ae_epochs": a.ae_epochs,
        "expert_layers": tuple(a.expert_layers) if a.expert_layers else None}.items() if v is not None}
    if a.extend_flat:
        changes["extend_flat"] = True
    if a.search:
        changes["strategy"] = a.search
    return base.replace(**changes)


def finish_args(a) -> None:
    """Fill the defaults that depend on other options; reject unknown methods."""
    s = suites()
    a.methods = a.methods or s["core"] + s["ablations"]
    known = set(M.available())
    unknown = [m for m in a.methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {' '.join(unknown)}; registered: {' '.join(M.available())}")
    if a.fast:
        a.datasets = a.datasets or ["arithmetic_2way"]
    a.datasets = a.datasets or (list(COMPACT_DATASETS) if a.compact else default_datasets())
    a.reverse = [] if a.reverse is None else (a.reverse or a.datasets[:1])
    a.cache = a.cache or str(Path(a.out) / "cache")
    a.rules = rules_of(a)


def load_models(a):
    """(target, expert, target_id, expert_id); ``--fast``: a tiny random pair."""
    from ..models import load_model

    kw = dict(device=a.device, dtype=a.dtype, device_map=a.device_map)
    if a.fast:
        from ..testing import make_tiny_pair

        t, e = make_tiny_pair(tempfile.mkdtemp(prefix="steer_lens_fast_"))
        expert = e if a.expert == EXPERT else a.expert
        return (load_model(t, **kw), load_model(expert, **kw), "tiny-target",
                "tiny-expert" if a.expert == EXPERT else model_id(a.expert))
    return load_model(a.target, **kw), load_model(a.expert, **kw), model_id(a.target), model_id(a.expert)


def ids_of(a) -> tuple[str, str]:
    if a.fast:
        return "tiny-target", "tiny-expert" if a.expert == EXPERT else model_id(a.expert)
    return model_id(a.target), model_id(a.expert)


def plan_of_run(a) -> list[tuple[list, list[str]]]:
    """(datasets, methods) in run order: the core comparison on every dataset first (a run cut short
    still covers every dataset), then the ablations, the reverse direction and the rest."""
    s = suites()
    chosen = list(a.methods)
    order = [(a.datasets, [m for m in s["core"] if m in chosen]),
             (a.datasets, [m for m in s["ablations"] if m in chosen])]
    if a.reverse:
        order.append((a.reverse, s["reverse"]))
    rest = [m for m in chosen if m not in s["core"] + s["ablations"]]
    order.append((a.datasets, rest))
    return [(d, m) for d, m in order if d and m]


def write_report(a, bench: Bench, command: str) -> Path:
    from .report import write_report as write

    own_cache = Path(a.cache).resolve() == (Path(a.out) / "cache").resolve()
    rows = bench.cached_rows(a.datasets, every_dataset=own_cache)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("reverse_")))
    reverse = list(dict.fromkeys(r["dataset"] for r in rows if r["method"].startswith("reverse_")))
    config = {"command": command, "target": bench.target_id, "expert": bench.expert_id,
              "rule_set": a.rules.hash, **a.rules.to_dict(), "datasets": datasets, "reverse": reverse,
              "methods": methods}
    return write(rows, Path(a.out), config=config)


def run(a, command: str = "steer-lens bench") -> Path | None:
    """Run the benchmark the parsed options describe; returns the report's path."""
    if a.list:
        for name in M.available():
            m = M.get(name)
            tag = " [needs expert]" if m.needs_expert else ""
            print(f"{name}{tag}: {m.doc}")
        return None
    finish_args(a)
    target_id, expert_id = ids_of(a)
    if a.report_only:
        bench = Bench(None, None, cache=a.cache, rules=a.rules, target_id=target_id, expert_id=expert_id,
                      dtype=a.dtype)
        return write_report(a, bench, command)
    target, expert, target_id, expert_id = load_models(a)
    bench = Bench(target, expert, cache=a.cache, rules=a.rules, target_id=target_id, expert_id=expert_id,
                  batch_size=a.batch_size, dtype=a.dtype)
    path = None
    for datasets, methods in plan_of_run(a):
        for d in datasets:  # one dataset at a time, the report rewritten after each
            bench.run([d], methods, shard=a.shard)
            path = write_report(a, bench, command)
    return path


def main(argv=None) -> Path | None:
    p = argparse.ArgumentParser(prog="steer-lens bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_args(p)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    return run(a)


__all__ = ["ABLATIONS", "CORE", "EXTRA", "REVERSE", "add_bench_args", "main", "run", "suites"]
