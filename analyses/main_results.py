"""The benchmark of results/benchmark: every registered core method and ablation on every bundled
dataset, through the library's runner (``steer_lens.bench``; the same as ``steer-lens bench`` with
this repository's folders as defaults). Fitted on TRAIN, chosen on VALIDATION, TEST scored once per
row, each beside its random control; resumable (one cached row per dataset and method).

    python analyses/main_results.py                       # every bundled dataset (hours on 2 cores)
    python analyses/main_results.py --compact             # one dataset per domain
    python analyses/main_results.py --fast                # tiny random models, seconds (results/fast)
    python analyses/main_results.py --report-only         # rewrite results/benchmark from the cache

Folders: results/benchmark (the default expert); results/tuned_experts/<expert folder name> for
``--expert <folder>`` (its target-only rows shared through results/benchmark/cache); a run with
``--expert-layers FIRST LAST`` or ``--extend-flat`` reports in a subfolder of that, with the same cache.

The committed rows were chosen by the reference strength search, so that is this script's default
(``--search reference``); ``--search flips`` (the library's default) keys its rows apart in the same cache.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch

from steer_lens.bench.cli import EXPERT, add_bench_args, run

ROOT = Path(__file__).resolve().parent.parent / "results"
WINDOW_FOLDER = "expert_layers_{}_{}"  # the report of a run with --expert-layers, under its default out


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_args(p, out_default=None, search_default="reference")  # the committed rows' search
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is ~4x faster than 2 when other jobs share the 2 cores)")
    a = p.parse_args(argv)
    default_out = ROOT / ("fast" if a.fast else "benchmark")
    if a.expert != EXPERT and not a.fast:
        default_out = ROOT / "tuned_experts" / Path(a.expert).name
        a.cache = a.cache or str(ROOT / "benchmark" / "cache")  # target-only rows shared with the main run
    if a.expert_layers is not None and a.out is None:  # another pair window: its own table, the same cache
        a.cache = a.cache or str(default_out / "cache")
        default_out = default_out / WINDOW_FOLDER.format(*a.expert_layers)
    if a.extend_flat and a.out is None:  # another strength rule: its own table, the same cache
        a.cache = a.cache or str(default_out / "cache")
        default_out = default_out / "extend_flat"
    a.out = a.out or str(default_out)
    return a


def main(argv=None) -> Path | None:
    a = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    args = sys.argv[1:] if argv is None else list(argv)
    return run(a, command=shlex.join(["python", "analyses/main_results.py", *args]))


if __name__ == "__main__":
    main()
