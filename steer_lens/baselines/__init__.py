"""Baselines every ExpertSteer gain is compared against; each is fitted on train items only
and returns a SteeringPlan (unit vectors in the target's width, keyed by hook, plus norms)."""

from .caa import fit_caa
from .calibration import calibrated, fit_bias, signed_margins
from .common import baseline_plan, choose_layer, pooled_activations, shortlist_layers
from .iti import fit_iti
from .random_vector import random_plan
from .self_rfm import fit_self_rfm

__all__ = ["fit_caa", "fit_iti", "fit_self_rfm", "random_plan", "baseline_plan", "choose_layer",
           "pooled_activations", "shortlist_layers",
           "fit_bias", "calibrated", "signed_margins"]
