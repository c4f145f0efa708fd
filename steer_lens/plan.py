"""A fitted steering plan: vectors keyed by target hook, the layer pairs and MI that chose them.

Saved as a folder (``plan.json`` + ``tensors.safetensors``), written atomically, loaded
without executing code; applying it checks the target's width and layer count.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from .io import atomic_dir
from .field import check_mode, fields_from_state, fields_state, negated, steer_field
from .steer import steer

PLAN_FORMAT = 2  # 2: may carry RFM fields (mode='field'); plans without them are still written as 1


@dataclass(frozen=True)
class LayerPairInfo:
    """One intervention pair: expert layer i steers target layer j (MI in nats)."""

    expert_layer: int
    target_layer: int
    mi: float


def model_card(model) -> dict:
    """What a plan records about a model so it can refuse a different one."""
    return {
        "name": str(getattr(model.cfg, "model_name", "unknown")),
        "d_model": int(model.cfg.d_model),
        "n_layers": int(model.cfg.n_layers),
        "compatibility_mode": bool(getattr(model, "compatibility_mode", False)),
    }


@dataclass
class SteeringPlan:
    """Steering vectors in the target's width, keyed by target hook name.

    ``vectors[hook]`` is unit-norm; ``norms[hook]`` is the target's median residual
    norm there, so ``apply(strength=s)`` adds ``s × norm × vector`` (relative scale).
    ``aligners[(expert_layer, target_layer)]`` (in memory only, not saved) is the fitted map
    from that expert layer into the space the pair's RFM direction was found in.
    ``rfms[hook]`` (``settings["mode"] == "field"`` plans only, saved) are the fitted RFMs whose
    normalised gradient steers each token there instead of the fixed vector (``steer_lens.field``).
    """

    vectors: dict[str, Float[Tensor, " d_target"]]
    pairs: list[LayerPairInfo]
    mi: Float[Tensor, "expert_layer target_layer"] | None
    expert: dict
    target: dict
    norms: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)
    spectra: dict[str, Tensor] = field(default_factory=dict)
    expert_layers: list[int] = field(default_factory=list)
    target_layers: list[int] = field(default_factory=list)
    data_hash: str = ""
    aligners: dict = field(default_factory=dict, repr=False, compare=False)
    rfms: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def mode(self) -> str:
        """"fixed" (add the vectors) or "field" (add each token's RFM gradient direction)."""
        return self.settings.get("mode", "fixed")

    def check_compatible(self, model) -> None:
        card = model_card(model)
        for key in ("d_model", "n_layers"):
            if card[key] != self.target[key]:
                raise ValueError(
                    f"this plan was fitted for {self.target['name']!r} ({key}={self.target[key]}) "
                    f"but the model has {key}={card[key]}; fit a plan for this model"
                )

    def apply(self, model, strength: float = 1.0, *, positions: str = "all", scale: str = "relative",
              mode: str | None = None):
        """A ``steer(...)`` context adding ``strength`` × each vector at its hook, or with
        ``mode="field"`` (the default for field plans) × each token's unit RFM gradient.
        ``mode="fixed"`` on a field plan uses its fixed vectors (top AGOP eigenvectors)."""
        self.check_compatible(model)
        norms = self.norms if scale == "relative" else None
        if check_mode(self.mode if mode is None else mode) == "field":
            if not self.rfms:
                raise ValueError("this plan has no RFM fields (fitted with mode='fixed'); refit it with "
                                 "mode='field' or apply it with mode='fixed'")
            return steer_field(model, self.rfms, strength, positions=positions, scale=scale, norms=norms)
        return steer(model, self.vectors, strength, positions=positions, scale=scale, norms=norms)

    def scaled(self, factor: float) -> "SteeringPlan":
        """A copy whose vectors are multiplied by ``factor`` (e.g. -1 to steer away)."""
        out = SteeringPlan(**{**self.__dict__})
        sign = -1.0 if factor < 0 else 1.0  # vectors stay unit-norm; the size lives in norms
        out.vectors = {k: v * sign for k, v in self.vectors.items()}
        out.norms = {k: n * abs(factor) for k, n in self.norms.items()}
        if sign < 0 and self.rfms:  # the field of -f points the other way
            out.rfms = {k: [negated(r) for r in v] for k, v in self.rfms.items()}
        return out

    # ---- persistence --------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``plan.json`` and ``tensors.safetensors`` into ``folder`` atomically."""
        folder = Path(folder)
        tensors = {f"vector/{k}": v.contiguous().float() for k, v in self.vectors.items()}
        tensors.update({f"spectrum/{k}": v.contiguous().float() for k, v in self.spectra.items()})
        if self.mi is not None:
            tensors["mi"] = self.mi.contiguous().float()
        from . import __version__

        field_tensors, fields = fields_state(self.rfms)
        tensors.update(field_tensors)
        meta = {
            "format": PLAN_FORMAT if fields else 1, "library_version": __version__,
            "pairs": [p.__dict__ for p in self.pairs], "expert": self.expert, "target": self.target,
            "norms": self.norms, "settings": self.settings, "reports": self.reports,
            "expert_layers": self.expert_layers, "target_layers": self.target_layers,
            "data_hash": self.data_hash, "hooks": list(self.vectors),
        }
        if fields:
            meta["fields"] = fields
        with atomic_dir(folder) as tmp:
            save_file(tensors, str(tmp / "tensors.safetensors"))
            (tmp / "plan.json").write_text(json.dumps(meta, indent=1, default=float))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "SteeringPlan":
        folder = Path(folder)
        for name in ("plan.json", "tensors.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not a saved plan: {name} is missing")
        try:
            meta = json.loads((folder / "plan.json").read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{folder / 'plan.json'} is corrupted ({err}); re-save the plan") from None
        if not isinstance(meta, dict) or "format" not in meta:
            raise ValueError(f"{folder / 'plan.json'} is not a steer-lens plan")
        if meta["format"] > PLAN_FORMAT:
            raise ValueError(f"{folder} has plan format {meta['format']} but this steer-lens reads "
                             f"up to {PLAN_FORMAT}; upgrade steer-lens")
        try:
            tensors = load_file(str(folder / "tensors.safetensors"))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{folder / 'tensors.safetensors'} is corrupted ({err}); re-save the plan") from None
        missing = [h for h in meta["hooks"] if f"vector/{h}" not in tensors]
        if missing:
            raise ValueError(f"{folder} lacks vectors for {missing}; re-save the plan")
        return cls(
            vectors={h: tensors[f"vector/{h}"] for h in meta["hooks"]},
            pairs=[LayerPairInfo(**p) for p in meta["pairs"]],
            mi=tensors.get("mi"), expert=meta["expert"], target=meta["target"],
            norms=meta["norms"], settings=meta["settings"], reports=meta["reports"],
            spectra={k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("spectrum/")},
            expert_layers=meta["expert_layers"], target_layers=meta["target_layers"],
            data_hash=meta["data_hash"], rfms=fields_from_state(tensors, meta.get("fields", {})),
        )


def plans_sum(plans: list[SteeringPlan]) -> dict[str, Tensor]:
    """Summed absolute vectors of several plans (norm × vector), for combined steering."""
    out: dict[str, Tensor] = {}
    for plan in plans:
        for hook, vec in plan.vectors.items():
            add = vec * plan.norms.get(hook, 1.0)
            out[hook] = out.get(hook, torch.zeros_like(add)) + add
    return out
