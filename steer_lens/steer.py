"""Add strength × vector to hook points of a TransformerBridge, as a context manager.

Positions are tracked across KV-cache decode steps: a pre-forward hook on the wrapped HF
model reads how many tokens are already cached (attention-mask length minus new tokens),
so "prompt" steers exactly the prompt's real tokens and "generated" every generated token,
the first one included (its residual is computed in the first decode step). Left padding
is never steered. Hooks are removed in a ``finally``, also when the body raises.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator, Mapping

import torch
from jaxtyping import Bool, Float
from torch import Tensor

POSITIONS = ("all", "prompt", "generated")
SCALES = ("relative", "absolute")


@dataclass
class _CallState:
    """What the current forward call covers: positions [offset, offset+s) of a sequence."""

    offset: int = 0
    real: Bool[Tensor, "batch pos"] | None = None  # real (non-pad) tokens of this call
    prompt_len: int | None = None
    prev_ids: Tensor | None = None
    norms: dict[str, float] = field(default_factory=dict)


def _track_positions(state: _CallState):
    """Forward pre-hook (with kwargs) on the HF model that updates ``state`` per call."""

    def pre_hook(module, args, kwargs):
        ids = args[0] if args and torch.is_tensor(args[0]) else kwargs.get("input_ids")
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        s = ids.shape[1]
        mask = kwargs.get("attention_mask")
        total = mask.shape[-1] if torch.is_tensor(mask) and mask.dim() == 2 else s
        state.offset = total - s
        real = mask[:, -s:].bool() if torch.is_tensor(mask) and mask.dim() == 2 else None
        state.real = real
        if state.offset == 0:  # fresh forward: a new prompt, or a no-cache recompute
            prev = state.prev_ids
            extends = (prev is not None and ids.dim() == 2 and prev.shape[0] == ids.shape[0]
                       and s > prev.shape[1] and torch.equal(ids[:, : prev.shape[1]], prev))
            if not extends:
                state.prompt_len = s
            state.prev_ids = ids if ids.dim() == 2 else None
        return None

    return pre_hook


def _position_mask(state: _CallState, positions: str, batch: int, s: int, device: torch.device) -> Tensor:
    """Bool "batch pos" of the positions of this call to steer, on ``device`` (the residual's)."""
    absolute = torch.arange(state.offset, state.offset + s, device=device)
    prompt_len = state.prompt_len if state.prompt_len is not None else state.offset + s
    if positions == "prompt":
        keep = absolute < prompt_len
    elif positions == "generated":
        keep = absolute >= prompt_len
    else:
        keep = torch.ones(s, dtype=torch.bool, device=device)
    keep = keep.expand(batch, s)
    return keep & state.real.to(device) if state.real is not None else keep


def resid_scale(x: Float[Tensor, "batch pos d"], real: Tensor | None) -> float:
    """Median residual norm over real tokens (robust to attention-sink tokens), computed in
    float32 on the residual's device whatever its dtype."""
    norms = x.float().norm(dim=-1)
    norms = norms[real.to(x.device)] if real is not None else norms.flatten()
    return float(norms.median())


def check_strength(strength: float) -> float:
    if not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ValueError(f"strength must be a finite number, got {strength!r}")
    return float(strength)


@contextlib.contextmanager
def steer(
    model,
    vectors: Mapping[str, Float[Tensor, " d_model"] | Callable[[Tensor], Tensor]],
    strength: float = 1.0,
    *,
    positions: str = "all",
    scale: str = "relative",
    norms: Mapping[str, float] | None = None,
) -> Iterator[None]:
    """Add ``strength × vector`` at each hook point while the body runs.

    ``scale="relative"``: each vector is unit-normalised and scaled by the hook's typical
    residual norm (``norms[hook]`` if given, else the median token norm of the first
    forward pass in the context), so one strength means the same across layers and models.
    ``scale="absolute"``: the raw vector is added. ``positions``: "all" real tokens,
    "prompt" tokens only, or "generated" tokens only. Works with ``model(...)``,
    ``run_with_cache`` and ``generate`` (with or without KV cache).

    A value of ``vectors`` may also be a callable mapping the hook's input x ("batch pos d")
    to per-token directions ("batch pos d", unit or zero, float32), evaluated at every forward
    call (context-dependent steering, see ``steer_lens.field``); it adds ``strength × size ×
    direction[b, t]`` at the steered positions, with the same position and scale rules.
    """
    strength = check_strength(strength)
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    d = model.cfg.d_model
    prepared: dict[str, Tensor] = {}
    for name, vec in vectors.items():
        if name not in model.hook_dict:
            raise ValueError(f"the model has no hook point {name!r}; use names like "
                             "'blocks.3.hook_resid_post'")
        if name.endswith("hook_resid_mid"):
            # on a TransformerBridge this hook is ln2's input only: an addition there reaches the
            # MLP but never the residual stream, which is not what "steer the residual" means
            raise ValueError(f"{name!r} cannot be steered: on a TransformerBridge it is only the MLP "
                             "norm's input, so the addition never reaches the residual stream. Steer "
                             f"{name.replace('hook_resid_mid', 'hook_attn_out')!r} (added to the attention "
                             "output, hence to the residual after attention) instead")
        if callable(vec):  # a direction field (steer_lens.field): x "batch pos d" -> "batch pos d"
            prepared[name] = vec
            continue
        vec = torch.as_tensor(vec, dtype=torch.float32).flatten()
        if vec.shape[0] != d:
            raise ValueError(f"steering vector for {name} has width {vec.shape[0]} but the model's "
                             f"d_model is {d}; map it into the target's width first")
        if not torch.isfinite(vec).all():
            raise ValueError(f"steering vector for {name} contains NaN/inf")
        if scale == "relative":
            if float(vec.norm()) == 0:
                raise ValueError(f"steering vector for {name} is zero; it has no direction")
            vec = vec / vec.norm()
        prepared[name] = vec
    state = _CallState(norms=dict(norms or {}))

    def make_hook(name: str):
        def hook(x, hook=None):
            if strength == 0.0:
                return x
            batch, s = x.shape[0], x.shape[1]
            mask = _position_mask(state, positions, batch, s, x.device)
            if not bool(mask.any()):
                return x
            size = 1.0
            if scale == "relative":
                if name not in state.norms:
                    state.norms[name] = resid_scale(x.detach(), state.real)
                size = state.norms[name]
            if not callable(prepared[name]) and prepared[name].device != x.device:
                prepared[name] = prepared[name].to(x.device)  # once, not at every decode step
            direction = prepared[name](x.detach()) if callable(prepared[name]) else prepared[name]
            # strength x size x direction in float32, rounded once to the residual's dtype, then added
            delta = ((strength * size) * direction.to(x.device)).to(x.dtype)
            return torch.where(mask.unsqueeze(-1), x + delta, x)

        return hook

    handle = model.original_model.register_forward_pre_hook(
        _track_positions(state), with_kwargs=True
    )
    try:
        with model.hooks(fwd_hooks=[(name, make_hook(name)) for name in prepared]):
            yield
    finally:
        handle.remove()
