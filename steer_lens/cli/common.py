"""Shared CLI plumbing: strict argument parsing, argument types, model/dataset loading, output."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

USER_ERRORS = (ValueError, FileNotFoundError, ModuleNotFoundError, KeyError, NotADirectoryError,
               IsADirectoryError, PermissionError)


class CLIError(Exception):
    """A command-line usage mistake (reported as one line, exit code 2)."""


class StrictParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise CLIError instead of printing usage and exiting."""

    def error(self, message: str):
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def common_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print one JSON object on stdout (for scripts)")
    parent.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parent.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    return parent


def add_command(sub, name: str, parent, func, help: str, example: str):
    p = sub.add_parser(name, parents=[parent], help=help, description=help,
                       epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=_with_threads(func))
    return p


def _with_threads(func):
    def run(args):
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        return func(args)
    return run


# ---- argument types --------------------------------------------------------------------
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"strength must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"strength must be finite, got {text!r}")
    return value


def strengths(text: str) -> list[float]:
    out = [strength(t) for t in text.replace(" ", "").split(",") if t]
    if not out:
        raise argparse.ArgumentTypeError("give at least one strength, e.g. 0.05,0.1,0.2")
    return out


def layer_spec(text: str) -> list[int] | None:
    """"all" -> None; "0,5,-1" and "3-7" (inclusive) -> list of ints (checked against the model later)."""
    if text.strip().lower() == "all":
        return None
    out: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if "-" in part[1:]:
                lo, hi = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"layers must look like 'all', '0,5,-1' or '3-7', got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"no layers in {text!r}")
    return out


def window(text: str) -> tuple[int, int] | str | None:
    """"lo,hi" (inclusive), "none", or "auto" (resolved once the layer count is known)."""
    if text.strip().lower() in ("none", "auto"):
        return None if text.strip().lower() == "none" else "auto"
    try:
        lo, hi = (int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"window must be 'lo,hi' (inclusive), 'auto' or 'none', got {text!r}") from None
    if lo > hi:
        raise argparse.ArgumentTypeError(f"window must have lo <= hi, got {text!r}")
    return lo, hi


# ---- loading ------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def add_model_args(p) -> None:
    """``--device``, ``--dtype`` and ``--device-map`` for a command that loads models."""
    p.add_argument("--device", default=None,
                   help="where the models run: cpu (default), cuda, cuda:N, mps, or auto (a GPU if present)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="weights and activations dtype (default float32)")
    p.add_argument("--device-map", choices=DEVICE_MAPS, default=None,
                   help="instead of --device: accelerate spreads each model's layers over the GPUs "
                        "(for models larger than one GPU)")


def load_model(name: str, args=None):
    """Load a model (registry name, HF folder, .gguf or HF-cache repo id) with the command's
    ``--device/--dtype/--device-map`` (when ``args`` has them), logging the time on stderr."""
    from ..models import load_model as _load

    options = {key: getattr(args, key, None) for key in ("device", "dtype", "device_map")}
    t0 = time.perf_counter()
    log(f"loading {name} ...")
    model = _load(name, **options)
    log(f"loaded {name} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}, {model.cfg.dtype}, "
        f"{model.cfg.device}) in {time.perf_counter() - t0:.1f}s")
    return model


def load_plan(folder: str):
    from ..plan import SteeringPlan

    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"no such plan folder: {folder}")
    if not path.is_dir():
        raise ValueError(f"{folder} is not a plan folder (expected a directory with plan.json)")
    return SteeringPlan.load(path)


def load_items(dataset: str, split: str, limit: int | None, seed: int = 0):
    from ..data import load_dataset

    ds = load_dataset(dataset)
    return ds, ds.split(split, limit=limit, seed=seed)


def read_prompts(path: str) -> list[str]:
    """Prompts from a text file (one per line) or a JSONL file (strings or {"prompt": ...})."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such prompts file: {path}")
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if p.suffix == ".jsonl":
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {i}: malformed JSON ({err.msg})") from None
            obj = obj.get("prompt") if isinstance(obj, dict) else obj
            if not isinstance(obj, str):
                raise ValueError(f"{path}, line {i}: expected a string or {{\"prompt\": ...}}")
            out.append(obj)
        else:
            out.append(line)
    if not out:
        raise ValueError(f"{path} has no prompts (one per line)")
    return out


# ---- output ---------------------------------------------------------------------------
def emit(args, payload: dict, text: str) -> int:
    """Print ``text`` for people, or ``payload`` as JSON with --json; returns 0."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, default=_jsonable))
    else:
        print(text)
    return 0


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__dict__"):
        return obj.__dict__
    return str(obj)


def table(rows: list[list], header: list[str]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
