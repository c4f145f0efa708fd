"""``steer-lens models``: list registry models and their cache status; ``models cache NAME`` converts."""

from __future__ import annotations

import time

from .common import CLIError, add_command, emit, log, table


def register(sub, parent) -> None:
    p = add_command(sub, "models", parent, run, "list the registry models and whether their converted "
                    "weights are cached; `models cache NAME` pre-converts one",
                    "steer-lens models cache smollm2-135m-instruct")
    p.add_argument("action", nargs="?", choices=["list", "cache"], default="list")
    p.add_argument("name", nargs="?", help="registry name (for `cache`)")


def status(name: str) -> dict:
    """Registry facts and cache state of one model (never converts anything)."""
    from ..models import REGISTRY, _registry_gguf, cache_dir

    spec = REGISTRY[name]
    row = {"name": name, "d_model": spec.d_model, "n_layers": spec.n_layers, "installed": True,
           "cached": False, "cache_entry": None, "install": spec.pip}
    try:
        _, sha = _registry_gguf(name)
    except ModuleNotFoundError:
        row["installed"] = False
        return row
    entry = cache_dir() / "models" / f"{sha[:24]}-float32"
    row["cache_entry"] = str(entry)
    row["cached"] = (entry / "manifest.json").is_file() and (entry / "model.safetensors").is_file()
    return row


def run(args) -> int:
    from ..models import REGISTRY, cache_dir, load_hf

    if args.action == "cache":
        if not args.name:
            raise CLIError("`models cache` needs a model name, e.g. `steer-lens models cache gemma-3-270m`")
        if args.name not in REGISTRY:
            raise ValueError(f"unknown model {args.name!r}; registry models: {', '.join(sorted(REGISTRY))}")
        t0 = time.perf_counter()
        log(f"converting {args.name} into {cache_dir()} (one-off; ~25 s SmolLM2, ~75 s Gemma) ...")
        load_hf(args.name)
        row = {**status(args.name), "seconds": round(time.perf_counter() - t0, 2)}
        return emit(args, row, f"{args.name}: cached at {row['cache_entry']} ({row['seconds']} s)")
    if args.name:
        raise CLIError("`models list` takes no name; use `models cache NAME` to convert one")
    rows = [status(n) for n in sorted(REGISTRY)]
    text = table([[r["name"], r["d_model"], r["n_layers"], "yes" if r["installed"] else "no",
                   "yes" if r["cached"] else "no"] for r in rows],
                 ["model", "d_model", "layers", "installed", "cached"])
    missing = [r for r in rows if not r["installed"]]
    text += "".join(f"\ninstall {r['name']}: {r['install']}" for r in missing)
    text += (f"\ncache: {cache_dir()}  (also accepted: a Hugging Face folder, a .gguf file or an org/name "
             "already in the local Hugging Face cache)")
    return emit(args, {"models": rows, "cache_dir": str(cache_dir())}, text)
