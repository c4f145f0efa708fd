"""steer-lens: ExpertSteer and friends on TransformerLens.

Steer a *target* language model with steering vectors learned from an *expert* model's
activations (Wang, Wu, Haddow, Birch 2025), plus the baselines, probes and evaluation
needed to tell whether it helps.
"""

__version__ = "0.1.0"

from .activations import Activations, capture
from .data import contrast_prompts, list_datasets, load_dataset
from .generate import generate
from .models import load_model
from .pipeline import ExpertSteer
from .plan import SteeringPlan
from .rfm import RFMConfig, steering_vector
from .steer import steer

__all__ = [
    "Activations", "ExpertSteer", "RFMConfig", "SteeringPlan", "capture", "contrast_prompts",
    "generate", "list_datasets", "load_dataset", "load_model", "steer", "steering_vector",
]
