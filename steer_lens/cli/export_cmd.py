"""``steer-lens export``: a plan as a llama.cpp control vector (GGUF) or a safetensors file."""

from __future__ import annotations

from pathlib import Path

from .common import CLIError, add_command, emit, load_plan, strength


def register(sub, parent) -> None:
    p = add_command(sub, "export", parent, run, "export a plan as a llama.cpp control vector (.gguf: "
                    "direction.N = strength x norm x vector at block N's output) or as .safetensors "
                    "(unit vectors + norms, re-importable)",
                    "steer-lens export plans/sst2 --out sst2.gguf --strength 0.3   "
                    "# then: llama-cli -m SmolLM2.gguf --control-vector sst2.gguf")
    p.add_argument("plan", help="plan folder")
    p.add_argument("--out", required=True, help="output file (.gguf or .safetensors)")
    p.add_argument("--format", choices=["gguf", "safetensors"], default=None,
                   help="default: from the --out suffix")
    p.add_argument("--strength", type=strength, default=1.0,
                   help="baked into the GGUF (llama.cpp adds the raw vector; default 1.0)")


def run(args) -> int:
    from ..export import absolute_vectors, export_gguf, export_safetensors

    fmt = args.format or {".gguf": "gguf", ".safetensors": "safetensors"}.get(Path(args.out).suffix)
    if fmt is None:
        raise CLIError(f"cannot tell the format of {args.out!r}: use a .gguf or .safetensors suffix or --format")
    plan = load_plan(args.plan)
    if fmt == "gguf":
        layers = sorted(absolute_vectors(plan, args.strength))
        export_gguf(plan, args.out, strength=args.strength)
        info = {"out": args.out, "format": fmt, "layers": layers, "strength": args.strength,
                "tensors": [f"direction.{i}" for i in layers]}
        text = (f"wrote llama.cpp control vector {args.out}: {', '.join(info['tensors'])} "
                f"(strength {args.strength:g} baked in)")
    else:
        export_safetensors(plan, args.out)
        info = {"out": args.out, "format": fmt, "hooks": list(plan.vectors)}
        text = f"wrote {args.out}: unit vectors for {', '.join(plan.vectors)} with norms in the metadata"
    return emit(args, info, text)
