"""Reproduction recipe: the benchmark (the library's runner ``steer_lens.bench``, the rules of
``analyses/main_results.py``) for one of the paper's target/expert pairs, on a GPU in bf16, from local
model folders (nothing is downloaded).

The paper's pairs (Wang et al. 2025), the memory each needs in bf16 (weights only: 2 bytes per
parameter; add ~20% for activations at batch 8 and short prompts), and where to put them:

| target | expert | weights (bf16) |
|---|---|---|
| Llama-3.1-8B-Instruct | a Llama-3.1-8B domain expert (e.g. a medical or finance fine-tune) | 16 + 16 GB |
| Qwen2.5-7B-Instruct | a Qwen2.5-7B domain expert | 15 + 15 GB |
| Gemma-2-2b-it | Gemma-2-9b-it (large-to-small transfer) | 5 + 18 GB |

Put each model as a Hugging Face folder on disk (``config.json``, ``*.safetensors``, tokenizer files)
or in the local HF cache, then, for example:

    python analyses/paper_setup.py --target /models/Llama-3.1-8B-Instruct \\
        --expert /models/Llama-3.1-8B-medical --datasets mmlu_medical_2way mmlu_medical_4way \\
        --device cuda --dtype bfloat16            # two 8B models: one 40 GB GPU, or --device-map auto

Outputs go to ``results/paper_setup/<target>__<expert>/`` (cache, CSV, README), resumable like the
main results. ``--dry-run`` runs the same code end to end on two tiny random-weight configs of the
paper's families (a Llama-3.1-style target and a Qwen2 expert of another width), in seconds.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", help="target model folder, HF-cache repo id or registry name")
    p.add_argument("--expert", help="expert model folder, HF-cache repo id or registry name")
    p.add_argument("--datasets", nargs="+", default=["mmlu_medical_2way"])
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu, mps or auto (default)")
    p.add_argument("--dtype", default="bfloat16", help="bfloat16 (default), float16 or float32")
    p.add_argument("--device-map", default=None, help="accelerate placement, e.g. auto (then no --device)")
    p.add_argument("--out", default=None)
    p.add_argument("--dry-run", action="store_true", help="two tiny random-weight configs, CPU, seconds")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("extra", nargs=argparse.REMAINDER,
                   help="runner options (those of `steer-lens bench` / analyses/main_results.py) after --")
    a = p.parse_args(argv)
    if not a.dry_run and not (a.target and a.expert):
        p.error("give --target and --expert (local folders or HF-cache ids), or --dry-run")
    return a


def main(argv=None) -> Path:
    from steer_lens.bench.cli import add_bench_args, run

    a = parse(argv)
    extra = [x for x in a.extra if x != "--"]
    if a.dry_run:
        from steer_lens.testing import make_tiny_model

        tmp = Path(tempfile.mkdtemp(prefix="steer_lens_paper_"))
        a.target = str(make_tiny_model(tmp / "target", "llama3", d_model=64, n_layers=4, n_ctx=4096))
        a.expert = str(make_tiny_model(tmp / "expert", "qwen2", d_model=48, n_layers=3, seed=1, n_ctx=4096))
        a.device, a.dtype = "cpu", a.dtype
        a.threads = a.threads or 1
        extra = ["--limit-test", "8", "--limit-val", "6", "--limit-train", "20", "--strengths", "0.5", "1.0",
                 "--refine-rounds", "1", "--pair-shortlist", "2", "--methods", "unsteered", "expert_unsteered",
                 "caa", "label_caa", "expertsteer_autoencoder", "random", "expertsteer_label", "random_label",
                 *extra]
    name = f"{Path(a.target).name}__{Path(a.expert).name}"
    out = a.out or str(HERE.parent / "results" / "paper_setup" / name)
    args = ["--target", a.target, "--expert", a.expert, "--datasets", *a.datasets, "--reverse", "--out", out,
            "--cache", str(Path(out) / "cache"), "--dtype", a.dtype]
    args += ["--device-map", a.device_map] if a.device_map else ["--device", a.device]
    p = argparse.ArgumentParser(prog="analyses/paper_setup.py")
    add_bench_args(p)
    bench_args = p.parse_args(args + extra)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    command = shlex.join(["python", "analyses/paper_setup.py", *(sys.argv[1:] if argv is None else argv)])
    return run(bench_args, command=command)


if __name__ == "__main__":
    main()
