"""The aligner interface: fit on one expert layer, then map activations and directions.

Every aligner here ends up as two affine maps, fitted on rows of per-prompt pooled
activations (same prompts on both sides, so the tokenizers may differ):

    forward  y = x @ forward_weight + forward_bias     x: (n, d_expert) -> y: (n, d_target)
    inverse  x = y @ inverse_weight + inverse_bias     y: (n, d_target) -> x: (n, d_expert)

Subclasses implement ``_fit`` and return those four tensors; transforms, reports and
the file format are shared. Files are one safetensors file: the four maps as float64
tensors, and a JSON string under the header metadata key ``"steer_lens"`` (format,
version, class, widths, hyper-parameters, fit diagnostics).
"""

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from ..io import atomic_path

FORMAT = "steer_lens.aligner"
FORMAT_VERSION = 1
REGISTRY: dict[str, type["Aligner"]] = {}
_MAPS = ("forward_weight", "forward_bias", "inverse_weight", "inverse_bias")


class Aligner:
    """Base class. ``name`` is the factory key; ``paired`` aligners need target rows."""

    name: ClassVar[str] = ""
    paired: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    def __init__(self, d_expert: int, d_target: int, hparams: dict[str, Any]) -> None:
        if d_expert < 1 or d_target < 1:
            raise ValueError(f"widths must be positive, got d_expert={d_expert}, d_target={d_target}")
        self.d_expert, self.d_target = d_expert, d_target
        self.hparams = dict(hparams)  # JSON-able constructor keywords, saved with the maps
        self.fit_info: dict[str, Any] = {}  # JSON-able diagnostics of the last fit
        self._maps: dict[str, Tensor] | None = None

    def __repr__(self) -> str:
        state = "fitted" if self._maps is not None else "unfitted"
        return f"{type(self).__name__}({self.d_expert} -> {self.d_target}, {state}, {self.hparams})"

    # ---- subclass hooks -------------------------------------------------------------
    def min_rows(self) -> int:
        """Fewest rows ``fit`` accepts."""
        return 3

    def _fit(self, x: Float[Tensor, "n d_expert"], y: Float[Tensor, "n d_target"] | None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """float64 inputs -> (forward_weight, forward_bias, inverse_weight, inverse_bias)."""
        raise NotImplementedError

    # ---- fitting and maps -----------------------------------------------------------
    def fit(self, expert: Float[Tensor, "n d_expert"],
            target: Float[Tensor, "n_target d_target"] | None = None) -> "Aligner":
        """Fit on one expert layer (and, for paired aligners, the same prompts' target rows).

        Unpaired aligners ignore ``target``, so the same call works for every method.
        """
        who = type(self).__name__
        x = self._check(expert, "expert")
        y = None
        if self.paired:
            if target is None:
                raise ValueError(f"{who} is paired: call fit(expert, target) with the same prompts' "
                                 "target activations")
            y = self._check(target, "target")
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"{who}.fit got {x.shape[0]} expert rows but {y.shape[0]} target rows: "
                                 "row i of both must be the same prompt (pool each prompt to one vector)")
        if x.shape[0] < self.min_rows():
            raise ValueError(f"{who} needs at least {self.min_rows()} rows to fit, got {x.shape[0]}: "
                             "collect activations for more prompts")
        with torch.enable_grad():  # gradient-trained aligners must fit inside torch.no_grad() too
            maps = self._fit(x.double(), None if y is None else y.double())
        self._maps = {k: v.detach().double().cpu().contiguous() for k, v in zip(_MAPS, maps)}
        self._check_maps(self._maps)
        return self

    def _get(self, key: str) -> Tensor:
        if self._maps is None:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit(expert, target) "
                             "or load_aligner(path) first")
        return self._maps[key]

    @property
    def forward_weight(self) -> Float[Tensor, "d_expert d_target"]:
        return self._get("forward_weight")

    @property
    def forward_bias(self) -> Float[Tensor, " d_target"]:
        return self._get("forward_bias")

    @property
    def inverse_weight(self) -> Float[Tensor, "d_target d_expert"]:
        return self._get("inverse_weight")

    @property
    def inverse_bias(self) -> Float[Tensor, " d_expert"]:
        return self._get("inverse_bias")

    def transform(self, x: Float[Tensor, "n d_expert"]) -> Float[Tensor, "n d_target"]:
        """Expert activations -> target coordinates (same dtype and device as ``x``)."""
        w, b = self.forward_weight, self.forward_bias
        x = self._check(x, "expert")
        return (x.double() @ w.to(x.device) + b.to(x.device)).to(x.dtype)

    def inverse_transform(self, y: Float[Tensor, "n d_target"]) -> Float[Tensor, "n d_expert"]:
        """Target coordinates -> expert activations (same dtype and device as ``y``)."""
        w, b = self.inverse_weight, self.inverse_bias
        y = self._check(y, "target")
        return (y.double() @ w.to(y.device) + b.to(y.device)).to(y.dtype)

    def transform_direction(self, v: Float[Tensor, " d_expert"]) -> Float[Tensor, " d_target"]:
        """Map a steering direction: linear part only, so transform(x + v) - transform(x)."""
        w = self.forward_weight
        if v.ndim != 1:
            raise ValueError(f"transform_direction takes one ({self.d_expert},) direction, got shape "
                             f"{tuple(v.shape)}: use transform for batches of activations")
        v = self._check(v[None], "expert")[0]
        return (v.double() @ w.to(v.device)).to(v.dtype)

    # ---- evaluation -----------------------------------------------------------------
    def report(self, expert_heldout: Float[Tensor, "n d_expert"],
               target_heldout: Float[Tensor, "n_target d_target"] | None = None) -> dict[str, float]:
        """Held-out quality, variance-weighted over features (1 = perfect, 0 = the mean).

        ``reconstruction_r2`` / ``explained_variance``: expert -> aligned -> back to expert
        (explained variance ignores a constant offset). With target rows also
        ``target_r2`` / ``target_explained_variance`` (transform(expert) vs target) and
        ``inverse_r2`` (inverse_transform(target) vs expert). For the unpaired
        auto-encoder those are expected to be poor: its basis is arbitrary.
        """
        x = self._check(expert_heldout, "expert")
        if x.shape[0] < 2:
            raise ValueError("report needs at least 2 held-out rows to measure variance")
        xd = x.double()
        aligned = self.transform(xd)
        back = self.inverse_transform(aligned)
        out = {"n": float(x.shape[0]), "reconstruction_r2": _r2(xd, back),
               "explained_variance": _explained_variance(xd, back)}
        if target_heldout is not None:
            y = self._check(target_heldout, "target").double()
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"report got {x.shape[0]} expert rows but {y.shape[0]} target rows: "
                                 "pass the same held-out prompts on both sides")
            out["target_r2"] = _r2(y, aligned)
            out["target_explained_variance"] = _explained_variance(y, aligned)
            out["inverse_r2"] = _r2(xd, self.inverse_transform(y))
        return out

    # ---- persistence ----------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted maps and metadata to one safetensors file, atomically."""
        maps = {k: self._get(k).contiguous() for k in _MAPS}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "class": type(self).__name__,
                "name": self.name, "d_expert": self.d_expert, "d_target": self.d_target,
                "hyperparameters": self.hparams, "fit_info": self.fit_info}
        data = st_save(maps, metadata={"steer_lens": json.dumps(meta)})
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Aligner":
        """Load a saved aligner; on a subclass, insist the file holds that class."""
        obj = load_aligner(path)
        if not isinstance(obj, cls):
            raise ValueError(f"{path} holds a {type(obj).__name__}, not a {cls.__name__}: "
                             "use load_aligner(path) to load whatever it holds")
        return obj

    # ---- validation -----------------------------------------------------------------
    def _check(self, t: Tensor, role: str) -> Tensor:
        """Shape, width and finiteness checks; returns ``t`` unchanged."""
        who = type(self).__name__
        width, other, other_role = ((self.d_expert, self.d_target, "target") if role == "expert"
                                    else (self.d_target, self.d_expert, "expert"))
        if t.ndim != 2:
            raise ValueError(f"{who} expects a 2-D (n, {width}) tensor of {role} activations for one "
                             f"layer, got shape {tuple(t.shape)}: select one layer and pool per prompt")
        if t.shape[1] != width:
            hint = (f"did you pass {other_role} activations?" if t.shape[1] == other else
                    "check which model and layer the activations came from")
            raise ValueError(f"{who} expects {width}-wide {role} activations, got {t.shape[1]}: {hint}")
        if not t.is_floating_point():
            raise ValueError(f"{who} expects floating-point {role} activations, got {t.dtype}")
        bad = ~torch.isfinite(t)
        if bad.any():
            rows = int(bad.any(1).sum())
            raise ValueError(f"{role} activations contain {int(bad.sum())} NaN/inf values in {rows} rows: "
                             "drop or fix those rows (e.g. rows[torch.isfinite(rows).all(1)])")
        return t

    def _check_maps(self, maps: dict[str, Tensor]) -> None:
        want = {"forward_weight": (self.d_expert, self.d_target), "forward_bias": (self.d_target,),
                "inverse_weight": (self.d_target, self.d_expert), "inverse_bias": (self.d_expert,)}
        for key, shape in want.items():
            if key not in maps or tuple(maps[key].shape) != shape:
                got = tuple(maps[key].shape) if key in maps else "missing"
                raise ValueError(f"{type(self).__name__}: map {key} should have shape {shape}, got {got}")
            if not torch.isfinite(maps[key]).all():
                raise ValueError(f"{type(self).__name__}: map {key} has NaN/inf entries "
                                 "(the fit diverged: standardise inputs or lower the learning rate)")


def _r2(true: Tensor, pred: Tensor) -> float:
    ss_res = ((true - pred) ** 2).sum()
    ss_tot = ((true - true.mean(0)) ** 2).sum()
    return float(1.0 - ss_res / ss_tot.clamp_min(1e-300))


def _explained_variance(true: Tensor, pred: Tensor) -> float:
    resid = true - pred
    return float(1.0 - resid.var(0).sum() / true.var(0).sum().clamp_min(1e-300))


def load_aligner(path: str | os.PathLike) -> Aligner:
    """Load any aligner written by ``Aligner.save`` (class chosen from the file)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no aligner file at {path}: write one with aligner.save(path)")
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("steer_lens")
        maps = {k: f.get_tensor(k) for k in f.keys()}
    if raw is None:
        raise ValueError(f"{path} is a safetensors file without steer_lens aligner metadata: "
                         "was it written by Aligner.save?")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} holds {meta.get('format')!r}, not {FORMAT!r}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path} uses aligner format v{meta['format_version']}; this steer_lens reads "
                         f"up to v{FORMAT_VERSION}: upgrade steer_lens")
    cls = REGISTRY.get(meta.get("name", ""))
    if cls is None or cls.__name__ != meta.get("class"):
        raise ValueError(f"{path} holds unknown aligner {meta.get('class')!r} ({meta.get('name')!r}); "
                         f"known: {sorted(REGISTRY)}")
    obj = cls(int(meta["d_expert"]), int(meta["d_target"]), **meta.get("hyperparameters", {}))
    obj._check_maps(maps)
    obj._maps = {k: maps[k].double().contiguous() for k in _MAPS}
    obj.fit_info = dict(meta.get("fit_info", {}))
    return obj
