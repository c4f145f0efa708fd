"""Export a SteeringPlan as a llama.cpp control vector (GGUF) or a plain safetensors file.

llama.cpp control-vector layout (checked against its source: ``common_control_vector_load_one``
in common/common.cpp and ``llama_adapter_cvec::apply`` in src/llama-adapter.cpp): a GGUF with
``general.architecture = "controlvector"``, ``controlvector.model_hint`` and
``controlvector.layer_count``, and one 1-D F32 tensor ``direction.N`` per steered layer.
``direction.N`` lands in ``tensors[N]``, which the model graph adds (``build_cvec(cur, il)``)
to the output of block ``il = N`` (0-based), i.e. TransformerLens' ``blocks.N.hook_resid_post``;
``direction.0`` is rejected by the loader, so block 0's output cannot be steered. The loader adds
the raw values times ``--control-vector-scaled``'s factor (1 by default) to every token, so we
bake ``strength × norm × unit vector`` in: ``--control-vector f.gguf`` then matches
``plan.apply(model, strength)`` (positions "all").
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .io import atomic_path
from .plan import LayerPairInfo, SteeringPlan
from .steer import check_strength

_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(post|pre)$")
ARCH = "controlvector"


def llama_cpp_layer(hook: str) -> int:
    """The ``direction.N`` index of a target hook (resid_post L -> L; resid_pre L -> L - 1)."""
    m = _RESID.match(hook)
    if not m:
        raise ValueError(f"cannot export hook {hook!r} to llama.cpp: control vectors act on the "
                         "residual stream between blocks (fit with hook='resid_post')")
    layer = int(m.group(1)) - (m.group(2) == "pre")
    if layer < 1:
        raise ValueError(f"cannot export hook {hook!r} to llama.cpp: it has no slot for the output of "
                         "block 0 or the embeddings (direction.0 is invalid); drop that layer")
    return layer


def absolute_vectors(plan: SteeringPlan, strength: float = 1.0) -> dict[int, Tensor]:
    """{llama.cpp layer: strength × norm × unit vector} (vectors on one layer are summed), float32
    on the CPU (the sum is taken in float64 on the vectors' device)."""
    strength = check_strength(strength)
    if plan.mode != "fixed":
        raise ValueError(f"this plan steers in mode {plan.mode!r} (a different direction at every token); a "
                         "control vector adds one fixed vector. To export its fixed vectors instead, pass "
                         "dataclasses.replace(plan, settings={**plan.settings, 'mode': 'fixed'})")
    if not plan.vectors:
        raise ValueError("the plan has no vectors to export")
    out: dict[int, Tensor] = {}
    for hook, vec in plan.vectors.items():
        vec = vec.double().flatten()
        if not torch.isfinite(vec).all() or float(vec.norm()) == 0:
            raise ValueError(f"the plan's vector for {hook} is zero or not finite; re-fit the plan")
        norm = float(plan.norms.get(hook, 1.0))
        layer = llama_cpp_layer(hook)
        add = strength * norm * vec / vec.norm()
        out[layer] = out.get(layer, torch.zeros_like(add)) + add
    return {k: v.float().cpu() for k, v in sorted(out.items())}  # files are written from CPU memory


def export_gguf(plan: SteeringPlan, path: str | os.PathLike, strength: float = 1.0) -> Path:
    """Write a llama.cpp control vector (GGUF) for ``plan`` at ``strength``; returns the path."""
    import gguf

    vectors = absolute_vectors(plan, strength)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", str(plan.target.get("name", "unknown")))
        writer.add_int32(f"{ARCH}.layer_count", len(vectors))
        writer.add_float32("steer_lens.strength", float(strength))
        writer.add_string("steer_lens.pairs", json.dumps([p.__dict__ for p in plan.pairs]))
        writer.add_string("steer_lens.norms", json.dumps(plan.norms))
        writer.add_string("steer_lens.target", json.dumps(plan.target))
        if plan.data_hash:
            writer.add_string("steer_lens.data_hash", plan.data_hash)
        for layer, vec in vectors.items():
            writer.add_tensor(f"direction.{layer}", vec.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def read_gguf(path: str | os.PathLike) -> tuple[dict[int, Tensor], dict]:
    """Read a control vector: ({layer: vector}, {metadata key: value})."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such control-vector file: {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # gguf raises ValueError/struct errors on junk
        raise ValueError(f"{path} is not a readable GGUF file ({err})") from None
    meta = {}
    for name, fld in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        val = fld.contents() if hasattr(fld, "contents") else fld.parts[fld.data[0]]
        meta[name] = val
    if meta.get("general.architecture") != ARCH:
        raise ValueError(f"{path} is not a control vector (architecture {meta.get('general.architecture')!r})")
    vectors = {}
    for t in reader.tensors:
        m = re.fullmatch(r"direction\.(\d+)", t.name)
        if not m or int(m.group(1)) == 0:
            raise ValueError(f"{path}: tensor {t.name!r} is not a valid direction.N (N >= 1)")
        vectors[int(m.group(1))] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    return vectors, meta


def export_safetensors(plan: SteeringPlan, path: str | os.PathLike) -> Path:
    """Unit vectors keyed by hook name + norms/pairs/target as JSON metadata (no code, no pickle)."""
    from safetensors.torch import save_file

    if not plan.vectors:
        raise ValueError("the plan has no vectors to export")
    tensors = {hook: v.detach().float().cpu().contiguous() for hook, v in plan.vectors.items()}
    meta = {"format": "steer_lens.vectors/1", "norms": json.dumps(plan.norms),
            "pairs": json.dumps([p.__dict__ for p in plan.pairs]), "target": json.dumps(plan.target),
            "expert": json.dumps(plan.expert), "data_hash": plan.data_hash or ""}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def import_safetensors(path: str | os.PathLike) -> SteeringPlan:
    """Rebuild a SteeringPlan (without MI matrix) from ``export_safetensors`` output."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such vectors file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None
    if meta.get("format") != "steer_lens.vectors/1":
        raise ValueError(f"{path} was not written by steer-lens export_safetensors")
    return SteeringPlan(
        vectors=tensors, pairs=[LayerPairInfo(**p) for p in json.loads(meta["pairs"])], mi=None,
        expert=json.loads(meta["expert"]), target=json.loads(meta["target"]),
        norms={k: float(v) for k, v in json.loads(meta["norms"]).items()}, data_hash=meta["data_hash"],
    )
