"""ExpertSteer end to end: capture → align → MI layer pairs → RFM vectors → SteeringPlan.

1. Capture both models on the same labelled prompts (pooled per prompt, so tokenizers may
   differ). 2. Align each expert layer into the target's width. 3. MI between every aligned
   expert layer and every target layer; keep the lowest-MI pairs (paper's rule). 4. For each
   pair, an RFM on the aligned expert activations (positives vs negatives); its top AGOP
   eigenvector steers that target layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from .activations import capture, hook_name, resolve_layers
from .align import make_aligner
from .align.base import REGISTRY as ALIGNERS
from .field import check_field_alignment, check_mode
from .mi import LayerPair, mi_matrix, select_pairs
from .plan import LayerPairInfo, SteeringPlan, model_card
from .rfm import RFMConfig, steering_vector
from .steer import resid_scale
from .tokens import Prompt, batch_encode

log = logging.getLogger(__name__)


def data_hash(positives: Sequence[Prompt], negatives: Sequence[Prompt]) -> str:
    blob = json.dumps([list(map(str, positives)), list(map(str, negatives))])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def depth_match(layer: int, n_from: int, n_to: int) -> int:
    """The layer at the same relative depth in a model with ``n_to`` layers."""
    return min(n_to - 1, round((layer + 0.5) * n_to / n_from - 0.5))


def shortlist_pairs(expert_acts: Tensor, n_pos: int, expert, target, k: int, *,
                    window: tuple[int, int] | None = None, ties: str = "spread") -> list[tuple[int, int]]:
    """The train-only pair rule: the ``k`` expert layers in ``window`` (first, last expert layer,
    inclusive; default the middle half) whose split-half mean-difference direction best separates
    positives from negatives, each paired with the target layer at the same relative depth.
    Validation then chooses among the pairs (``ExpertSteer(pairs=[pair])`` per pair).
    ``expert_acts``: (prompts, expert layer, d) with the ``n_pos`` positives first (e.g.
    ``ExpertSteer().capture(...)[0]``)."""
    from .baselines.common import choose_layer, shortlist_layers

    Le, Lt = expert.cfg.n_layers, target.cfg.n_layers
    lo, hi = window if window is not None else (Le // 4, 3 * Le // 4)
    if not 0 <= lo <= hi < Le:
        raise ValueError(f"expert layer window {lo}..{hi} is outside the expert's layers 0..{Le - 1}: "
                         f"pass --expert-layers FIRST LAST with 0 <= FIRST <= LAST < {Le}")
    _, scores = choose_layer(expert_acts[:n_pos], expert_acts[n_pos:], list(range(Le)),
                             candidates=range(lo, hi + 1))
    return [(e, depth_match(e, Le, Lt)) for e in shortlist_layers(scores, k, ties)]


def target_norms(model, prompts: Sequence[Prompt], layers: Sequence[int], hook: str,
                 chat_template: bool | None, limit: int = 32) -> dict[str, float]:
    """Median per-token residual norm at each target hook, over (up to) ``limit`` prompts."""
    names = [hook_name(model, hook, layer) for layer in layers]
    batch = batch_encode(model, list(prompts)[:limit], chat_template=chat_template)
    real = batch.attention_mask.bool()
    real[:, 0] = False  # the first token is often an attention sink with an outsized norm
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask,
                                        names_filter=names)
    return {name: resid_scale(cache[name], real) for name in names}


def given_pair(mi: Tensor, expert_layer: int, target_layer: int, e_layers: Sequence[int],
               t_layers: Sequence[int]) -> LayerPair:
    """An explicitly chosen layer pair, with its MI read from the matrix (for the record)."""
    if expert_layer not in e_layers or target_layer not in t_layers:
        raise ValueError(f"pair ({expert_layer}, {target_layer}) is outside the captured layers (expert "
                         f"{list(e_layers)}, target {list(t_layers)}); fix pairs= or expert_layers/target_layers")
    return LayerPair(expert_layer, target_layer, float(mi[list(e_layers).index(expert_layer),
                                                         list(t_layers).index(target_layer)]))


@dataclass
class ExpertSteer:
    """Fit steering vectors for a target model from an expert model's activations.

    ``alignment``: "autoencoder" (paper), "ridge", "procrustes" or "hybrid". Paired
    aligners are fitted per selected pair (expert layer → that target layer); for the MI
    matrix each expert layer is aligned against the target layer at the same depth.
    ``mode="field"``: the plan also keeps each pair's RFM and steers every token along the
    RFM's gradient at that token (``steer_lens.field``); needs "ridge" or "procrustes".
    """

    n_pairs: int = 3
    alignment: str = "autoencoder"
    rfm: RFMConfig = field(default_factory=RFMConfig)
    position: str = "mean"
    hook: str = "resid_post"
    rule: str = "lowest"
    pairs: Sequence[tuple[int, int]] | None = None  # explicit (expert, target) layer pairs: no MI rule
    one_per_target: bool = True
    one_per_expert: bool = False  # True: distinct expert layers (else one layer may feed all pairs)
    expert_layers: Sequence[int] | None = None
    target_layers: Sequence[int] | None = None
    target_window: tuple[int, int] | None = None
    mi_estimator: str = "gaussian"
    mi_dim: int | None = None  # PCA width for MI; None: n_prompts // 10, clipped to [2, 32]
    chat_template: bool | None = None
    batch_size: int = 16
    aligner_kwargs: dict = field(default_factory=dict)
    heldout_fraction: float = 0.2
    seed: int = 0
    mode: str = "fixed"  # "fixed": top AGOP eigenvector; "field": per-token RFM gradient

    def settings(self) -> dict:
        out = asdict(self)
        out["rfm"] = {k: str(v) if isinstance(v, torch.dtype) else v for k, v in asdict(self.rfm).items()}
        return out

    def _split(self, n: int) -> tuple[Tensor, Tensor]:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_held = max(2, int(self.heldout_fraction * n)) if n >= 10 else 0
        return perm[n_held:], perm[:n_held]

    def _layers(self, expert, target) -> tuple[list[int], list[int]]:
        """This config's expert and target layers (all layers when unset)."""
        return (resolve_layers(expert, self.expert_layers or range(expert.cfg.n_layers)),
                resolve_layers(target, self.target_layers or range(target.cfg.n_layers)))

    def capture(self, expert, target, prompts: Sequence[Prompt]) -> tuple[Tensor, Tensor]:
        """Pooled activations of both models on ``prompts`` with this config's layers, hook and
        position: (n, expert_layer, d_expert) and (n, target_layer, d_target). Pass them to
        ``fit(..., activations=...)`` to fit several configs on one capture."""
        e_layers, t_layers = self._layers(expert, target)
        kw = dict(position=self.position, hook=self.hook, batch_size=self.batch_size)
        log.info("capturing %d prompts on expert and target", len(prompts))
        xe = capture(expert, prompts, layers=e_layers, chat_template=None, **kw).tensor
        xt = capture(target, prompts, layers=t_layers, chat_template=self.chat_template, **kw).tensor
        return xe, xt

    def fit(self, expert, target, positives: Sequence[Prompt], negatives: Sequence[Prompt], *,
            activations: tuple[Tensor, Tensor] | None = None) -> SteeringPlan:
        """Capture, align, choose pairs by MI and train one RFM per pair; return the plan.

        ``activations``: the output of ``self.capture(expert, target, positives + negatives)``
        (or of a config with the same layers, hook and position) to skip capturing."""
        if self.alignment not in ALIGNERS:
            raise ValueError(f"unknown alignment {self.alignment!r}; choose one of {sorted(ALIGNERS)}")
        if check_mode(self.mode) == "field":
            check_field_alignment(self.alignment)
        if len(positives) == 0 or len(negatives) == 0:
            raise ValueError("positives and negatives must both be non-empty; pass labelled prompts "
                             "(e.g. from contrast_prompts(items))")
        prompts = list(positives) + list(negatives)
        e_layers, t_layers = self._layers(expert, target)
        if activations is None:
            xe, xt = self.capture(expert, target, prompts)
        else:
            xe, xt = activations
            want_e = (len(prompts), len(e_layers), expert.cfg.d_model)
            want_t = (len(prompts), len(t_layers), target.cfg.d_model)
            if tuple(xe.shape) != want_e or tuple(xt.shape) != want_t:
                raise ValueError(f"activations of shapes {tuple(xe.shape)} and {tuple(xt.shape)} do not match "
                                 f"{want_e} and {want_t} (prompts, layers, width): pass "
                                 "self.capture(expert, target, positives + negatives)")
        xe = xe.to(xt.device)  # every statistic below runs where the target's activations are
        labels = torch.tensor([1] * len(positives) + [0] * len(negatives), dtype=torch.bool, device=xt.device)
        train, held = (idx.to(xt.device) for idx in self._split(len(prompts)))

        def fit_aligner(i: int, j: int):
            al = make_aligner(self.alignment, expert.cfg.d_model, target.cfg.d_model, **self.aligner_kwargs)
            al.fit(xe[train, i], xt[train, j])
            report = al.report(xe[held, i], xt[held, j]) if len(held) >= 2 else {}
            return al, report

        # Aligned expert layers for the MI matrix (depth-matched partner for paired aligners).
        aligned, reports, layer_aligners = [], {}, []
        for i, layer in enumerate(e_layers):
            j = t_layers.index(min(t_layers, key=lambda t: abs(t - depth_match(layer, expert.cfg.n_layers,
                                                                                target.cfg.n_layers))))
            al, rep = fit_aligner(i, j)
            layer_aligners.append(al)
            aligned.append(al.transform(xe[:, i].double()).float())
            reports[f"expert_layer_{layer}"] = rep
        xa = torch.stack(aligned, dim=1)
        k = self.mi_dim or max(2, min(32, len(prompts) // 10))  # CCA is biased when k ~ n
        mi = mi_matrix(xa, xt, estimator=self.mi_estimator, k=k).float()
        if self.pairs:
            pairs = [given_pair(mi, e, t, e_layers, t_layers) for e, t in self.pairs]
        else:
            pairs = select_pairs(mi, self.n_pairs, rule=self.rule, one_per_target=self.one_per_target,
                                 one_per_expert=self.one_per_expert,
                                 expert_layers=e_layers, target_layers=t_layers,
                                 target_window=self.target_window)
        vectors, spectra, pair_info, pair_aligners, rfms = {}, {}, [], {}, {}
        for pair in pairs:
            i, j = e_layers.index(pair.expert_layer), t_layers.index(pair.target_layer)
            if ALIGNERS[self.alignment].paired:  # refit for this exact pair
                al, rep = fit_aligner(i, j)
                reports[f"pair_{pair.expert_layer}_{pair.target_layer}"] = rep
                z = al.transform(xe[:, i].double()).float()
            else:
                al, z = layer_aligners[i], xa[:, i]
            pair_aligners[(pair.expert_layer, pair.target_layer)] = al
            direction = steering_vector(z[labels], z[~labels], config=self.rfm, seed=self.seed)
            name = hook_name(target, self.hook, pair.target_layer)
            if name in vectors:  # two experts layers on one target layer: add their directions
                vectors[name] = vectors[name] + direction.vector.float()
                vectors[name] = vectors[name] / vectors[name].norm()
            else:
                vectors[name] = direction.vector.float()
            spectra[name] = direction.eigenvalues.float()
            if self.mode == "field":
                rfms.setdefault(name, []).append(direction.rfm)
            pair_info.append(LayerPairInfo(pair.expert_layer, pair.target_layer, float(pair.mi)))
        norms = target_norms(target, prompts, sorted({p.target_layer for p in pair_info}),
                             self.hook, self.chat_template)
        return SteeringPlan(
            vectors=vectors, pairs=pair_info, mi=mi, expert=model_card(expert),
            target=model_card(target), norms=norms, settings=self.settings(), reports=reports,
            spectra=spectra, expert_layers=e_layers, target_layers=t_layers,
            data_hash=data_hash(positives, negatives), aligners=pair_aligners, rfms=rfms,
        )
