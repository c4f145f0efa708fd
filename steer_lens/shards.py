"""Activations streamed to sharded safetensors files, read back whole or one shard at a time.

``capture(model, prompts, ..., out=folder, shard_size=k)`` writes::

    folder/index.json                 kind, format, layers, hook names, model, position, n, shards
    folder/shard-00000.safetensors    "tensor" float32 "k layer d" ("k layer len d" for "all",
                                      len = the shard's longest prompt), "index" int64 "k" (each
                                      row's position in the prompt list), "mask" bool "k len" ("all")
    ...

Rows sit in the order they were captured (length-sorted batches), so ``index`` maps them
back; ``ActivationShards.load()`` scatters them into input order, equal to the in-memory
capture. The folder is built under a temporary name next to ``folder`` and renamed into
place when complete: a crash leaves the old folder (or none), never a partial one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from .activations import Activations

INDEX = "index.json"
KIND = "steer_lens.activation_shards"
FORMAT_VERSION = 1
_CPU = torch.device("cpu")  # shard files are written from and read into CPU memory


class ActivationShards:
    """A lazy view of a shard folder: ``len`` prompts, ``num_shards`` files, read on demand."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        path = self.folder / INDEX
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder} has no {INDEX}: it is not a folder written by "
                                    "capture(..., out=folder)")
        index = json.loads(path.read_text())
        if index.get("kind") != KIND:
            raise ValueError(f"{path} describes {index.get('kind')!r}, not {KIND!r}")
        if int(index.get("format", 0)) > FORMAT_VERSION:
            raise ValueError(f"{path} has format {index['format']}; upgrade steer-lens to read it")
        self.index = index
        self.layers: list[int] = index["layers"]
        self.hook_names: list[str] = index["hook_names"]
        self.model_name: str = index["model_name"]
        self.position: str = index["position"]
        self.meta: dict = index.get("meta", {})

    def __len__(self) -> int:
        return int(self.index["n"])

    @property
    def num_shards(self) -> int:
        return len(self.index["shards"])

    def shard(self, i: int) -> tuple[Int[Tensor, " k"], Activations]:
        """Shard ``i``: (prompt positions "k", its Activations with k rows), on the CPU."""
        from safetensors.torch import load_file

        entry = self.index["shards"][i]
        data = load_file(str(self.folder / entry["file"]))
        acts = Activations(data["tensor"], self.layers, self.hook_names, self.model_name, self.position,
                           data.get("mask"), dict(self.meta))
        return data["index"], acts

    def __iter__(self) -> Iterator[tuple[Int[Tensor, " k"], Activations]]:
        for i in range(self.num_shards):
            yield self.shard(i)

    def load(self, device: str | torch.device | None = None) -> Activations:
        """All shards as one Activations in prompt order (on ``device``, default CPU)."""
        device = torch.device(device) if device is not None else _CPU
        n, width, tensor, mask = len(self), int(self.index["width"]), None, None
        seen = torch.zeros(n, dtype=torch.bool, device=_CPU)
        for rows, acts in self:
            t = acts.tensor.to(device)
            if tensor is None:
                shape = (n, t.shape[1], width, t.shape[3]) if self.position == "all" else (n, *t.shape[1:])
                tensor = torch.zeros(shape, device=device)
                if self.position == "all":
                    mask = torch.zeros(n, width, dtype=torch.bool, device=device)
            at = rows.to(device)
            if self.position == "all":
                tensor[at, :, : t.shape[2]] = t
                mask[at, : t.shape[2]] = acts.mask.to(device)
            else:
                tensor[at] = t
            seen[rows] = True
        if not bool(seen.all()):
            raise ValueError(f"{self.folder}: {int((~seen).sum())} of {n} prompts are missing from the shards; "
                             "the folder is incomplete: capture again")
        return Activations(tensor, self.layers, self.hook_names, self.model_name, self.position, mask,
                           dict(self.meta))


def write_shards(folder: str | os.PathLike, rows: Iterable[tuple[int, Tensor]], lengths: list[int],
                 header: dict, *, shard_size: int) -> ActivationShards:
    """Write (prompt index, float32 "layer d" / "layer len d") rows ``shard_size`` at a time.

    ``lengths``: every prompt's token count; ``header``: layers, hook_names, model_name,
    position, meta. Replaces an existing shard folder at ``folder``, refuses anything else."""
    folder = Path(folder)
    if folder.exists() and not (folder / INDEX).is_file() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{folder} exists and is not a steer-lens activation shard folder; "
                         "pass a new path (or an empty folder) as out=")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        shards, buffer = [], []
        for row in rows:
            buffer.append(row)
            if len(buffer) == shard_size:
                shards.append(_write_shard(tmp, len(shards), buffer, header["position"]))
                buffer = []
        if buffer:
            shards.append(_write_shard(tmp, len(shards), buffer, header["position"]))
        index = {"kind": KIND, "format": FORMAT_VERSION, **header, "n": len(lengths),
                 "width": max(lengths), "shard_size": shard_size, "dtype": "float32", "shards": shards}
        (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders; give the usual permissions
        _replace_folder(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return ActivationShards(folder)


def _write_shard(folder: Path, number: int, rows: list[tuple[int, Tensor]], position: str) -> dict:
    from safetensors.torch import save_file

    name = f"shard-{number:05d}.safetensors"
    index = torch.tensor([i for i, _ in rows], dtype=torch.int64, device=_CPU)
    tensors = {"index": index}
    acts = [a.to(_CPU) for _, a in rows]
    if position == "all":
        lens = torch.tensor([a.shape[1] for a in acts], device=_CPU)
        width = int(lens.max())
        tensor = torch.zeros(len(acts), acts[0].shape[0], width, acts[0].shape[2], device=_CPU)
        for k, a in enumerate(acts):
            tensor[k, :, : a.shape[1]] = a
        tensors["mask"] = torch.arange(width, device=_CPU) < lens[:, None]
    else:
        tensor = torch.stack(acts)
    tensors["tensor"] = tensor
    save_file(tensors, str(folder / name))
    return {"file": name, "n": len(rows)}


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; an old ``folder`` is moved aside first and deleted after."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old")) / "old"
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old.parent)
