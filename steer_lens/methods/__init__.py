"""Every steering recipe as a named object, and the registry that holds them.

    import steer_lens as sl
    sl.methods.available()                 # every name, each method before its random control
    m = sl.methods.get("expertsteer_label")
    print(m.doc, m.needs_expert, m.control)

A method fits on TRAIN, proposes candidate plans, is chosen on VALIDATION and scored once on
TEST beside its control (``steer_lens.bench`` runs them; ``steer_lens.methods.run_method`` runs one
on one dataset). Add your own with ``@register`` on a ``Method`` subclass (see ``base``).
"""

from .base import Context, Method, Reference, plan_layers
from .rules import RuleSet
from .registry import available, control_of, get, register, unregister, with_controls
from .controls import RandomControl
from . import reference, target, expertsteer, pca  # noqa: F401  (register the built-in methods)
from . import prompting  # noqa: F401  (the baselines a user would pick instead of steering)
from .expertsteer import PAPER, ExpertSteerMethod, Variant
from .target import LayerMethod
from .pca import pca_direction
from .fit import fit_method

__all__ = ["Context", "ExpertSteerMethod", "LayerMethod", "Method", "PAPER", "RandomControl", "Reference",
           "RuleSet", "Variant", "available", "control_of", "fit_method", "get", "pca_direction", "plan_layers", "register",
           "unregister", "with_controls"]
