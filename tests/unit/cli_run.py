"""Run the steer-lens command line from tests: in this process (``cli``) or as a process (``cli_process``)."""

import os
import subprocess
import sys
import warnings

import torch

from steer_lens.cli import run_captured

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def cli_process(*args, cwd=None) -> subprocess.CompletedProcess:
    """The command line as a separate process (the console script's own path)."""
    return subprocess.run([sys.executable, "-m", "steer_lens.cli", *map(str, args), "--threads", "1"],
                          capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """``steer-lens ARGS --threads 1`` run in this process: exit code, stdout and stderr as a process's.

    An exception that ``main`` does not turn into a ``steer-lens: error:`` line propagates and fails the
    test, as a traceback would in a process. Torch's thread count and the working folder are restored."""
    threads, here = torch.get_num_threads(), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code, out, err = run_captured([*map(str, args), "--threads", "1"])
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(list(args), code, out, err)
