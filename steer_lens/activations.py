"""Typed activation capture through TransformerLens hook points.

`capture(model, prompts, layers=[...])` runs the model in length-sorted batches, pools each
requested hook's output per prompt ("last" token, "mean" over the answer span, or "all"
positions) and stops the forward pass right after the last requested layer. The result does
not depend on batch size or padding side.

Activations are float32 (pooled in float32, whatever the model's dtype). They stay on the
device where they were computed unless ``offload="cpu"`` moves each batch to the CPU as it
goes; ``out=folder`` streams batches to sharded safetensors files (``steer_lens.shards``),
so memory is bounded by ``shard_size`` prompts, not by the dataset.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from .io import atomic_path
from .tokens import Prompt, encode_all, pad

HOOKS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
}
POSITIONS = ("last", "mean", "all")
FORMAT_VERSION = 1


class _StopForward(Exception):
    """Raised from the last hook so no work is done past the last requested layer."""


def resolve_layers(model, layers: Sequence[int]) -> list[int]:
    """Check layer indices against the model (negative indices count from the end)."""
    n = model.cfg.n_layers
    if len(layers) == 0:
        raise ValueError("no layers given; pass e.g. layers=[0, -1]")
    out = []
    for layer in layers:
        if not -n <= int(layer) < n:
            raise ValueError(f"layer {layer} is out of range for a model with {n} layers (0..{n - 1})")
        out.append(int(layer) % n)
    return out


def hook_name(model, hook: str, layer: int) -> str:
    """Full hook name for a short name (`resid_post`) or a template with ``{layer}``."""
    template = HOOKS.get(hook, hook)
    if "{layer}" not in template:
        raise ValueError(
            f"unknown hook {hook!r}; use one of {sorted(HOOKS)} or a template such as "
            "'blocks.{layer}.hook_resid_post'"
        )
    name = template.format(layer=layer)
    if name not in model.hook_dict:
        raise ValueError(f"the model has no hook point {name!r}; check the hook name {hook!r}")
    return name


@dataclass
class Activations:
    """Pooled activations: ``tensor`` is "n layer d_model" ("n layer pos d_model" for "all")."""

    tensor: Float[Tensor, "n layer d_model"] | Float[Tensor, "n layer pos d_model"]
    layers: list[int]
    hook_names: list[str]
    model_name: str
    position: str
    mask: Bool[Tensor, "n pos"] | None = None
    meta: dict = field(default_factory=dict)

    def at(self, layer: int) -> Tensor:
        """Activations at one model layer index (not list position)."""
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not captured; captured layers are {self.layers}")
        return self.tensor[:, self.layers.index(layer)]

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def save(self, path) -> None:
        """One safetensors file; metadata as JSON in its header (no pickle)."""
        from safetensors.torch import save_file

        tensors = {"tensor": self.tensor.detach().cpu().contiguous()}  # files are written from CPU memory
        if self.mask is not None:
            tensors["mask"] = self.mask.cpu().contiguous()
        meta = {
            "format": FORMAT_VERSION, "layers": self.layers, "hook_names": self.hook_names,
            "model_name": self.model_name, "position": self.position, "meta": self.meta,
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"steer_lens": json.dumps(meta)})

    @classmethod
    def load(cls, path) -> "Activations":
        """Read a file written by ``save``, or a whole shard folder written by ``capture(out=...)``
        (``steer_lens.shards.ActivationShards(folder)`` reads one shard at a time)."""
        from pathlib import Path

        from safetensors import safe_open

        if Path(path).is_dir():
            from .shards import ActivationShards

            return ActivationShards(path).load()
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if "steer_lens" not in header:
                raise ValueError(f"{path} is not a steer-lens activations file (no metadata)")
            meta = json.loads(header["steer_lens"])
            if meta.get("format", 0) > FORMAT_VERSION:
                raise ValueError(f"{path} has format {meta['format']}; upgrade steer-lens to read it")
            tensor = f.get_tensor("tensor")
            mask = f.get_tensor("mask") if "mask" in f.keys() else None
        return cls(tensor, meta["layers"], meta["hook_names"], meta["model_name"],
                   meta["position"], mask, meta.get("meta", {}))


def _pool(act: Tensor, batch, position: str) -> Float[Tensor, "batch ..."]:
    """act "batch pos d" -> float32 "batch d" (or "batch pos d" for "all").

    Indices come from the batch's masks, so left and right padding pool the same tokens;
    padded positions are excluded with ``where`` (not multiplied by 0, which keeps NaN).
    Means are summed in float32 (a bf16 sum over a long span loses ~3 significant digits).
    """
    if position == "last":
        rows = torch.arange(act.shape[0], device=act.device)
        return act[rows, batch.last_index.to(act.device)].float()
    if position == "mean":
        span = batch.span.to(act.device).unsqueeze(-1)
        total = torch.where(span, act.float(), 0.0).sum(1)
        return total / span.sum(1).clamp_min(1)
    return act.float()


def capture(
    model,
    prompts: Sequence[Prompt],
    *,
    layers: Sequence[int],
    hook: str = "resid_post",
    position: str = "last",
    chat_template: bool | None = None,
    batch_size: int = 16,
    padding_side: str = "right",
    progress: bool | None = None,
    offload: str | None = None,
    out: str | os.PathLike | None = None,
    shard_size: int = 1024,
    meta: dict | None = None,
):
    """Capture hook outputs for every prompt at the given layers.

    ``position``: "last" (last token), "mean" (mean over the completion span of
    ``(prompt, completion)`` pairs, or all real tokens of plain prompts) or "all".
    ``chat_template=None`` uses the tokenizer's template when it has one.

    Shapes: ``tensor`` is "n layer d_model" for "last"/"mean". For "all" it is
    "n layer max_len d_model" with each prompt's tokens at ``[:len]`` and zeros after,
    and ``mask`` "n max_len" is ``arange(max_len) < len``, whatever the padding side.
    Values are float32.

    Per-head hooks ("batch pos head d_head", e.g. ``attn.hook_z``) are flattened to
    ``head * d_head`` features (head-major), so ``d_model`` above reads as that width.

    ``padding_side`` ("right" or "left") pads each length-sorted batch on that side; the
    bridge derives rotary positions from the attention mask (``cumsum(mask) - 1``), so
    both sides and one-prompt-at-a-time give the same activations to float tolerance.

    Where the result lives: by default (``offload=None``) on the device where it was
    computed (the model's, so the statistics that follow run there too); ``offload="cpu"``
    moves each batch to the CPU as soon as it is pooled (big models on a GPU, big sets).
    ``out=folder`` streams instead of returning everything at once: batches go to the CPU
    and, every ``shard_size`` prompts, into ``folder/shard-00000.safetensors``, ... plus
    ``folder/index.json`` (written in a temporary folder, renamed into place at the end);
    memory then grows with ``shard_size`` and ``batch_size``, not with the dataset (about
    two shards of real tokens, the shard tensor and safetensors' serialised copy, plus one
    batch's activations).
    It returns a lazy ``steer_lens.shards.ActivationShards`` (``.load()`` reads it whole,
    equal to the in-memory capture; ``Activations.load(folder)`` too). ``meta``: JSON-able
    entries (e.g. labels) added to the result's ``meta`` and saved with it.
    """
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if offload not in (None, "cpu"):
        raise ValueError(f"offload must be None (keep activations where computed) or 'cpu', got {offload!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 (prompts per shard file), got {shard_size}")
    if len(prompts) == 0:
        raise ValueError("no prompts given; pass at least one prompt")
    layers = resolve_layers(model, layers)
    names = [hook_name(model, hook, layer) for layer in layers]
    encoded = encode_all(model, prompts, chat_template=chat_template)  # validates all first
    lengths = [len(ids) for ids, _ in encoded]
    meta = {**(meta or {}), "hook": hook, "n_prompts": len(prompts)}
    rows = _captured_rows(model, encoded, names, layers, position, batch_size, padding_side, progress,
                          offload="cpu" if out is not None else offload)
    if out is not None:
        from .shards import write_shards

        header = dict(layers=layers, hook_names=names, model_name=model.cfg.model_name,
                      position=position, meta=meta)
        return write_shards(out, rows, lengths, header, shard_size=shard_size)
    tensor = None  # allocated at the first row: memory is the result plus one batch
    for idx, act in rows:
        if tensor is None:
            shape = (len(prompts), len(layers), max(lengths), act.shape[-1]) if position == "all" else (
                len(prompts), *act.shape)
            tensor = torch.zeros(shape, device=act.device)
        if position == "all":
            tensor[idx, :, : act.shape[1]] = act
        else:
            tensor[idx] = act
    mask = None
    if position == "all":
        mask = torch.arange(tensor.shape[2], device=tensor.device) < torch.tensor(lengths, device=tensor.device)[:, None]
    return Activations(tensor, layers, names, model.cfg.model_name, position, mask, meta)


def _captured_rows(model, encoded, names: list[str], layers: list[int], position: str, batch_size: int,
                   padding_side: str, progress: bool | None, offload: str | None
                   ) -> Iterator[tuple[int, Tensor]]:
    """Run length-sorted batches; yield (prompt index, float32 "layer d" or "layer len d") per
    prompt, in batch order. Checks every batch for NaN/inf."""
    last_name = names[layers.index(max(layers))]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # stable: ties keep order
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    show = progress if progress is not None else len(chunks) > 8
    for chunk in tqdm(chunks, desc=f"capture {model.cfg.model_name}", disable=not show):
        sub = pad(model, [encoded[i] for i in chunk], padding_side=padding_side)
        store: dict[str, Tensor] = {}

        def saver(name, _sub=sub):
            def save(tensor, hook):
                store[name] = _pool(tensor.detach().flatten(2), _sub, position)  # heads: h*d_head
                if name == last_name:
                    raise _StopForward
                return tensor
            return save

        hooks = [(name, saver(name)) for name in dict.fromkeys(names)]
        try:
            with torch.no_grad(), model.hooks(fwd_hooks=hooks):
                model(sub.tokens, attention_mask=sub.attention_mask)
        except _StopForward:
            pass
        finally:
            if hasattr(model, "_last_hf_cache"):
                del model._last_hf_cache
        per_layer = [store[name] for name in names]  # float32 "batch d" or "batch pos d"
        store.clear()
        if not all(bool(torch.isfinite(a).all()) for a in per_layer):
            raise ValueError(f"{model.cfg.model_name} produced NaN/inf activations; check dtype and inputs")
        if offload == "cpu":
            per_layer = [a.cpu() for a in per_layer]
        if position != "all":
            stacked = torch.stack(per_layer, dim=1)
            for row, idx in enumerate(chunk):
                yield idx, stacked[row]
            continue
        real = sub.attention_mask.to(per_layer[0].device).bool()
        for row, idx in enumerate(chunk):  # drop pads on either side -> "layer len d" (no batch-sized copy)
            yield idx, torch.stack([a[row, real[row]] for a in per_layer])
