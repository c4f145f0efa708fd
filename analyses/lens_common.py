"""Shared plumbing of the mechanistic analyses: arguments, models, one fitted plan, outputs.

Every analysis is ``python analyses/<name>.py [--fast] [--out DIR]`` and writes PNG +
CSV/Markdown under ``results/<name>/`` (atomically). ``--fast`` swaps in tiny random models
(target Llama-like d 64 / 4 layers, expert Gemma-3-like d 48 / 3 layers) and a handful of
items; models and fitted plans are memoised in-process so the test suite stays quick.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from steer_lens.io import atomic_path, write_text  # noqa: E402

log = logging.getLogger("analyses")


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"analyses/{name}.py", description=doc.split("\n\n")[0])
    p.add_argument("--fast", action="store_true", help="tiny random models and a few items (seconds)")
    p.add_argument("--out", default=None, help=f"output folder (default results/{name})")
    p.add_argument("--dataset", default=None, help="dataset to fit the plan on (default sst2; fast: arithmetic_2way)")
    p.add_argument("--n-train", type=int, default=None, help="train items (2 contrast prompts each)")
    p.add_argument("--n-pairs", type=int, default=3)
    p.add_argument("--strength", type=float, default=None, help="relative steering strength")
    p.add_argument("--alignment", default=None, help="autoencoder (paper, default) | ridge | procrustes | hybrid")
    p.add_argument("--threads", type=int, default=1)
    return p


def finish_args(args, name: str):
    """Fill defaults that depend on --fast; create the output folder."""
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.dataset = args.dataset or ("arithmetic_2way" if args.fast else "sst2")
    args.n_train = args.n_train or (10 if args.fast else 48)
    args.strength = args.strength if args.strength is not None else (2.0 if args.fast else 0.1)
    args.n_pairs = min(args.n_pairs, 2) if args.fast else args.n_pairs
    args.alignment = args.alignment or ("ridge" if args.fast else "autoencoder")
    args.out = Path(args.out or ROOT / "results" / name)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def made_by(command: str) -> str:
    """The opening of a report's "Made by" line: the command that computed the numbers (without
    ``--report-only``), and whether the report was rewritten from the cache."""
    rewritten = " --report-only" in command
    return (f"Made by `{command.replace(' --report-only', '')}` ("
            + ("report rewritten with `--report-only`; " if rewritten else ""))


def start_run(script: str, args, argv) -> tuple[Path, str]:
    """Logging, torch threads; returns (output folder, the command line that reproduces the run)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    command = f"python analyses/{script}.py " + " ".join(argv if argv is not None else sys.argv[1:])
    return Path(args.out), command


@functools.lru_cache(maxsize=2)
def load_models(fast: bool, expert: str | None = None, **tiny):
    """(target, expert): SmolLM2-135M-Instruct and Gemma-3-270M (or ``expert``: a registry name
    or a local HF folder such as a tuned expert), or tiny random stand-ins (``tiny``:
    make_tiny_pair's options, e.g. ``n_ctx``); in fast mode a given ``expert`` replaces the tiny one."""
    from steer_lens.models import load_model

    if fast:
        from steer_lens.testing import make_tiny_pair

        target, tiny_expert = make_tiny_pair(tempfile.mkdtemp(prefix="steer_lens_analyses_"), **tiny)
        return load_model(target), load_model(expert or tiny_expert)
    return load_model("smollm2-135m-instruct"), load_model(expert or "gemma-3-270m")


def items(dataset: str, split: str, n: int, fast: bool):
    """``n`` seeded items of a split (fast mode: short prompts only, for the byte tokenizer)."""
    from steer_lens.data import load_dataset

    pool = load_dataset(dataset).split(split)
    if fast:
        pool = [it for it in pool if len(it.prompt()) < 200] or pool
    import random

    keep = sorted(random.Random(0).sample(range(len(pool)), min(n, len(pool))))
    return [pool[i] for i in keep]


_PLANS: dict = {}


def fit_plan(args, dataset: str | None = None):
    """ExpertSteer plan on ``n_train`` train items of ``dataset`` plus the recorded RFM
    directions (one per pair). Memoised per (fast, dataset, n_train, n_pairs)."""
    from steer_lens.data import contrast_prompts
    from steer_lens.pipeline import ExpertSteer
    from steer_lens.probes import recording_directions
    from steer_lens.rfm import RFMConfig

    dataset = dataset or args.dataset
    key = (args.fast, dataset, args.n_train, args.n_pairs, args.alignment)
    if key not in _PLANS:
        target, expert = load_models(args.fast)
        pos, neg = contrast_prompts(items(dataset, "train", args.n_train, args.fast))
        if args.fast:
            es = ExpertSteer(n_pairs=args.n_pairs, alignment=args.alignment, rfm=RFMConfig(iters=3))
        else:
            kw = {"max_epochs": 300} if args.alignment == "hybrid" else {}  # autoencoder: closed form
            es = ExpertSteer(n_pairs=args.n_pairs, alignment=args.alignment, target_window=(2, 27),
                             aligner_kwargs=kw)
        with recording_directions() as directions:
            plan = es.fit(expert, target, pos, neg)
        _PLANS[key] = (plan, list(directions), pos, neg)
    return _PLANS[key]


def benchmark(main_args: list[str], *, models: bool = False):
    """(Bench, options) of the benchmark run ``python analyses/main_results.py <main_args>``: the
    library's runner (``steer_lens.bench.Bench``) on that run's cache, rules and model names. Without
    ``models`` it only reads cached rows (``row_path``, ``cached_rows``); with them (loaded as the run
    loads them) it also refits a row's plan: ``steer_lens.methods.get(m).plan_of(bench.context(d), row)``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import main_results
    from steer_lens.bench import Bench
    from steer_lens.bench.cli import finish_args, ids_of, load_models

    a = main_results.parse(main_args)
    finish_args(a)
    target = expert = None
    target_id, expert_id = ids_of(a)
    if models:
        target, expert, target_id, expert_id = load_models(a)
    bench = Bench(target, expert, cache=a.cache, rules=a.rules, target_id=target_id, expert_id=expert_id,
                  batch_size=a.batch_size, dtype=a.dtype)
    return bench, a


def mean_difference(target, pos, neg, layer: int) -> torch.Tensor:
    """CAA-style mean difference of span-mean activations (inline fallback for baselines)."""
    from steer_lens.activations import capture

    acts = capture(target, list(pos) + list(neg), layers=[layer], position="mean").tensor[:, 0]
    return acts[: len(pos)].mean(0) - acts[len(pos):].mean(0)


def write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` as CSV (columns from the first row; an empty file when there are none), atomically."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buf.getvalue())


NOTES_LINK = "The reading of these numbers: [notes.md](notes.md)."


def write_report(path: Path, text: str, test_splits: Iterable[str] = ()) -> Path:
    """Write a Markdown report, atomically, ending with a link to the hand-written ``notes.md`` beside
    it when there is one (the reading that goes with the numbers; linked, not copied, so the report
    does not go stale when the notes change); returns ``path``. ``test_splits``: the datasets whose test
    split the report scores; the ledger's count of rule sets per split is appended for them
    (``steer_lens.ledger.split_section``)."""
    from steer_lens.ledger import split_section

    if test_splits:
        text = text.rstrip("\n") + "\n\n" + split_section(test_splits)
    notes = Path(path).parent / "notes.md"
    if notes.is_file():
        text = text.rstrip("\n") + "\n\n" + NOTES_LINK + "\n"
    write_text(path, text)
    return Path(path)


def markdown(rows: list[dict], floatfmt: str = ".3f") -> str:
    """A GitHub Markdown table of rows (dicts with the same keys)."""
    def cell(v):
        text = format(v, floatfmt) if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\n", "\\n")
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """A new Agg figure and its axes (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def layer_of(hook: str) -> int:
    return int(hook.split(".")[1])
