"""A strength sweep that runs the unsteered lower blocks once: ``sweep(model, items, plan, strengths)``.

Equal to ``[evaluate(model, items, plan=plan, strength=s) for s in strengths]`` (positions "all",
relative scale with ``plan.norms``; same scores within float tolerance, same predictions), but the
residual entering the lowest steered block ``k`` (``blocks.k.*``) is computed once
(``model(tokens, stop_at_layer=k)``, left-padded batches, longest prompts first as ``evaluate``)
and only blocks k..n-1 run per strength, through ``model(residual, start_at_layer=k)`` inside
``plan.apply(model, s)``. Two layouts:

* **last token differs** (every item's choices share all continuation tokens but their last one:
  one token each as SST-2's " negative"/" positive" on SmolLM2, or " (A"/" (B" whose " (" is
  shared): one pass over prompt + shared continuation tokens, ``logits_to_keep=L`` giving every
  choice's L scored tokens at once.
* **choices differ earlier** (MMLU, ARC, arithmetic, SVAMP answers of several tokens): as
  ``evaluate``, the prompt runs once with a KV cache and the choices continue from it as rows of
  one batch; the residuals entering block k are kept for the prompt and for every choice's tokens,
  and per strength blocks k.. run the prompt (filling their KV cache) and then the choices. The
  cache layers of the skipped blocks are filled with zeros of the prompt's length: those blocks
  never read them, but HF derives the cached length and the attention masks from them.

**A shared prefix** (k-shot examples, a long instruction: every prompt starts with the same
``MIN_PREFIX`` = 64 tokens or more) runs once, as one row: its lower pass once, its upper blocks once per
strength under the same steering, and every item's own tokens continue from its KV cache (padding sits
between the prefix and the item's tokens, masked; positions continue from the prefix). On 4-shot prompts,
where the examples are about 80% of every prompt, most of the work goes. Not when the model has a sliding
attention window shorter than the longest row: the window would count the padding columns.

``SweepInputs`` holds the tokenized batches and the residuals entering the blocks asked for, so
one object serves many plans and many calls (a strength search's rounds, several candidate plans):
a plan steering from block k2 reuses the residual kept at a lower block k1 and runs only blocks
k1..k2-1 on it. ``sweep(..., inputs=SweepInputs(model, items))`` shares them.

Running a range of blocks (``steer_lens.block_runs``): TransformerBridge's ``start_at_layer`` still
executes blocks 0..k-1 on the injected residual and then discards their output, so on its own it saves
nothing: while the upper part runs, blocks 0..k-1 are made pass-through (HF decoder layers return their
hidden states as one tensor in transformers 5, checked against the full forward on seven tiny families
in tests/unit/test_sweep.py and, with a shared prefix, tests/unit/test_sweep_prefix.py). Hooks the caller
put on those blocks therefore do not fire in the upper pass; the steered hooks are all at block k
or above. Attention masks and position ids are those of ``evaluate``'s forwards, and the steering
context is the one ``evaluate`` uses (its position tracker sees the mask: left padding is never
steered).

If the plan lacks a norm for a hook (``steer`` would then measure it on the first forward, which
differs here) or steers a hook outside the blocks, the sweep falls back to ``evaluate`` per
strength: still correct, no saving.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .block_runs import (cache_rows, drop_hf_cache, new_cache, pad_cache, positions, run_blocks,  # noqa: F401
                         skip_blocks, sliding_window)  # skip_blocks: re-exported, where it was defined before
from .data import Item, origin
from .evaluate import EvalResult, _item_rows, _majority, evaluate, summarise
from .steer import check_strength
from .tokens import pad

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
MIN_PREFIX = 64  # shared prompt tokens from which SweepInputs runs them once (k-shot examples: 150-230)


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt shares, leaving each at least one token of its own."""
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    c = 0
    while c < n and all(p[c] == first[c] for p in prompts):
        c += 1
    return c


def first_steered_block(plan) -> int:
    """The lowest block index among the plan's hooks (``blocks.<i>.<hook>``)."""
    hooks = list(plan.rfms) if plan.mode == "field" else list(plan.vectors)
    layers = [_BLOCK.match(h) for h in hooks]
    if not hooks or any(m is None for m in layers):
        raise ValueError(f"sweep needs hooks named 'blocks.<i>.<hook>', got {hooks!r}")
    return min(int(m.group(1)) for m in layers)


def _last_token_differs(rows) -> bool:
    """Every item's choices share all continuation tokens but their last one (e.g. " (A" / " (B",
    or one token each): one pass over prompt + shared tokens scores them all."""
    return all(len({len(c) for c in conts}) == 1 and len(conts[0]) >= 1
               and all(c[:-1] == conts[0][:-1] for c in conts) for _, conts, _ in rows)


@dataclass
class _Batch:
    """One batch of items: prompts left-padded; with ``conts``, the choices as right-padded rows."""

    chunk: list[int]  # item indices
    tokens: Int[Tensor, "batch pos"]  # the items' own tokens (after a shared prefix)
    mask: Int[Tensor, "batch past_and_pos"]  # attention mask over the prefix (if any) and those tokens
    pos: Int[Tensor, "batch pos"]
    keep: int = 1  # last-token layout: the last ``keep`` positions score the choices
    # choices-differ layout: owner row of each choice, their tokens, the full mask and positions
    index: Tensor | None = None
    cont: Tensor | None = None
    cont_mask: Tensor | None = None
    full_mask: Tensor | None = None
    cont_pos: Tensor | None = None
    starts: Tensor | None = None


class SweepInputs:
    """``items`` tokenized and batched once for ``sweep``, and the residuals entering the blocks
    asked for (``level(k)``), kept for reuse by every plan and strength: the ``keep`` most recently
    used levels stay, a new level starts from the highest kept one below it.

    ``share_prefix``: when every prompt starts with the same ``min_prefix`` tokens or more (k-shot
    examples, a long instruction), those tokens (``prefix``) run once, as one row, and every item
    continues from their KV cache (module doc): the same scores within float tolerance for a
    fraction of the work."""

    def __init__(self, model, items: Sequence[Item], *, batch_size: int = 8, chat_template: bool | None = None,
                 keep: int = 2, share_prefix: bool = True, min_prefix: int = MIN_PREFIX):
        self.model, self.items = model, list(items)
        if not self.items:
            raise ValueError("no items to sweep; pass at least one Item")
        self.batch_size, self.chat_template, self.keep = batch_size, chat_template, max(1, keep)
        self.rows = [_item_rows(model, it, chat_template) for it in self.items]
        self.last_token = _last_token_differs(self.rows)
        prompts = self._prompt_ids()
        p = common_prefix(prompts) if share_prefix else 0
        # a sliding window counts padding columns: with padding between the prefix and an item's own
        # tokens it would see other keys than evaluate's left-padded rows, unless every row fits in it
        window = sliding_window(model)
        longest = max(len(pr) + max(len(c) for c in conts) for pr, conts, _ in self.rows)
        self.prefix = p if p >= max(1, min_prefix) and (window is None or longest < window) else 0
        self._levels: OrderedDict[int, list] = OrderedDict()
        self._prefix_levels: dict[int, Tensor] = {}
        if self.prefix:
            pb = pad(model, [(prompts[0][: self.prefix], 0)], padding_side="left")
            self._ptokens, self._pmask, self._ppos = pb.tokens, pb.attention_mask, positions(pb.attention_mask)
        self.batches = self._batches(prompts)

    def matches(self, items: Sequence[Item]) -> bool:
        return len(items) == len(self.items) and all(a is b or a == b for a, b in zip(items, self.items))

    def _batches(self, prompts: list[list[int]]) -> list[_Batch]:
        model, rows, P = self.model, self.rows, self.prefix
        order = sorted(range(len(rows)), key=lambda i: -len(prompts[i]))
        out = []
        for b in range(0, len(order), self.batch_size):
            chunk = order[b: b + self.batch_size]
            batch = pad(model, [(prompts[i][P:], 0) for i in chunk], padding_side="left")
            own = batch.attention_mask  # the items' own tokens; the prefix (all real) sits before them
            mask = torch.cat([torch.ones_like(own[:, :1]).expand(-1, P), own], dim=1) if P else own
            item = _Batch(chunk=chunk, tokens=batch.tokens, mask=mask, pos=positions(own) + P)
            if self.last_token:
                item.keep = max(len(rows[i][1][0]) for i in chunk)
            else:
                device = batch.tokens.device
                owner = [r for r, i in enumerate(chunk) for _ in rows[i][1]]
                conts = [c for i in chunk for c in rows[i][1]]
                item.index = torch.tensor(owner, device=device)
                cont = pad(model, [(c, 0) for c in conts], padding_side="right")
                item.cont, item.cont_mask = cont.tokens, cont.attention_mask
                item.full_mask = torch.cat([mask[item.index], cont.attention_mask], dim=1)
                steps = torch.arange(cont.tokens.shape[1], device=device)[None]
                item.cont_pos = mask.sum(1)[item.index][:, None] + steps
                item.starts = torch.tensor([s for i in chunk for s in rows[i][2]], device=device)
            out.append(item)
        return out

    def level(self, k: int) -> list:
        """Per batch, the residual entering block ``k``: a tensor (last-token layout) or a pair
        (prompt residual, choices' residual); with a shared prefix, of the items' own tokens only."""
        if k in self._levels:
            self._levels.move_to_end(k)
            return self._levels[k]
        below = [j for j in self._levels if j < k]
        j = max(below) if below else None
        pcache = None
        if self.prefix:
            self._prefix_levels[k], pcache = self._prefix_pass(j, k)
        if j is not None:
            res = [self._advance(b, self._levels[j][n], j, k, pcache) for n, b in enumerate(self.batches)]
        elif self.last_token and not self.prefix:
            res = [r for _, r, _ in lower_residuals(self.model, self._prompt_ids(), k, self.batch_size,
                                                    batches=self.batches)]
        else:
            res = [self._advance(b, None, None, k, pcache) for b in self.batches]
        self._levels[k] = res
        while len(self._levels) > self.keep:
            old, _ = self._levels.popitem(last=False)
            self._prefix_levels.pop(old, None)
        return res

    def _prompt_ids(self) -> list[list[int]]:
        """Per item, the tokens before its scored ones: the prompt (and, when only the last token of
        the choices differs, the choices' shared tokens)."""
        if self.last_token:
            return [pr + conts[0][:-1] for pr, conts, _ in self.rows]
        return [pr for pr, _, _ in self.rows]

    def _prefix_pass(self, start: int | None, stop: int | None):
        """The shared prefix through blocks ``start``..``stop``-1 (from its tokens when ``start`` is
        None; ``stop`` None: every block, under whatever steering is active): (its residual entering
        ``stop``, its KV cache, the other blocks' layers zero-filled)."""
        model = self.model
        x = self._ptokens if start is None else self._prefix_levels[start]
        cache = new_cache(model)
        with torch.no_grad():
            out = run_blocks(model, x, self._pmask, self._ppos, start, stop, past_key_values=cache,
                             **({"logits_to_keep": 1} if stop is None else {}))
        drop_hf_cache(model)
        pad_cache(cache, self.prefix, 1, self._ptokens.device)
        return out, cache

    def _past(self, pcache, b: _Batch) -> dict:
        """``past_key_values`` for batch ``b``: the prefix's cache, one copy per row (none without a prefix)."""
        if pcache is None:
            return {}
        return {"past_key_values": cache_rows(pcache, torch.zeros(len(b.chunk), dtype=torch.long,
                                                                   device=b.tokens.device))}

    def _advance(self, b: _Batch, resid, start: int | None, stop: int, pcache=None):
        """Blocks ``start``..``stop``-1 (from the tokens when ``start`` is None), unsteered."""
        with torch.no_grad():
            return self._forward(b, b.tokens if start is None else resid, start, stop, self._past(pcache, b))

    def _forward(self, b: _Batch, x, start: int | None, stop: int | None, past: dict, **kw):
        """Batch ``b`` through blocks ``start``..``stop``-1 on ``x`` (its tokens or residual; choices layout: a
        pair, prompt then choices, the choices continuing from the prompt's cache)."""
        model = self.model
        if self.last_token:
            out = run_blocks(model, x, b.mask, b.pos, start, stop, **past, **kw)
            drop_hf_cache(model)
            return out
        xp, xc = (x, b.cont) if start is None else x
        cache = past.get("past_key_values") or new_cache(model)
        rp = run_blocks(model, xp, b.mask, b.pos, start, stop, past_key_values=cache,
                        **({"logits_to_keep": 1} if stop is None else {}))
        pad_cache(cache, b.mask.shape[1], len(b.chunk), b.tokens.device)
        cache = cache_rows(cache, b.index)
        rc = run_blocks(model, xc, b.full_mask, b.cont_pos, start, stop, past_key_values=cache)
        drop_hf_cache(model)
        return rp, rc

    def _subset(self, b: _Batch, resid, keep: list[int]):
        """Batch ``b`` and its residual restricted to its rows ``keep`` (positions in ``b.chunk``),
        the padding columns no kept row attends to dropped: the batch ``evaluate`` would make of
        those items."""
        device, P = b.tokens.device, self.prefix
        r = torch.tensor(keep, device=device)
        mask = b.mask[r]
        t = int((mask[:, P:].sum(0) > 0).nonzero()[0])

        def cut(m):  # drop padding columns t of the items' own part; the prefix stays
            return torch.cat([m[:, :P], m[:, P + t:]], dim=1)

        nb = _Batch(chunk=[b.chunk[j] for j in keep], tokens=b.tokens[r][:, t:], mask=cut(mask),
                    pos=b.pos[r][:, t:], keep=b.keep)
        if self.last_token:
            return nb, resid[r][:, t:]
        rp, rc = resid
        owner = b.index.tolist()
        new_row = {j: n for n, j in enumerate(keep)}
        sel = [c for c, o in enumerate(owner) if o in new_row]
        s = torch.tensor(sel, device=device)
        nb.index = torch.tensor([new_row[owner[c]] for c in sel], device=device)
        nb.cont, nb.cont_mask, nb.starts = b.cont[s], b.cont_mask[s], b.starts[s]
        nb.full_mask, nb.cont_pos = cut(b.full_mask[s]), b.cont_pos[s]
        return nb, (rp[r][:, t:], rc[s])

    def scores(self, k: int, only: Sequence[int] | None = None) -> list[tuple[list[float], list[int]]]:
        """Per item: (summed log-prob of each choice's scored tokens, their count) from blocks k..
        on the kept residuals (under whatever steering context is active). ``only``: the indices
        of the items to score (in that order; batches without one are skipped), else every item."""
        level = self.level(k)
        rows = self.rows
        wanted = None if only is None else set(only)
        scores: dict[int, tuple[list[float], list[int]]] = {}
        # the shared prefix through the upper blocks once per call, steered as every item's prompt
        pcache = self._prefix_pass(k, None)[1] if self.prefix else None
        with torch.no_grad():
            for b, resid in zip(self.batches, level):
                if wanted is not None:
                    keep = [j for j, i in enumerate(b.chunk) if i in wanted]
                    if not keep:
                        continue
                    if len(keep) < len(b.chunk):
                        b, resid = self._subset(b, resid, keep)
                past = self._past(pcache, b)
                if self.last_token:
                    logits = self._forward(b, resid, k, None, past, logits_to_keep=b.keep)
                    lp = torch.log_softmax(logits[:, -b.keep:].float(), dim=-1).cpu()
                    for r, i in enumerate(b.chunk):
                        _, conts, starts = rows[i]
                        off = b.keep - len(conts[0])
                        sums = [sum(float(lp[r, off + j, t]) for j, t in enumerate(c) if j >= st)
                                for c, st in zip(conts, starts)]
                        scores[i] = (sums, [max(0, len(c) - st) for c, st in zip(conts, starts)])
                else:
                    out, logits = self._forward(b, resid, k, None, past)
                    device = b.tokens.device
                    last_lp = torch.log_softmax(out[:, -1].float(), dim=-1).to(device)
                    lp = torch.log_softmax(logits.float(), dim=-1).to(device)
                    # token j of a choice is predicted by its logits j-1 (the prompt's for j=0)
                    pred = torch.cat([last_lp[b.index][:, None], lp[:, :-1]], dim=1)
                    tok_lp = pred.gather(-1, b.cont[..., None])[..., 0]
                    steps = torch.arange(b.cont.shape[1], device=device)[None]
                    scored = b.cont_mask.bool() & (steps >= b.starts[:, None])
                    sums, counts = (tok_lp * scored).sum(1).tolist(), scored.sum(1).tolist()
                    r = 0
                    for i in b.chunk:
                        n = len(rows[i][1])
                        scores[i] = (sums[r: r + n], counts[r: r + n])
                        r += n
        return [scores[i] for i in (range(len(rows)) if only is None else only)]


def lower_residuals(model, prompts: Sequence[list[int]], k: int, batch_size: int, *, batches=None) \
        -> list[tuple[list[int], Float[Tensor, "batch pos d_model"], Int[Tensor, "batch pos"]]]:
    """Per batch (longest prompts first, as ``score_items``): item indices, the residual entering
    block ``k`` (left-padded) and the attention mask. ``batches``: ``SweepInputs``' batches of
    these prompts (else they are padded here)."""
    if batches is None:
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        batches = []
        for b in range(0, len(order), batch_size):
            chunk = order[b: b + batch_size]
            batch = pad(model, [(prompts[i], 0) for i in chunk], padding_side="left")
            batches.append(_Batch(chunk=chunk, tokens=batch.tokens, mask=batch.attention_mask,
                                  pos=positions(batch.attention_mask)))
    out = []
    with torch.no_grad():
        for b in batches:
            resid = run_blocks(model, b.tokens, b.mask, b.pos, None, k)
            out.append((b.chunk, resid, b.mask))
    return out


def sweepable(plan) -> bool:
    """The sweep's shared lower pass applies: every hook inside a block and with a norm."""
    hooks = plan.rfms if plan.mode == "field" else plan.vectors
    return bool(hooks) and all(h in plan.norms and _BLOCK.match(h) is not None for h in hooks)


def sweep(model, items: Sequence[Item], plan, strengths: Sequence[float], *, batch_size: int = 8,
          chat_template: bool | None = None, seed: int = 0, inputs: SweepInputs | None = None,
          only: Sequence[Sequence[int] | None] | None = None) -> list[EvalResult]:
    """``evaluate(model, items, plan=plan, strength=s)`` for every ``s`` in ``strengths`` (same
    scores within float tolerance, same predictions), computing blocks below the plan's lowest
    steered block once per batch. ``inputs``: a ``SweepInputs`` of the same items (and batch size)
    whose kept residuals are reused (several calls, several plans). ``only``: per strength, the
    indices of the items to score (None: all); each result is then over those items, in that
    order, as ``evaluate`` on them. Falls back to ``evaluate`` per strength when a hook has no norm
    in ``plan.norms`` or is not inside a block (e.g. ``hook_embed``). Items of a ``test`` or
    ``confirm`` split are recorded in the test ledger per strength, as ``evaluate`` records them
    (and a ``confirm`` split is refused outside ``ledger.locked_run``)."""
    from . import ledger

    items = list(items)
    if not items:
        raise ValueError("no items to sweep; pass at least one Item")
    scored = origin(items)
    if scored:
        ledger.check_allowed(scored[0], scored[1])
    strengths = [check_strength(s) for s in strengths]
    only = [None] * len(strengths) if only is None else [None if o is None else list(o) for o in only]
    if len(only) != len(strengths):
        raise ValueError(f"sweep: only= has {len(only)} entries for {len(strengths)} strengths; give one per strength")
    if any(o is not None and (not o or min(o) < 0 or max(o) >= len(items)) for o in only):
        raise ValueError(f"sweep: only= needs non-empty lists of item indices in 0..{len(items) - 1}")

    def subset(o):
        return items if o is None else [items[i] for i in o]

    if not sweepable(plan):
        return [evaluate(model, subset(o), plan=plan, strength=s, batch_size=batch_size,
                         chat_template=chat_template, seed=seed) for s, o in zip(strengths, only)]
    if inputs is None:
        inputs = SweepInputs(model, items, batch_size=batch_size, chat_template=chat_template, keep=1)
    elif not inputs.matches(items):
        raise ValueError("sweep: inputs= was prepared for other items")
    k = first_steered_block(plan)
    plan.check_compatible(model)
    name = str(getattr(model.cfg, "model_name", "?"))
    inputs.level(k)  # the unsteered lower pass, outside the steering context
    out = []
    for s, o in zip(strengths, only):
        with plan.apply(model, s):
            scores = inputs.scores(k, o)
        part = subset(o)
        out.append(summarise(part, scores, majority_rate=_majority(part), seed=seed,
                             meta={"strength": float(s), "model": name, "sweep_from_block": k}))
        if scored:
            ledger.record_evaluation(*scored, part, model)
    return out
