"""The random-direction control: seeded random unit vectors at exactly the hooks of a given
plan, with the same norms, so any gain of the plan must beat it at the same strength."""

from __future__ import annotations

import torch

from ..plan import SteeringPlan


def random_plan(plan: SteeringPlan, seed: int = 0) -> SteeringPlan:
    """Copy of ``plan`` whose vectors are isotropic random unit vectors (same hooks, norms)."""
    gen = torch.Generator().manual_seed(seed)
    vectors = {}
    for name, v in plan.vectors.items():
        r = torch.randn(v.shape[-1], generator=gen, dtype=torch.float64)
        vectors[name] = (r / r.norm()).float().to(v.device)
    return SteeringPlan(vectors=vectors, pairs=list(plan.pairs), mi=None, expert={"name": "random"},
                        target=dict(plan.target), norms=dict(plan.norms),
                        settings={"method": "random", "seed": seed, "matched_to": plan.settings.get("method",
                                  plan.expert.get("name", "?"))})
