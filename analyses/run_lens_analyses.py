"""Run every mechanistic analysis in one process (one shared plan fit per dataset).

    python analyses/run_lens_analyses.py [--fast] [--only NAME ...]
Each writes to results/<name>/ (the real-model figures the README shows come from here).
"""

from __future__ import annotations

import importlib
import logging
import sys
import time

import lens_common  # noqa: F401  (sets sys.path)

NAMES = ["mi_heatmap", "agop_spectra", "method_cosine", "logit_lens", "probe_accuracy", "token_attribution",
         "layer_ablation", "vector_reuse"]


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = NAMES
    if "--only" in argv:
        i = argv.index("--only")
        only, argv = [a for a in argv[i + 1:] if not a.startswith("-")], argv[:i]
    timings = {}
    for name in only:
        start = time.time()
        importlib.import_module(name).main(argv)
        timings[name] = round(time.time() - start, 1)
        logging.getLogger("analyses").info("%s done in %.1fs", name, timings[name])
    return timings


if __name__ == "__main__":
    print(main())
