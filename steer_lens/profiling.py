"""Where forward work goes: block executions and the tokens they process, by phase.

``ForwardCounter(model)`` is a context manager that counts, while it is open, every execution of
each transformer block's wrapped HF layer (a forward hook on ``block.original_component``: blocks a
sweep makes pass-through and blocks above a ``stop_at_layer`` are not counted) and the tokens it
processed (batch rows x padded positions). Work is filed under the current phase: ``phase(name)``
(a no-op when no counter is open) nests names with "/" — ``steer_lens.protocol`` marks its stages
("screen", "grid", "extend", "refine 1", ...). ``note_points(n, n_items)`` files scored
validation points (strength x item set) under the current phase.

    with ForwardCounter(model) as fc:
        with phase("test"):
            evaluate(model, items)
    fc.totals()  # {"block_calls": ..., "block_tokens": ..., "points": ..., "item_points": ...}
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator

_ACTIVE: list["ForwardCounter"] = []
FIELDS = ("points", "item_points", "block_calls", "block_tokens")


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """File the work done in the body under ``name`` (nested under the enclosing phase)."""
    for counter in _ACTIVE:
        counter._stack.append(name)
    try:
        yield
    finally:
        for counter in _ACTIVE:
            counter._stack.pop()


def note_points(n_points: int, n_items: int) -> None:
    """Record ``n_points`` scored points of ``n_items`` items each in the current phase."""
    for counter in _ACTIVE:
        row = counter.stats[counter.current]
        row["points"] += n_points
        row["item_points"] += n_points * n_items


class ForwardCounter:
    """Counts block executions (``block_calls``), the tokens they processed (``block_tokens``)
    and the validation points scored (``points``, ``item_points``) per phase, while open."""

    def __init__(self, *models):
        self.models = models
        self.stats: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
        self._stack: list[str] = []
        self._handles: list = []

    @property
    def current(self) -> str:
        return "/".join(self._stack) or "-"

    def _hook(self, module, args, kwargs, output):
        x = args[0] if args else kwargs.get("hidden_states")
        row = self.stats[self.current]
        row["block_calls"] += 1
        if x is not None and hasattr(x, "shape") and len(x.shape) >= 2:
            row["block_tokens"] += int(x.shape[0]) * int(x.shape[1])

    def __enter__(self) -> "ForwardCounter":
        for model in self.models:
            for block in model.blocks:
                layer = getattr(block, "original_component", None) or block
                self._handles.append(layer.register_forward_hook(self._hook, with_kwargs=True))
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def totals(self, prefix: str | None = None) -> dict[str, int]:
        """Sums over the phases (those starting with ``prefix`` if given)."""
        out = dict.fromkeys(FIELDS, 0)
        for name, row in self.stats.items():
            if prefix is None or name == prefix or name.startswith(prefix + "/"):
                for k in FIELDS:
                    out[k] += row[k]
        return out

    def rows(self) -> list[tuple[str, dict[str, int]]]:
        """(phase, counts) in the order the phases first appeared."""
        return [(name, dict(row)) for name, row in self.stats.items()]

    def reset(self) -> None:
        self.stats.clear()
