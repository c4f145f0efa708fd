"""One method on one dataset, without the runner: fit on TRAIN and choose on VALIDATION."""

from __future__ import annotations

from ..data import MCDataset, load_dataset
from .base import Context
from .registry import get
from .rules import RuleSet


def fit_method(name: str, target, dataset: MCDataset | str, *, expert=None, rules: RuleSet | None = None,
               batch_size: int = 8, context: Context | None = None):
    """Fit the registered method ``name`` on ``dataset``'s TRAIN split and choose its candidate and
    strength on VALIDATION; returns ``(plan, choice)`` where ``choice`` holds the strength, the chosen
    candidate and the validation curve(s). TEST is not read. For a method with nothing to fit (the
    references, the random controls) this is an error: use ``steer_lens.bench`` to score them.
    ``context``: a runner's context for the dataset (``Bench.context(dataset)``): the fit and the choice are
    then shared with the runner's row of the method (no second search)."""
    m = get(name)
    if m.reference:
        raise ValueError(f"{name!r} fits nothing (a reference or random control); run it with `steer-lens "
                         f"evaluate --method {m.matched if hasattr(m, 'matched') else name}` or steer_lens.bench")
    if m.needs_expert and expert is None:
        raise ValueError(f"method {name!r} needs an expert model: pass --expert (expert=...)")
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if "validation" not in ds.splits:
        raise ValueError(f"dataset {ds.name!r} has no validation split to choose the strength on "
                         f"(it has {sorted(ds.splits)}): add validation.jsonl")
    ctx = context or Context(ds, target, expert, rules or RuleSet(), batch_size=batch_size)
    cands = m.candidates(ctx)
    key, strength, extra = m.choose(ctx)
    choice = {"method": name, "dataset": ds.name, "strength": strength, "candidate": str(key),
              "n_train": len(ctx.train), "n_val": len(ctx.val), "rule_set": ctx.rules.hash, **extra}
    return cands[key], choice


__all__ = ["fit_method"]
