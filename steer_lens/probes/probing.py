"""How well a steering direction separates held-out positives from negatives, layer by layer.

`projection_auroc`: AUROC of the 1-D projection ``x @ v`` (no fitting; 1.0 = positives
always project higher, 0.5 = chance, < 0.5 = the vector points the wrong way).
`logistic_probe_auroc`: the ceiling a full linear read-out reaches at that layer:
k-fold cross-validated L2 logistic regression (torch L-BFGS on standardised features).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def auroc(scores: Float[Tensor, " n"], labels: Tensor) -> float:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties)."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = torch.as_tensor(labels).flatten().bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    ranks = (ends - (counts.double() - 1) / 2)[inverse]  # average rank of each tie group
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def projection_auroc(pos: Float[Tensor, "n_pos d"], neg: Float[Tensor, "n_neg d"],
                     vector: Float[Tensor, " d"]) -> float:
    """AUROC of projecting held-out positives vs negatives on ``vector``."""
    v = torch.as_tensor(vector, dtype=torch.float64).flatten()
    s = torch.cat([pos.double() @ v, neg.double() @ v])
    y = torch.cat([torch.ones(len(pos), device=s.device), torch.zeros(len(neg), device=s.device)])
    return auroc(s, y)


def _fit_logistic(x: Tensor, y: Tensor, l2: float, steps: int) -> tuple[Tensor, Tensor]:
    w = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _folds(y: Tensor, folds: int, groups: Tensor | None, gen: torch.Generator) -> Tensor:
    """Fold index per row (on the CPU): stratified by class, or by group (a group never
    straddles folds)."""
    if groups is not None:
        ids, inverse = torch.unique(torch.as_tensor(groups).cpu(), return_inverse=True)
        return (torch.randperm(len(ids), generator=gen) % folds)[inverse]
    fold_of = torch.empty(len(y), dtype=torch.long)
    for cls in (1.0, 0.0):
        idx = torch.nonzero(y == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        fold_of[idx] = torch.arange(len(idx)) % folds
    return fold_of


def logistic_probe_auroc(pos: Float[Tensor, "n_pos d"], neg: Float[Tensor, "n_neg d"], *, folds: int = 5,
                         l2: float = 1e-2, steps: int = 100, seed: int = 0, groups: Tensor | None = None) -> float:
    """Mean held-out AUROC of an L2 logistic probe over ``folds``-fold CV (stratified by class).

    ``groups`` ("n_pos + n_neg", e.g. the item index of contrast pairs): rows of one group stay
    in one fold. Use it for (prompt + correct, prompt + wrong) pairs: splitting a pair leaks the
    prompt across folds and drives AUROC *below* chance."""
    x = torch.cat([pos, neg]).double()
    y = torch.cat([torch.ones(len(pos), device=x.device), torch.zeros(len(neg), device=x.device)]).double()
    folds = max(2, min(folds, len(pos), len(neg)))
    fold_of = _folds(y.cpu(), folds, groups, torch.Generator().manual_seed(seed)).to(x.device)
    aucs = []
    for f in range(folds):
        tr, te = fold_of != f, fold_of == f
        mu, sd = x[tr].mean(0), x[tr].std(0).clamp_min(1e-6)
        w, b = _fit_logistic((x[tr] - mu) / sd, y[tr], l2, steps)
        aucs.append(auroc(((x[te] - mu) / sd) @ w + b, y[te]))
    return float(sum(aucs) / len(aucs))


def probe_along_vector(pos: Float[Tensor, "n_pos layer d"], neg: Float[Tensor, "n_neg layer d"],
                       vector: Float[Tensor, " d"] | Float[Tensor, "layer d"],
                       layers: Sequence[int] | None = None, *, folds: int = 5, seed: int = 0,
                       groups: Tensor | None = None) -> list[dict]:
    """Per layer: projection AUROC on ``vector`` (one vector for all layers, or one per
    layer) and the cross-validated logistic-probe AUROC (``groups``: see
    `logistic_probe_auroc`). Rows: layer, projection_auroc, probe_auroc."""
    n_layers = pos.shape[1]
    layers = list(range(n_layers)) if layers is None else list(layers)
    if len(layers) != n_layers:
        raise ValueError(f"{len(layers)} layer labels for {n_layers} captured layers")
    vec = torch.as_tensor(vector)
    rows = []
    for i, layer in enumerate(layers):
        v = vec if vec.dim() == 1 else vec[i]
        rows.append({"layer": layer, "projection_auroc": projection_auroc(pos[:, i], neg[:, i], v),
                     "probe_auroc": logistic_probe_auroc(pos[:, i], neg[:, i], folds=folds, seed=seed,
                                                         groups=groups)})
    return rows
