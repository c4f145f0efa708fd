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
        out = importlib.import_module(name).main(argv)
        if "--fast" not in argv and "--out" not in argv:  # how the committed figures were made
            from steer_lens.io import write_text

            png = out["png"][0] if isinstance(out["png"], list) else out["png"]
            write_text(png.parent / "command.txt", " ".join(["python analyses/run_lens_analyses.py", *argv,
                                                              "--only", name]) + "\n")
        timings[name] = round(time.time() - start, 1)
        logging.getLogger("analyses").info("%s done in %.1fs", name, timings[name])
    if "--fast" not in argv and "--out" not in argv:
        write_index(timings)
    return timings


def write_index(timings: dict) -> None:
    """results/mechanistic.md: every mechanistic figure with the command that rebuilds it."""
    from steer_lens.io import write_text

    root = lens_common.ROOT / "results"
    lines = ["# Mechanistic analyses (SmolLM2-135M-Instruct target, Gemma-3-270M expert)\n",
             "Rebuild all: `python analyses/run_lens_analyses.py`; one: `python analyses/<name>.py`.\n"]
    for name in NAMES:
        folder = root / name
        if not folder.is_dir():
            continue
        took = f" ({timings[name]:.0f}s)" if name in timings else ""
        cmd = folder / "command.txt"
        command = cmd.read_text().strip() if cmd.exists() else f"python analyses/{name}.py"
        lines.append(f"\n## {name}{took}\n\n`{command}`\n")
        lines += [f"\n![{png.stem}]({name}/{png.name})\n" for png in sorted(folder.glob("*.png"))]
        lines += [f"- [{md.name}]({name}/{md.name})\n" for md in sorted(folder.glob("*.md"))]
    write_text(root / "mechanistic.md", "".join(lines))


if __name__ == "__main__":
    print(main())
