"""Context-dependent steering from a fitted RFM (a "steering vector field").

The fixed ExpertSteer / self-RFM vector keeps only the top AGOP eigenvector of the RFM. In
field mode the RFM predictor f(x) = Σ_i α_i K_M(x, x_i) itself steers: at every steered token
with residual x_t ("d_model", the hook's input) the hook adds

    strength × norm[hook] × ∇f(x_t) / ‖∇f(x_t)‖

so the direction depends on the context. ∇f points towards higher f, i.e. towards the
positives (fitted as +1, negatives as -1 or 0), the orientation of the fixed vector. Gradients
are closed form (``RFM.gradients``), batched over the call's tokens, in the RFM's dtype
(float32 by default) on the residual's device, and returned as float32. Tokens where the
gradient vanishes numerically (every kernel value underflows because x_t is far from all
training points, e.g. an attention-sink token with an outsized norm) get a zero direction:
they are not steered. Several RFMs on one hook (two expert layers feeding one target layer)
steer along the renormalised sum of their unit gradients, as fixed vectors are combined.

The field needs the RFM to live in the target's own coordinates: self-RFM (the target's own
activations) or ExpertSteer with a paired linear alignment into the target ("ridge",
"procrustes"). Auto-encoder codes (also the hybrid's) are in an arbitrary basis, so their RFM
cannot be evaluated on the target's residual: refused.

Persistence (``SteeringPlan.save``): per hook, a list of RFM states under
``field/<hook>/<k>/{centers,targets,alpha,metric,shift}`` in tensors.safetensors and their
config, input scale and selected iteration under ``fields`` in plan.json. ``metric`` is the
kernel metric M of the selected predictor (``RFM.kernel_M``); the AGOP itself is not saved
(the plan keeps its top eigenvector as the fixed vector and its spectrum).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .rfm import RFM, RFMConfig, steering_vector
from .steer import steer

__all__ = ["MODES", "FIELD_ALIGNMENTS", "check_mode", "check_field_alignment", "field_directions",
           "steer_field", "negated", "shuffled_field_plan"]

MODES = ("fixed", "field")
FIELD_ALIGNMENTS = ("ridge", "procrustes")  # paired maps into the target's own coordinates
_STATE = {"centers": "centers", "targets": "targets", "alpha": "alpha", "metric": "kernel_M", "shift": "shift"}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def check_field_alignment(alignment: str) -> None:
    """Refuse field steering for alignments whose output is not in the target's basis."""
    if alignment in FIELD_ALIGNMENTS:
        return
    why = ("its RFM is fitted in an auto-encoder code, whose basis is not the target's"
           if alignment in ("autoencoder", "hybrid") else "it is not a paired map into the target's coordinates")
    raise ValueError(f"mode='field' cannot use alignment={alignment!r}: {why}, so the RFM cannot be "
                     f"evaluated on the target's residual; use alignment in {FIELD_ALIGNMENTS}, or mode='fixed'")


def _unit(g: Float[Tensor, "m d"]) -> Float[Tensor, "m d"]:
    """Rows divided by their norm; rows with zero (or non-finite) norm become zero."""
    n = g.norm(dim=-1, keepdim=True)
    ok = (n > 0) & torch.isfinite(n)
    return torch.where(ok, g / torch.where(ok, n, torch.ones_like(n)), torch.zeros_like(g))


def field_directions(rfms: Sequence[RFM], x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    """Unit field direction at each row of x: unit(Σ_k unit(∇f_k(x))), zero where it vanishes.
    Float32, on x's device (the RFMs' tensors must be there too)."""
    flat = x.reshape(-1, x.shape[-1])
    total = torch.zeros(flat.shape, dtype=torch.float32, device=x.device)
    for rfm in rfms:
        total += _unit(rfm.gradients(flat).float())
    return (_unit(total) if len(rfms) > 1 else total).reshape(x.shape)


def _rebuilt(config: RFMConfig, scale: float, tensors: Mapping[str, Tensor], best_iter: int = -1) -> RFM:
    """An RFM predictor from its state (the ``_STATE`` tensors, keyed by attribute name)."""
    rfm = RFM(config)
    for attr in _STATE.values():
        setattr(rfm, attr, tensors[attr])
    rfm.scale, rfm.best_iter = float(scale), int(best_iter)
    return rfm


def _moved(rfm: RFM, device: torch.device) -> RFM:
    if rfm.centers.device == device:
        return rfm
    return _rebuilt(rfm.config, rfm.scale, {a: getattr(rfm, a).to(device) for a in _STATE.values()}, rfm.best_iter)


def negated(rfm: RFM) -> RFM:
    """The predictor -f (α and targets negated): its field points the other way."""
    tensors = {a: getattr(rfm, a) for a in _STATE.values()}
    tensors.update(alpha=-rfm.alpha, targets=-rfm.targets)
    return _rebuilt(rfm.config, rfm.scale, tensors, rfm.best_iter)


def _check_fields(model, rfms: Mapping[str, Sequence[RFM]]) -> None:
    d = model.cfg.d_model
    if not rfms:
        raise ValueError("no RFM fields to steer with; fit the plan with mode='field'")
    for hook, fitted in rfms.items():
        if len(fitted) == 0:
            raise ValueError(f"no RFM for hook {hook!r}; each hook needs at least one fitted RFM")
        for rfm in fitted:
            if not hasattr(rfm, "centers"):
                raise ValueError(f"the RFM for {hook!r} is not fitted; call .fit(X, y) first")
            if (w := rfm.centers.shape[1]) != d:
                raise ValueError(f"the RFM field for {hook} has width {w} but the model's d_model is {d}; "
                                 "fit it on this model's (or aligned into this model's) activations")


def steer_field(model, rfms: Mapping[str, Sequence[RFM]], strength: float = 1.0, *, positions: str = "all",
                scale: str = "relative", norms: Mapping[str, float] | None = None):
    """A ``steer(...)`` context adding ``strength × size × unit ∇f(x_t)`` at each steered token of
    each hook (``size`` as in ``steer``: norms[hook] or the median residual norm for
    scale="relative", 1 for "absolute"). Same positions, KV-cache tracking and hook cleanup."""
    _check_fields(model, rfms)

    def field(fitted: Sequence[RFM]):
        on: dict[torch.device, list[RFM]] = {}

        def directions(x: Float[Tensor, "batch pos d"]) -> Float[Tensor, "batch pos d"]:
            if x.device not in on:
                on[x.device] = [_moved(r, x.device) for r in fitted]
            return field_directions(on[x.device], x)

        return directions

    return steer(model, {hook: field(list(fitted)) for hook, fitted in rfms.items()}, strength,
                 positions=positions, scale=scale, norms=norms)


# ---- persistence ---------------------------------------------------------------------------
def _config_json(config: RFMConfig) -> dict:
    out = dataclasses.asdict(config)
    out["dtype"] = str(config.dtype).removeprefix("torch.")
    return out


def _config_from_json(meta: dict) -> RFMConfig:
    meta = dict(meta)
    dtype = getattr(torch, meta.pop("dtype", "float32"), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown RFM dtype in a saved field: {meta!r}; re-save the plan")
    known = {f.name for f in dataclasses.fields(RFMConfig)}
    return RFMConfig(dtype=dtype, **{k: v for k, v in meta.items() if k in known})


def fields_state(rfms: Mapping[str, Sequence[RFM]]) -> tuple[dict[str, Tensor], dict]:
    """(safetensors tensors, plan.json ``fields`` entry) for the plan's RFM fields."""
    tensors, meta = {}, {}
    for hook, fitted in rfms.items():
        meta[hook] = []
        for k, rfm in enumerate(fitted):
            for key, attr in _STATE.items():
                tensors[f"field/{hook}/{k}/{key}"] = getattr(rfm, attr).detach().cpu().contiguous()
            meta[hook].append({"config": _config_json(rfm.config), "scale": float(rfm.scale),
                               "best_iter": int(rfm.best_iter)})
    return tensors, meta


def fields_from_state(tensors: Mapping[str, Tensor], meta: Mapping[str, list]) -> dict[str, list[RFM]]:
    """Inverse of ``fields_state``; a clear error if a saved tensor is missing."""
    out: dict[str, list[RFM]] = {}
    for hook, entries in meta.items():
        out[hook] = []
        for k, entry in enumerate(entries):
            names = {attr: f"field/{hook}/{k}/{key}" for key, attr in _STATE.items()}
            if missing := [n for n in names.values() if n not in tensors]:
                raise ValueError(f"the saved plan lacks {missing}; re-save the plan")
            out[hook].append(_rebuilt(_config_from_json(entry["config"]), entry["scale"],
                                      {attr: tensors[n] for attr, n in names.items()}, entry.get("best_iter", -1)))
    return out


# ---- the random-field control ----------------------------------------------------------------
def shuffled_field_plan(plan, seed: int = 0):
    """The random-field control of a field plan: every RFM refitted with the same config on the
    same training points with their labels permuted (seeded). Returns a field-mode
    ``SteeringPlan`` with the same hooks and norms; its fixed vectors are the shuffled RFMs' top
    AGOP eigenvectors (oriented towards the shuffled positives), its spectra theirs."""
    if not plan.rfms:
        raise ValueError("this plan has no RFM fields (fitted with mode='fixed'); fit it with mode='field'")
    gen = torch.Generator().manual_seed(seed)
    rfms, vectors, spectra = {}, {}, {}
    for hook, fitted in plan.rfms.items():
        rfms[hook], vec = [], None
        for rfm in fitted:
            y = rfm.targets.cpu()
            values = torch.unique(y)
            if len(values) != 2:
                raise ValueError(f"the RFM for {hook} was fitted on {len(values)} target values; "
                                 "the shuffled-label control needs binary (positive/negative) targets")
            X = (rfm.centers.cpu() * rfm.scale + rfm.shift.cpu())  # back to the input coordinates
            pos = y[torch.randperm(len(y), generator=gen)] == values[1]
            d = steering_vector(X[pos], X[~pos], config=rfm.config, zero_one_labels=bool(values[0] == 0))
            rfms[hook].append(d.rfm)
            vec = d.vector.float() if vec is None else vec + d.vector.float()
            spectra[hook] = d.eigenvalues.float()
        vectors[hook] = vec / vec.norm()
    settings = {**plan.settings, "mode": "field", "control": "shuffled_labels", "control_seed": seed}
    return dataclasses.replace(plan, vectors=vectors, rfms=rfms, spectra=spectra, settings=settings,
                               aligners=dict(plan.aligners))
