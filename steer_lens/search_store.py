"""A strength search's validation points kept on disk as they are scored: ``SearchStore(path)``.

A validation search (``steer_lens.protocol.choose``) can run for an hour on a CPU: the reference rule over
several candidate layers, or any rule on long k-shot prompts. With ``choose(..., store=SearchStore(path))``
every point it scores is appended to ``path`` (one JSON line, flushed to disk), and the same search run again
after an interruption replays the points already scored instead of computing them again. The search visits
the same points and ranks them by the same rule, so it makes the same choice, for the cost of what was not
yet scored.

A point is keyed by everything it depends on: the scored model (name, dtype, device and a sample of its
weights), the items (every field, prompts and k-shot examples included), batch size, seed and positions,
the plan (its hooks, vectors, norms, settings and RFM fields, hashed), the strength and, for the "flips" and
"halving" rules, the item indices of the request. A point whose key differs is scored again, never reused: a
refit that is not bit-identical costs time, not correctness. Only VALIDATION points are kept: items of a
scored split (test, confirm) are refused, so every scoring of those is a real one, recorded in the test
ledger.

``steer_lens.bench.Bench`` keeps one store per row beside the row cache (``<dataset>__<method>.points.jsonl``)
and deletes it once the row is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import astuple
from pathlib import Path

from .data import Item, origin
from .evaluate import EvalResult

log = logging.getLogger("steer_lens.search_store")
SAMPLE = 4096  # weights of the model's first parameter that go into its fingerprint


def _sha(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _tensor_bytes(t) -> bytes:
    return t.detach().float().contiguous().cpu().numpy().tobytes()


def plan_hash(plan) -> str:
    """A hash of what a plan steers with: hooks, vectors, norms, settings and (field plans) RFM fields."""
    from .field import fields_state

    parts = [sorted(plan.norms.items()), plan.settings]
    for hook in sorted(plan.vectors):
        parts += [hook, _tensor_bytes(plan.vectors[hook])]
    if plan.rfms:
        tensors, meta = fields_state(plan.rfms)
        parts.append(meta)
        for name in sorted(tensors):
            parts += [name, _tensor_bytes(tensors[name])]
    return _sha(*parts)


def model_hash(model) -> str:
    """A fingerprint of a model: its name, first parameter's dtype and device, and a sample of its weights."""
    first = next(iter(model.parameters()))
    sample = b"" if first.device.type == "meta" else _tensor_bytes(first.flatten()[:SAMPLE])  # offloaded: no data
    return _sha(str(getattr(model.cfg, "model_name", "?")), str(first.dtype), str(first.device), sample)


def items_hash(items: Sequence[Item]) -> str:
    """A hash of every field of every item, in order (k-shot examples and instructions included)."""
    return _sha([type(it).__name__ for it in items], [astuple(it) for it in items])


class SearchStore:
    """Validation points on disk (one JSON line each), replayed by a search run again (module doc).

    ``reused`` / ``scored``: points taken from the store / computed, since it was opened."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._points: dict[str, dict] = {}
        self.reused = self.scored = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self._points[rec["key"]] = rec["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by an interruption
            if self._points:
                log.info("search store %s: %d points kept from an earlier run", self.path, len(self._points))

    def __len__(self) -> int:
        return len(self._points)

    def _put(self, key: str, value: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "value": value}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._points[key] = value
        self.scored += 1

    def _take(self, key: str) -> dict:
        self.reused += 1
        return self._points[key]

    def context(self, model, items: Sequence[Item], *, batch_size: int, seed: int, positions: str) -> str:
        """The key part shared by every point of a search on ``items`` (refuses items of a scored split)."""
        if any(origin([it]) for it in items):
            raise ValueError("a SearchStore keeps validation points only; these items come from a scored split "
                             "(test or confirm), which is scored for real every time: search on validation items")
        return _sha(model_hash(model), items_hash(items), batch_size, seed, positions)

    def scorer(self, score: Callable[[float], dict], plan, ctx_key: str) -> Callable[[float], dict]:
        """``score(strength) -> point`` (with ``.many`` if ``score`` has it) that replays kept points and keeps
        new ones. New points are scored as ``search_strength`` would: several at once through ``score.many``,
        one alone through ``score``."""
        base = _sha(ctx_key, plan_hash(plan))
        inner_many = getattr(score, "many", None)

        def key(s: float) -> str:
            return f"{base}:{round(float(s), 6)}"

        def many(strengths: Sequence[float]) -> list[dict]:
            todo = [s for s in dict.fromkeys(round(float(s), 6) for s in strengths) if key(s) not in self._points]
            if todo:
                new = inner_many(todo) if inner_many is not None and len(todo) > 1 else [score(s) for s in todo]
                for s, p in zip(todo, new):
                    self._put(key(s), p)
                self.reused -= len(todo)  # taken below, but scored now
            return [self._take(key(s)) for s in strengths]

        def one(s: float) -> dict:
            return many([s])[0]

        if inner_many is not None:
            one.many = many
        return one

    def runner(self, run: Callable, ctx_key: str) -> Callable:
        """``run(plan, [(strength, item indices), ...]) -> results`` (``steer_lens.scorers.parts_runner``) that
        replays kept results and keeps new ones; the requests not kept are run in one call."""
        plans: dict[int, tuple[object, str]] = {}

        def key(plan, s: float, idx: Sequence[int]) -> str:
            if id(plan) not in plans or plans[id(plan)][0] is not plan:
                plans[id(plan)] = (plan, _sha(ctx_key, plan_hash(plan)))
            return f"{plans[id(plan)][1]}:{round(float(s), 6)}:{_sha(list(idx))}"

        def stored(plan, requests):
            keys = [key(plan, s, idx) for s, idx in requests]
            todo = [n for n, k in enumerate(keys) if k not in self._points]
            if todo:
                for n, r in zip(todo, run(plan, [requests[n] for n in todo])):
                    self._put(keys[n], r.to_dict())
                self.reused -= len(todo)
            return [EvalResult.from_dict(self._take(k)) for k in keys]

        return stored

    def clear(self) -> None:
        """Delete the file and forget its points (e.g. once the row they chose is written)."""
        self.path.unlink(missing_ok=True)
        self._points.clear()


__all__ = ["SearchStore", "items_hash", "model_hash", "plan_hash"]
