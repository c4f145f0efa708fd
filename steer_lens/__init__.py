"""steer-lens: ExpertSteer and friends on TransformerLens.

Steer a *target* language model with steering vectors learned from an *expert* model's
activations (Wang, Wu, Haddow, Birch 2025), plus the baselines, probes and evaluation
needed to tell whether it helps.
"""

__version__ = "0.5.0"

from .activations import Activations, capture
from .data import contrast_prompts, list_datasets, load_dataset
from .generate import generate
from .models import load_model
from .pipeline import ExpertSteer
from .plan import SteeringPlan
from .rfm import RFMConfig, steering_vector
from .steer import steer
from . import baselines, probes, methods, bench  # noqa: E402  (subpackages: sl.baselines.fit_caa, sl.methods.get)

# Last on purpose: the package attribute ``evaluate`` is the *function*. The module keeps working
# through ``from steer_lens.evaluate import bootstrap_ci`` (imports read sys.modules); the one form
# that now yields the function is ``import steer_lens.evaluate as ev``.
from .evaluate import EvalResult, evaluate  # noqa: E402

__all__ = [
    "Activations", "EvalResult", "ExpertSteer", "RFMConfig", "SteeringPlan", "baselines", "bench", "capture",
    "contrast_prompts", "evaluate", "generate", "list_datasets", "load_dataset", "load_model", "methods", "probes",
    "steer", "steering_vector",
]
