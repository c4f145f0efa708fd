"""Cosine similarity between steering vectors (of different methods, layers or seeds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def cosine_matrix(vectors: Sequence[Tensor] | Mapping[str, Tensor]) -> Float[Tensor, "m m"]:
    """Pairwise cosine similarities of ``m`` same-width vectors (a list or a name → vector map)."""
    vs = list(vectors.values()) if isinstance(vectors, Mapping) else list(vectors)
    if not vs:
        raise ValueError("no vectors given")
    device = torch.as_tensor(vs[0]).device  # plans fitted on a GPU and loaded from disk may mix
    x = torch.stack([torch.as_tensor(v, dtype=torch.float64).flatten().to(device) for v in vs])
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("a vector is zero; cosine similarity is undefined for it")
    x = x / norms
    return (x @ x.T).clamp(-1, 1).float()


def method_similarity(methods: Mapping[str, Mapping[str, Tensor]],
                      hooks: Sequence[str] | None = None) -> dict[str, tuple[list[str], Tensor]]:
    """Per hook: (method names that have a vector there, their cosine matrix).

    ``methods`` maps method name → {hook: vector} (e.g. ``plan.vectors``). Hooks default to
    every hook at least two methods share.
    """
    if hooks is None:
        counts: dict[str, int] = {}
        for vecs in methods.values():
            for h in vecs:
                counts[h] = counts.get(h, 0) + 1
        hooks = [h for h, c in counts.items() if c >= 2]
    out = {}
    for h in hooks:
        names = [m for m, vecs in methods.items() if h in vecs]
        if names:
            out[h] = (names, cosine_matrix([methods[m][h] for m in names]))
    return out
