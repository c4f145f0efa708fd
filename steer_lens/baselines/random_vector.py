"""The random-direction control: seeded random unit vectors at exactly the hooks of a given
plan, with the same norms, so any gain of the plan must beat it at the same strength.

``structure="independent"`` (default): one isotropic random unit vector per hook.
``structure="rotation"``: the plan's own vectors under one Haar-random rotation of the residual
space, so every hook's vector is still a uniformly random unit vector but the cosines *between*
hooks are the plan's (a plan that adds the same direction at two layers is matched by a control
that adds one random direction at both, not two unrelated ones)."""

from __future__ import annotations

import torch

from ..plan import SteeringPlan

STRUCTURES = ("independent", "rotation")


def _haar_rotation(d: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly random d x d orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def random_plan(plan: SteeringPlan, seed: int = 0, *, structure: str = "independent") -> SteeringPlan:
    """Copy of ``plan`` whose vectors are random unit vectors (same hooks, norms); see the module
    docstring for ``structure``."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    gen = torch.Generator().manual_seed(seed)
    vectors = {}
    if structure == "rotation":
        d = next(iter(plan.vectors.values())).shape[-1]
        rot = _haar_rotation(d, gen)
        for name, v in plan.vectors.items():
            u = v.detach().double().flatten().cpu()
            r = rot @ (u / u.norm())
            vectors[name] = (r / r.norm()).float().to(v.device)
    else:
        for name, v in plan.vectors.items():
            r = torch.randn(v.shape[-1], generator=gen, dtype=torch.float64)
            vectors[name] = (r / r.norm()).float().to(v.device)
    settings = {"method": "random", "seed": seed,
                "matched_to": plan.settings.get("method", plan.expert.get("name", "?"))}
    if structure != "independent":
        settings["structure"] = structure
    return SteeringPlan(vectors=vectors, pairs=list(plan.pairs), mi=None, expert={"name": "random"},
                        target=dict(plan.target), norms=dict(plan.norms), settings=settings)
