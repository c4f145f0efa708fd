"""The ``steer-lens`` command line: one module per subcommand group, ``main(argv) -> exit code``.

User mistakes (bad paths, unknown models or datasets, out-of-range layers, bad strengths,
corrupted plans) print one line ``steer-lens: error: ...`` and exit 2 (argument errors) or 1;
``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .common import USER_ERRORS, CLIError, StrictParser, common_parent

EPILOG = """examples:
  steer-lens models
  steer-lens demo --fast
  steer-lens fit --expert gemma-3-270m --target smollm2-135m-instruct --dataset sst2 --out plans/sst2
  steer-lens fit --method expertsteer_label --expert gemma-3-270m --target smollm2-135m-instruct --dataset sst2 --out plans/sst2_label
  steer-lens evaluate --method expertsteer_label --expert gemma-3-270m --model smollm2-135m-instruct --dataset sst2
  steer-lens bench --list
  steer-lens generate --model smollm2-135m-instruct --plan plans/sst2 --prompt "The movie was"
  steer-lens export plans/sst2 --out sst2.gguf --strength 0.3
  steer-lens merge plans/sst2 --strength 0.1 --out smollm2-sst2
  steer-lens finetune --model gemma-3-270m --dataset sst2 --steps 60 --train-layers 4
run `steer-lens <command> --help` for each command's options and an example."""


def build_parser() -> argparse.ArgumentParser:
    from . import bench_cmd, demo, export_cmd, finetune_cmd, fit_cmd, merge_cmd, models_cmd, report_cmd, run_cmd

    parser = StrictParser(
        prog="steer-lens", description="ExpertSteer: steer a target LLM with vectors learned from an "
        "expert LLM's activations.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"steer-lens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=StrictParser)
    sub.required = True
    parent = common_parent()
    for module in (models_cmd, fit_cmd, run_cmd, bench_cmd, demo, export_cmd, merge_cmd, report_cmd, finetune_cmd):
        module.register(sub, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CLIError as err:
        print(f"steer-lens: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    if args.debug:
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. piped into `head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("steer-lens: interrupted", file=sys.stderr)
        return 130
    except CLIError as err:
        print(f"steer-lens: error: {err}", file=sys.stderr)
        return 2
    except USER_ERRORS as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        msg = " ".join(str(msg).split()) or type(err).__name__
        print(f"steer-lens: error: {msg} (rerun with --debug for a traceback)", file=sys.stderr)
        return 1


def run_captured(argv: Sequence[str]) -> tuple[int, str, str]:
    """``steer-lens ARGV`` through ``main`` in this process, its output captured: (exit code, stdout,
    stderr), as a process would give them (for tests and in-process benchmarks)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


__all__ = ["main", "build_parser", "run_captured"]
