"""Read-only views of the method registry for the benchmark report, computed at each use so that a method
registered later (a user's own) is in every table."""

from __future__ import annotations

from collections.abc import Mapping, Set as AbstractSet

from .. import methods as M


class _Live(Mapping):
    """A read-only mapping computed from the registry at each use."""

    def __init__(self, compute):
        self._compute = compute

    def __getitem__(self, key):
        return self._compute()[key]

    def __iter__(self):
        return iter(self._compute())

    def __len__(self):
        return len(self._compute())


class _LiveSet(AbstractSet):
    def __init__(self, compute):
        self._compute = compute

    @classmethod
    def _from_iterable(cls, it):  # set operations (a - b, a | b) give plain sets
        return set(it)

    def __contains__(self, x):
        return x in self._compute()

    def __iter__(self):
        return iter(self._compute())

    def __len__(self):
        return len(self._compute())


# which random control each method is judged against
CONTROL_OF = _Live(lambda: {m: M.control_of(m) for m in M.available() if M.control_of(m)})
# rows that are references, not methods: no significance tally of their own
REFERENCES = _LiveSet(lambda: {m for m in M.available() if M.get(m).reference})
# what a user could do instead of steering (prompting, fine-tuning, the expert): every method is tested against it
ALTERNATIVES = _LiveSet(lambda: {m for m in M.available() if M.get(m).alternative})
