"""Helpers shared by the benchmarks: CLI flags, interleaved best-of-N timing, machine load, output."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--fast", action="store_true", help="tiny models / small sizes: checks the bench runs")
    p.add_argument("--results-dir", default=None,
                   help="where to write <name>.json (default benchmarks/results, or a 'fast' subfolder)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machine)")
    p.add_argument("--repeats", type=int, default=None, help="best-of-N repeats")
    return p


def setup(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if getattr(args, "fast", False):
        scratch_ledger()


def scratch_ledger() -> None:
    """Tiny random models score no real split: their scorings go to a scratch ledger (inherited by
    subprocesses), never to results/ledger.jsonl. A ledger path already set is kept."""
    import tempfile

    if "STEER_LENS_LEDGER" not in os.environ:
        os.environ["STEER_LENS_LEDGER"] = os.path.join(tempfile.mkdtemp(prefix="steer-lens-ledger-"), "ledger.jsonl")


def load() -> dict:
    """Machine load right now (the machine is shared: read every figure beside it)."""
    one, five, fifteen = os.getloadavg()
    return {"loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2), "loadavg_15m": round(fifteen, 2),
            "cpu_count": os.cpu_count()}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Run each function ``repeats`` times, alternating A B A B ..., after ``warmup`` untimed rounds.
    ``clock``: wall time by default; ``time.process_time`` (this process's CPU seconds) is far less
    sensitive to other jobs on a loaded machine."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        order = list(fns.items()) if r % 2 == 0 else list(reversed(fns.items()))  # no position bias
        for name, fn in order:
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return times


def write(args, name: str, result: dict) -> Path:
    """Write ``<results-dir>/<name>.json`` atomically and print the headline numbers."""
    from steer_lens.io import write_json

    folder = Path(args.results_dir) if args.results_dir else (RESULTS / "fast" if args.fast else RESULTS)
    result = {**result, "fast": bool(args.fast), "torch_threads": args.threads}
    path = folder / f"{name}.json"
    write_json(path, result)
    heads = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    print(f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in list(heads.items())[:4]) + f" -> {path}")
    return path


def tiny_models(folder: Path) -> tuple[str, str]:
    """(expert, target) tiny HF folders under ``folder`` (built once)."""
    from steer_lens.testing import make_tiny_pair

    t, e = make_tiny_pair(folder / "tiny")
    return str(e), str(t)


_TMP: list = []  # temporary folders that must outlive the loaded tiny models


def target_model(args):
    """SmolLM2-135M-Instruct, or with ``--fast`` the tiny random target (a smoke test)."""
    import tempfile

    from steer_lens.models import load_model

    if not args.fast:
        return load_model("smollm2-135m-instruct")
    if not _TMP:  # one stand-in pair per process (run_all --fast runs every bench in one process)
        _TMP.append(tempfile.TemporaryDirectory())
    return load_model(tiny_models(Path(_TMP[-1].name))[1])


def caa_sweep_case(args, dataset):
    """What the sweep benches score: (target model, CAA plan at the middle block fitted on ``dataset``'s
    train items, its validation items, n_train, repeats). ``--fast``: 8 + 8 items on the tiny target, whose
    byte tokens keep the last-token layout only with one-letter choices."""
    import dataclasses

    from steer_lens.baselines import fit_caa
    from steer_lens.data import contrast_prompts

    model = target_model(args)
    n_train, n_items, repeats = (8, 8, args.repeats or 1) if args.fast else (32, 40, args.repeats or 2)
    pos, neg = contrast_prompts(dataset.split("train", limit=n_train))
    plan = fit_caa(model, pos, neg, model.cfg.n_layers // 2)
    items = dataset.split("validation", limit=n_items)
    if args.fast:
        items = [dataclasses.replace(it, choices=("n", "p")) for it in items]
    return model, plan, items, n_train, repeats


def expert_model(args):
    """Gemma-3-270M (the benchmark's default expert), or with ``--fast`` the tiny random expert of
    the pair ``target_model`` built (a smoke test)."""
    import tempfile

    from steer_lens.models import load_model

    if not args.fast:
        return load_model("gemma-3-270m")
    if not _TMP:
        _TMP.append(tempfile.TemporaryDirectory())
    return load_model(tiny_models(Path(_TMP[-1].name))[0])


def greedy_generation(model, batches, new_tokens: int, context=None) -> Callable[[], None]:
    """A closure generating ``new_tokens`` greedily (KV cache on) from each padded batch, inside
    ``context()`` (e.g. ``lambda: plan.apply(model, 0.1)``) or without steering."""
    import contextlib

    import torch

    def go():
        for batch in batches:
            with (context() if context else contextlib.nullcontext()), torch.no_grad():
                out = model.generate(batch.tokens, max_new_tokens=new_tokens, do_sample=False,
                                     use_past_kv_cache=True, stop_at_eos=False, return_type="tokens", verbose=False)
            assert out.shape[1] == batch.tokens.shape[1] + new_tokens, out.shape
    return go
