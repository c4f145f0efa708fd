"""Self-steering with an RFM: the top AGOP eigenvector of an RFM separating the target's own
positive and negative span-mean activations at one layer (ExpertSteer without the expert)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..field import check_mode
from ..rfm import RFMConfig, steering_vector
from ..tokens import Prompt
from .common import baseline_plan, hook_norms, pooled_activations, resid_hook


def fit_self_rfm(model, positives: Sequence[Prompt], negatives: Sequence[Prompt], layer: int, *,
                 config: RFMConfig | None = None, hook: str = "resid_post", chat_template: bool | None = None,
                 acts: tuple[Tensor, Tensor] | None = None, acts_layers: Sequence[int] | None = None,
                 seed: int = 0, mode: str = "fixed"):
    """SteeringPlan with the RFM direction (oriented towards the positives) at ``layer``;
    ``mode="field"`` also keeps the RFM, whose per-token gradient then steers (``steer_lens.field``)."""
    check_mode(mode)
    if acts is None:
        acts, acts_layers = pooled_activations(model, positives, negatives, [layer], hook=hook,
                                               chat_template=chat_template), [layer]
    i = list(acts_layers).index(layer)
    direction = steering_vector(acts[0][:, i], acts[1][:, i], config=config or RFMConfig(), seed=seed)
    name = resid_hook(model, layer, hook)
    norms = hook_norms(model, list(positives) + list(negatives), [layer], hook, chat_template)
    plan = baseline_plan(model, {name: direction.vector}, norms, method="self_rfm",
                         settings={"layer": layer, "hook": hook, "top_share": direction.top_share, "mode": mode})
    if mode == "field":
        plan.rfms = {name: [direction.rfm]}
    return plan
