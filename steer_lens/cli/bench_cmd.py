"""``steer-lens bench``: registered methods x datasets through the protocol (``steer_lens.bench``)."""

from __future__ import annotations

import logging

from .common import add_command


def register(sub, parent) -> None:
    from ..bench.cli import add_bench_args

    p = add_command(sub, "bench", parent, run_bench, "run registered methods on datasets: fit on train, choose on "
                    "validation, score test once beside each method's random control; resumable (one cached row "
                    "per dataset and method), writes a CSV and a report",
                    "steer-lens bench --datasets sst2 --methods expertsteer_label random_label calibration "
                    "--out results/sst2   (--list: every method; --fast: tiny models)")
    add_bench_args(p)


def run_bench(args) -> int:
    from ..bench.cli import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = run(args)
    if path is not None:
        print(f"report: {path}")
    return 0
