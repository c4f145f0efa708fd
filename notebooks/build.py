"""Build (and optionally execute) the steer-lens notebooks from the cell sources below.

    python notebooks/build.py                 # write notebooks/*.ipynb (no outputs)
    python notebooks/build.py --execute       # write and execute in place with the real models
    python notebooks/build.py --execute --fast --out /tmp/nb   # tiny random models (smoke test)
    python notebooks/build.py --execute --small --out /tmp/nb  # real models on a few items (the tests' run)

Executed notebooks keep small outputs: stderr streams (progress bars, warnings) and widget
state are dropped, figures are rendered at low dpi. Run times go into the notebook metadata.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cells import NOTEBOOKS  # noqa: E402


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in NOTEBOOKS[name]:
        src = src.strip("\n")
        nb.cells.append(new_markdown_cell(src) if kind == "md" else new_code_cell(src))
    return nb


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop stderr streams and widget state; keep stdout, results and images."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")
                        and "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
        cell.metadata.pop("execution", None)
    return nb


def execute(nb: nbformat.NotebookNode, *, fast: bool, small: bool = False, timeout: int = 1200) -> float:
    """Run a notebook top to bottom in a fresh kernel (cwd = notebooks/); return seconds. ``fast``: tiny
    random models; ``small``: the real models on a few items (STEER_LENS_SMALL; the test suite's run)."""
    from nbclient import NotebookClient

    env_before = {k: os.environ.get(k) for k in ("STEER_LENS_FAST", "STEER_LENS_SMALL")}
    os.environ["STEER_LENS_FAST"] = "1" if fast else "0"
    os.environ["STEER_LENS_SMALL"] = "1" if small else "0"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    start = time.time()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(HERE)}}).execute()
    finally:
        for key, before in env_before.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
    return time.time() - start


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    from steer_lens.io import write_text  # atomic

    write_text(path, nbformat.writes(nb) + "\n")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--execute", action="store_true")
    p.add_argument("--fast", action="store_true", help="execute with tiny random models")
    p.add_argument("--small", action="store_true", help="execute with the real models on a few items")
    p.add_argument("--out", default=str(HERE))
    p.add_argument("--only", nargs="*", default=None)
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    times = {}
    for name in args.only or list(NOTEBOOKS):
        nb = build(name)
        if args.execute:
            seconds = execute(nb, fast=args.fast, small=args.small)
            nb = clean(nb)
            nb.metadata["steer_lens"] = {"run_seconds": round(seconds, 1), "fast": args.fast,
                                         **({"small": True} if args.small else {})}
            times[name] = round(seconds, 1)
            print(f"{name}: {seconds:.0f}s", flush=True)
        write(nb, Path(args.out) / f"{name}.ipynb")
    return times


if __name__ == "__main__":
    main()
