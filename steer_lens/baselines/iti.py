"""Inference-Time Intervention (Li et al. 2023) on a TransformerBridge.

Per-head outputs are read at ``blocks.{l}.attn.o.hook_in`` (the bridge's per-head z,
"batch pos head d_head", the input of the output projection; ``attn.hook_z`` does not fire
in TransformerLens 4.3 bridges), span-mean pooled like the other methods. Heads are ranked by
a 2-fold logistic-probe accuracy on TRAIN contrast pairs; for the top ``k`` heads the
mass-mean shift u_h (unit, positives - negatives) times the std sigma_h of activations along
it is projected through that head's slice of W_O into the residual. The per-layer sums are
added to the attention output, ``blocks.{l}.hook_attn_out`` (so they enter the residual stream;
on a TransformerBridge ``hook_resid_mid`` is only the input of ``ln2``, so a vector added there
reaches the MLP but never the residual; ``steer()`` refuses that hook, and CHANGELOG.md records
the release whose ITI rows steered there). The plan's norms split one residual-norm budget (the median residual norm
after attention, read at ``hook_resid_mid``) across layers in proportion to ITI's own per-layer
magnitudes, so ``strength`` means the same total size as for single-layer methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..activations import hook_name
from ..tokens import Prompt, batch_encode
from .common import baseline_plan, hook_norms

Z_HOOK = "blocks.{layer}.attn.o.hook_in"


def head_activations(model, prompts: Sequence[Prompt], layers: Sequence[int], *, chat_template: bool | None = None,
                     batch_size: int = 16) -> Float[Tensor, "n layer head d_head"]:
    """Span-mean per-head attention outputs (before W_O) at each layer."""
    n_heads, d_head = model.cfg.n_heads, model.cfg.d_head
    out = []
    for k in range(0, len(prompts), batch_size):
        batch = batch_encode(model, list(prompts[k: k + batch_size]), chat_template=chat_template)
        w = batch.span.float()[..., None, None]
        store: dict[int, Tensor] = {}

        def saver(layer):
            def save(z, hook):
                z4 = z.reshape(z.shape[0], z.shape[1], n_heads, d_head).float()
                span = w.to(z4.device)  # a device-mapped layer may not sit with the embeddings
                store[layer] = (z4 * span).sum(1) / span.sum(1).clamp_min(1)
                return z
            return save

        with torch.no_grad(), model.hooks(fwd_hooks=[(Z_HOOK.format(layer=l), saver(l)) for l in layers]):
            model(batch.tokens, attention_mask=batch.attention_mask)
        if hasattr(model, "_last_hf_cache"):
            del model._last_hf_cache
        out.append(torch.stack([store[l] for l in layers], dim=1))
    return torch.cat(out)


def probe_accuracy(pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"], seed: int = 0) -> float:
    """2-fold (split by pair) logistic-probe accuracy separating positives from negatives."""
    from sklearn.linear_model import LogisticRegression

    n = pos.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    folds = (perm[: n // 2], perm[n // 2:])
    acc = []
    for tr, te in (folds, folds[::-1]):
        x = torch.cat([pos[tr], neg[tr]]).cpu().numpy()  # sklearn: CPU
        y = np.r_[np.ones(len(tr)), np.zeros(len(tr))]
        mu, sd = x.mean(0), x.std(0) + 1e-6
        clf = LogisticRegression(max_iter=300, C=1.0).fit((x - mu) / sd, y)
        xt = torch.cat([pos[te], neg[te]]).cpu().numpy()
        acc.append(clf.score((xt - mu) / sd, np.r_[np.ones(len(te)), np.zeros(len(te))]))
    return float(np.mean(acc))


def output_weight(model, layer: int) -> Float[Tensor, "d_model head_x_dhead"]:
    """W_O of one layer as an nn.Linear weight (out = d_model, in = n_heads * d_head)."""
    o = model.blocks[layer].attn.o
    lin = getattr(o, "original_component", None) or getattr(o, "_original_component")
    return lin.weight.detach().float()


def fit_iti(model, positives: Sequence[Prompt], negatives: Sequence[Prompt], *, k: int = 8,
            layers: Sequence[int] | None = None, chat_template: bool | None = None, seed: int = 0,
            acts: tuple[Tensor, Tensor] | None = None):
    """SteeringPlan of ITI shifts for the top-``k`` probe-ranked heads (train items only)."""
    layers = list(layers if layers is not None else range(model.cfg.n_layers))
    if acts is None:
        z = head_activations(model, list(positives) + list(negatives), layers, chat_template=chat_template)
        acts = (z[: len(positives)], z[len(positives):])
    pos, neg = acts
    ranking = sorted(((probe_accuracy(pos[:, i, h], neg[:, i, h], seed), layer, h)
                      for i, layer in enumerate(layers) for h in range(model.cfg.n_heads)), reverse=True)
    chosen = ranking[:k]
    d_head = model.cfg.d_head
    per_layer: dict[int, Tensor] = {}
    for _, layer, h in chosen:
        i = layers.index(layer)
        shift = pos[:, i, h].mean(0) - neg[:, i, h].mean(0)
        u = shift / shift.norm().clamp_min(1e-12)
        sigma = float((torch.cat([pos[:, i, h], neg[:, i, h]]) @ u).std())
        w = output_weight(model, layer)[:, h * d_head:(h + 1) * d_head]
        per_layer[layer] = per_layer.get(layer, 0) + w @ (sigma * u)
    names = {layer: hook_name(model, "attn_out", layer) for layer in per_layer}
    base = hook_norms(model, list(positives) + list(negatives), sorted(per_layer), "resid_mid", chat_template)
    total = sum(float(v.norm()) for v in per_layer.values())
    norms = {names[l]: base[hook_name(model, "resid_mid", l)] * float(v.norm()) / total for l, v in per_layer.items()}
    return baseline_plan(model, {names[l]: v for l, v in per_layer.items()}, norms, method="iti",
                         settings={"k": k, "heads": [(l, h, round(a, 3)) for a, l, h in chosen]})
