"""Activations streamed to sharded safetensors files, read back whole or one shard at a time.

``capture(model, prompts, ..., out=folder, shard_size=k)`` writes::

    folder/index.json                 kind, format, layers, hook names, model, position, n, shards
    folder/shard-00000.safetensors    "index" int64 "k": each row's position in the prompt list;
                                      "tensor" float32 "k layer d" for "last"/"mean"; for "all"
                                      "tokens layer d" (the rows' real tokens one after another,
                                      no padding) and "lengths" int64 "k"
    ...

Rows sit in the order they were captured (length-sorted batches), so ``index`` maps them
back; ``ActivationShards.load()`` scatters them into input order, equal to the in-memory
capture. The folder is built under a temporary name next to ``folder`` and renamed into
place when complete: a crash leaves the old folder (or none), never a partial one.
Writing holds about two shards in memory (the shard tensor, filled while the buffered rows
are freed, and the bytes safetensors serialises); ``benchmarks/bench_capture_memory.py``
measures it.
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

    def _read(self, i: int) -> dict[str, Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.folder / self.index["shards"][i]["file"]))

    def shard(self, i: int) -> tuple[Int[Tensor, " k"], Activations]:
        """Shard ``i``: (prompt positions "k", its Activations with k rows), on the CPU; for "all"
        padded to the shard's longest prompt, with its mask."""
        data = self._read(i)
        tensor, mask = data["tensor"], None
        if self.position == "all":
            lengths = data["lengths"]
            width = int(lengths.max())
            tensor = torch.zeros(len(lengths), len(self.layers), width, data["tensor"].shape[-1], device=_CPU)
            for k, (start, n) in enumerate(_spans(lengths)):
                tensor[k, :, :n] = data["tensor"][start : start + n].transpose(0, 1)
            mask = torch.arange(width, device=_CPU) < lengths[:, None]
        return data["index"], Activations(tensor, self.layers, self.hook_names, self.model_name,
                                          self.position, mask, dict(self.meta))

    def __iter__(self) -> Iterator[tuple[Int[Tensor, " k"], Activations]]:
        for i in range(self.num_shards):
            yield self.shard(i)

    def load(self, device: str | torch.device | None = None) -> Activations:
        """All shards as one Activations in prompt order (on ``device``, default CPU)."""
        device = torch.device(device) if device is not None else _CPU
        n, width, tensor, mask = len(self), int(self.index["width"]), None, None
        seen = torch.zeros(n, dtype=torch.bool, device=_CPU)
        for i in range(self.num_shards):
            data = self._read(i)
            rows, t = data["index"], data["tensor"].to(device)
            if tensor is None:
                shape = (n, len(self.layers), width, t.shape[-1]) if self.position == "all" else (n, *t.shape[1:])
                tensor = torch.zeros(shape, device=device)
                if self.position == "all":
                    mask = torch.zeros(n, width, dtype=torch.bool, device=device)
            if self.position == "all":
                for row, (start, k) in zip(rows.tolist(), _spans(data["lengths"])):
                    tensor[row, :, :k] = t[start : start + k].transpose(0, 1)
                    mask[row, :k] = True
            else:
                tensor[rows.to(device)] = t
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
    """Write one shard file from ``rows``, which it empties as it copies them (so a buffered row
    and its copy in the shard tensor are not both held for the whole shard)."""
    from safetensors.torch import save_file

    name = f"shard-{number:05d}.safetensors"
    n = len(rows)
    tensors = {"index": torch.tensor([i for i, _ in rows], dtype=torch.int64, device=_CPU)}
    if position == "all":  # "layer len d" rows -> "tokens layer d", no padding stored
        lengths = [a.shape[1] for _, a in rows]
        layers, width = rows[0][1].shape[0], rows[0][1].shape[2]
        flat = torch.empty(sum(lengths), layers, width, device=_CPU)
        start = 0
        for k in range(n):
            flat[start : start + lengths[k]] = rows[k][1].transpose(0, 1)
            start += lengths[k]
            rows[k] = None  # free the row now
        tensors["tensor"] = flat
        tensors["lengths"] = torch.tensor(lengths, dtype=torch.int64, device=_CPU)
    else:
        tensors["tensor"] = torch.stack([a.to(_CPU) for _, a in rows])
    rows.clear()
    save_file(tensors, str(folder / name))
    return {"file": name, "n": n}


def _spans(lengths: Tensor) -> list[tuple[int, int]]:
    """(start, length) of each row in a shard's "tokens layer d" tensor."""
    out, start = [], 0
    for n in lengths.tolist():
        out.append((start, n))
        start += n
    return out


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; an old ``folder`` is moved aside first and deleted after."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old")) / "old"
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old.parent)
