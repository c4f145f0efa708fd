"""Running a range of a bridge's blocks on a residual, with HF KV caches: what ``steer_lens.sweep`` builds on.

``run_blocks(model, x, mask, pos, start, stop)`` runs blocks ``start``..``stop``-1 (from the tokens when
``start`` is None; to the logits when ``stop`` is None). TransformerBridge's ``start_at_layer`` still executes
blocks 0..start-1 on the injected residual and then discards their output, so ``skip_blocks`` makes them
pass-through meanwhile (an instance ``forward`` returning its hidden states, removed in a ``finally``).

A cache that only some blocks filled still has to look complete to HF, which derives the cached length and
the attention masks from its layers: ``pad_cache`` gives every layer shorter than asked zero keys and values
up to that length (never read: the blocks they belong to do not run in that pass). ``cache_rows`` copies a
cache with its batch rows selected (and repeated), leaving the original as it was.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import Tensor


@contextlib.contextmanager
def skip_blocks(model, k: int) -> Iterator[None]:
    """Blocks 0..k-1 return their input unchanged while the body runs (for ``start_at_layer=k``,
    where their output is discarded anyway); restored in a ``finally``."""
    patched = []
    try:
        for block in list(model.blocks)[:k]:
            # object.__setattr__: a bridge component's own __setattr__ would forward the
            # assignment to the wrapped HF layer
            object.__setattr__(block, "forward", _pass_through)
            patched.append(block)
        yield
    finally:
        for block in patched:
            object.__delattr__(block, "forward")


def _pass_through(hidden_states, *args, **kwargs):
    return hidden_states


def positions(mask: Tensor) -> Tensor:
    """Position ids of a left-padded batch, as the bridge derives them from the mask."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def drop_hf_cache(model) -> None:
    if hasattr(model, "_last_hf_cache"):
        del model._last_hf_cache


def run_blocks(model, x: Tensor, mask: Tensor, pos: Tensor, start: int | None, stop: int | None, **kw):
    """Blocks ``start``..``stop``-1 of ``x`` (token ids when ``start`` is None, else the residual
    entering block ``start``; ``stop`` None: to the logits)."""
    if stop is not None:
        kw["stop_at_layer"] = stop
    if start is None:
        return model(x, attention_mask=mask, position_ids=pos, **kw)
    with skip_blocks(model, start):
        return model(x, attention_mask=mask, position_ids=pos, start_at_layer=start, **kw)


def sliding_window(model) -> int | None:
    """The model's attention window if any of its layers attends to the last few keys only (Gemma 2/3,
    Mistral), else None."""
    cfg = model.original_model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    w = getattr(cfg, "sliding_window", None)
    if not isinstance(w, int) or w <= 0 or getattr(cfg, "use_sliding_window", True) is False:
        return None
    return w


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.original_model.config)


def pad_cache(cache, length: int, rows: int, device) -> None:
    """Extend every cache layer whose cached length is below ``length`` with zero keys and values
    (``rows`` batch rows): the skipped or not yet reached blocks', never read."""
    ref = next((layer.keys for layer in cache.layers if layer.is_initialized and layer.keys.numel()), None)
    for layer in cache.layers:
        have = layer.get_seq_length() if layer.is_initialized and layer.keys.numel() else 0
        if have < length:
            heads, dim = (ref.shape[1], ref.shape[3]) if ref is not None else (1, 1)
            shape = (rows, heads, length - have, dim)
            zeros = torch.zeros(shape, dtype=ref.dtype if ref is not None else torch.float32, device=device)
            layer.update(zeros, zeros.clone())


def cache_rows(cache, index: Tensor):
    """A copy of ``cache`` keeping (and repeating) batch rows ``index``; ``cache`` itself is unchanged."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in out.layers:
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)
    return out


__all__ = ["cache_rows", "drop_hf_cache", "new_cache", "pad_cache", "positions", "run_blocks", "skip_blocks",
           "sliding_window"]
