"""A strength sweep that runs the unsteered lower blocks once: ``sweep(model, items, plan, strengths)``.

Equal to ``[evaluate(model, items, plan=plan, strength=s) for s in strengths]`` (positions "all",
relative scale with ``plan.norms``) but, when every item's choices differ only in their last
continuation token (one token each as SST-2's " negative"/" positive" on SmolLM2, or " (A"/" (B"
whose " (" is shared), each batch's residual entering the lowest steered block ``k``
(``blocks.k.*``) over prompt + shared continuation tokens is computed once
(``model(tokens, stop_at_layer=k)``, left-padded), kept for the whole sweep (n_items x length x
d_model floats), and only blocks k..n-1 run per strength, through ``model(residual,
start_at_layer=k, logits_to_keep=L)`` inside ``plan.apply(model, s)``: the last L positions give
every choice's L scored tokens in one pass (``evaluate`` needs a cached continuation pass).

TransformerBridge's ``start_at_layer`` still executes blocks 0..k-1 on the injected residual and
then discards their output, so on its own it saves nothing: while the upper part runs, blocks
0..k-1 are made pass-through (an instance ``forward`` returning its hidden states, removed in a
``finally``; HF decoder layers return their hidden states as one tensor in transformers 5, checked
against the full forward on seven tiny families in tests/unit/test_sweep.py). Hooks the caller
put on those blocks therefore do not fire in the upper pass; the steered hooks are all at block k
or above. The attention mask and position ids are those of the
full forward (the HF model sees the same mask and sequence length), and the steering context is
the one ``evaluate`` uses (its position tracker sees the mask: left padding is never steered).

If any item's choices differ before their last token (e.g. multi-token answers " red"/" blue" on
a byte-level tokenizer), the plan lacks a norm for a hook (``steer`` would then measure it on
the first forward, which differs here) or steers a hook outside the blocks, the sweep falls back to ``evaluate`` per strength: still
correct, no saving.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .data import Item
from .evaluate import EvalResult, _item_rows, _majority, evaluate, summarise
from .steer import check_strength
from .tokens import pad

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def first_steered_block(plan) -> int:
    """The lowest block index among the plan's hooks (``blocks.<i>.<hook>``)."""
    hooks = list(plan.rfms) if plan.mode == "field" else list(plan.vectors)
    layers = [_BLOCK.match(h) for h in hooks]
    if not hooks or any(m is None for m in layers):
        raise ValueError(f"sweep needs hooks named 'blocks.<i>.<hook>', got {hooks!r}")
    return min(int(m.group(1)) for m in layers)


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


def _last_token_differs(rows) -> bool:
    """Every item's choices share all continuation tokens but their last one (e.g. " (A" / " (B",
    or one token each): one pass over prompt + shared tokens scores them all."""
    return all(len({len(c) for c in conts}) == 1 and len(conts[0]) >= 1
               and all(c[:-1] == conts[0][:-1] for c in conts) for _, conts, _ in rows)


def lower_residuals(model, prompts: Sequence[list[int]], k: int, batch_size: int) \
        -> list[tuple[list[int], Float[Tensor, "batch pos d_model"], Int[Tensor, "batch pos"]]]:
    """Per batch (longest prompts first, as ``score_items``): item indices, the residual entering
    block ``k`` (left-padded) and the attention mask."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = []
    with torch.no_grad():
        for b in range(0, len(order), batch_size):
            chunk = order[b: b + batch_size]
            batch = pad(model, [(prompts[i], 0) for i in chunk], padding_side="left")
            resid = model(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=k)
            out.append((chunk, resid, batch.attention_mask))
    return out


def _upper_scores(model, batches, rows, k: int) -> list[tuple[list[float], list[int]]]:
    """Per item: (summed log-prob of each choice's scored tokens, their count) from blocks k.. on
    the kept residuals of prompt + shared continuation tokens (the last L positions predict a
    choice's L continuation tokens; left padding puts every row's end in the last column)."""
    scores: dict[int, tuple[list[float], list[int]]] = {}
    with torch.no_grad(), skip_blocks(model, k):
        for chunk, resid, mask in batches:
            keep = max(len(rows[i][1][0]) for i in chunk)
            logits = model(resid, attention_mask=mask, start_at_layer=k, logits_to_keep=keep)
            lp = torch.log_softmax(logits[:, -keep:].float(), dim=-1).cpu()
            for r, i in enumerate(chunk):
                _, conts, starts = rows[i]
                off = keep - len(conts[0])
                sums = [sum(float(lp[r, off + j, t]) for j, t in enumerate(c) if j >= st)
                        for c, st in zip(conts, starts)]
                scores[i] = (sums, [max(0, len(c) - st) for c, st in zip(conts, starts)])
            if hasattr(model, "_last_hf_cache"):
                del model._last_hf_cache
    return [scores[i] for i in range(len(rows))]


def sweep(model, items: Sequence[Item], plan, strengths: Sequence[float], *, batch_size: int = 8,
          chat_template: bool | None = None, seed: int = 0) -> list[EvalResult]:
    """``evaluate(model, items, plan=plan, strength=s)`` for every ``s`` in ``strengths`` (same
    scores within float tolerance, same predictions), computing blocks below the plan's lowest
    steered block once per batch. Falls back to ``evaluate`` per strength when some item's
    choices differ before their last token, a hook has no norm in ``plan.norms`` or is not inside
    a block (e.g. ``hook_embed``)."""
    items = list(items)
    if not items:
        raise ValueError("no items to sweep; pass at least one Item")
    strengths = [check_strength(s) for s in strengths]
    rows = [_item_rows(model, it, chat_template) for it in items]
    hooks = plan.rfms if plan.mode == "field" else plan.vectors
    if (not _last_token_differs(rows) or any(h not in plan.norms for h in hooks)
            or any(_BLOCK.match(h) is None for h in hooks)):
        return [evaluate(model, items, plan=plan, strength=s, batch_size=batch_size,
                         chat_template=chat_template, seed=seed) for s in strengths]
    k = first_steered_block(plan)
    plan.check_compatible(model)
    batches = lower_residuals(model, [pr + conts[0][:-1] for pr, conts, _ in rows], k, batch_size)
    majority = _majority(items)
    name = str(getattr(model.cfg, "model_name", "?"))
    out = []
    for s in strengths:
        with plan.apply(model, s):
            scores = _upper_scores(model, batches, rows, k)
        out.append(summarise(items, scores, majority_rate=majority, seed=seed,
                             meta={"strength": float(s), "model": name, "sweep_from_block": k}))
    return out
