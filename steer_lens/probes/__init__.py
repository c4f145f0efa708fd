"""Probes for steering vectors: what a vector reads and writes, where it lives, what it does.

One module per probe family:

* `logit_lens`: unembed a vector (through the final norm) and the direct effect of steering
  on next-token logits.
* `similarity`: cosine matrices between vectors of different methods, per layer.
* `probing`: AUROC of the 1-D projection on a vector vs a full logistic probe, per layer.
* `spectrum`: AGOP spectrum summaries over RFM iterations; record the pipeline's RFMs.
* `attribution`: per-token projections, gradient × activation attribution of an answer's
  log-prob to the steering vector's components and positions; the answer's readout gradient.
* `ablation`: steer with each layer of a plan alone / with each one removed.
* `components`: direct logit attribution of an answer margin, and of a steering effect on it, to
  the embeddings, each block's attention (or head) and MLP, and the added vectors.
"""

from .ablation import accuracy_metric, answer_metrics, layer_ablation, margin_metric, subplan
from .components import ComponentAttribution, margin_components
from .attribution import Attribution, TokenProjection, answer_gradient, steering_attribution, token_projections
from .logit_lens import DirectEffect, LensResult, direct_effect, last_logits, logit_lens, unembed_scores
from .probing import auroc, logistic_probe_auroc, probe_along_vector, projection_auroc
from .similarity import cosine_matrix, method_similarity
from .spectrum import agop_history, recording_directions, spectrum_stats

__all__ = [
    "logit_lens", "unembed_scores", "LensResult", "direct_effect", "DirectEffect", "last_logits",
    "cosine_matrix", "method_similarity",
    "auroc", "projection_auroc", "logistic_probe_auroc", "probe_along_vector",
    "spectrum_stats", "agop_history", "recording_directions",
    "token_projections", "TokenProjection", "steering_attribution", "Attribution", "answer_gradient",
    "layer_ablation", "subplan", "margin_metric", "accuracy_metric", "answer_metrics",
    "margin_components", "ComponentAttribution",
]
