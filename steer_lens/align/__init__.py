"""Dimension alignment: map one expert layer's activations into the target model's width.

One interface (``Aligner``: fit / transform / inverse_transform / transform_direction /
report / save / load), four methods behind a one-word switch::

    aligner = make_aligner("ridge", d_expert=640, d_target=576).fit(expert_acts, target_acts)
    v_target = aligner.transform_direction(v_expert)
    aligner.save("aligner.safetensors"); same = load_aligner("aligner.safetensors")

Names: "autoencoder" (paper-faithful, unpaired), "ridge", "procrustes", "hybrid".
"""

import inspect
from typing import Any

from .autoencoder import AutoEncoderAligner
from .base import FORMAT_VERSION, REGISTRY, Aligner, load_aligner
from .hybrid import HybridAutoEncoderAligner
from .procrustes import ProcrustesAligner
from .ridge import RidgeAligner

__all__ = ["Aligner", "AutoEncoderAligner", "HybridAutoEncoderAligner", "ProcrustesAligner",
           "RidgeAligner", "make_aligner", "load_aligner", "aligner_names", "FORMAT_VERSION"]


def aligner_names() -> list[str]:
    """The names ``make_aligner`` accepts."""
    return sorted(REGISTRY)


def make_aligner(name: str, d_expert: int, d_target: int, **kwargs: Any) -> Aligner:
    """An unfitted aligner by name; ``kwargs`` are that class's hyper-parameters."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown aligner {name!r}: choose one of {aligner_names()}")
    accepted = _hyperparameters(cls)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"aligner {name!r} has no hyper-parameter(s) {unknown}: it accepts {sorted(accepted)}")
    return cls(d_expert, d_target, **kwargs)


def _hyperparameters(cls: type[Aligner]) -> set[str]:
    """Keyword-only constructor parameters, following ``**kwargs`` up the class chain."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is Aligner or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind == p.KEYWORD_ONLY}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names
