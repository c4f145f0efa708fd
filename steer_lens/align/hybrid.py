"""Auto-encoder with a paired term: the code should also match the target's activations."""

from typing import Any

from .autoencoder import AutoEncoderAligner


class HybridAutoEncoderAligner(AutoEncoderAligner):
    """``AutoEncoderAligner`` whose loss adds ``paired_weight * mean ||enc(x) - y||^2``.

    ``y`` is the same prompts' target activations, standardised like the expert side,
    so the code lives in the target's own coordinates (unlike the plain auto-encoder)
    while the decoder still reconstructs the expert. ``paired_weight=0`` gives the plain
    auto-encoder's loss (but still needs target rows); large weights approach a
    regression expert -> target. All other keywords as ``AutoEncoderAligner``.
    """

    name = "hybrid"
    paired = True

    def __init__(self, d_expert: int, d_target: int, *, paired_weight: float = 1.0, **kwargs: Any) -> None:
        if paired_weight < 0:
            raise ValueError(f"paired_weight must be >= 0, got {paired_weight}")
        super().__init__(d_expert, d_target, **kwargs)
        self.hparams["paired_weight"] = float(paired_weight)

    @classmethod
    def _solvers(cls) -> tuple[str, ...]:
        return ("adam",)  # the paired term has no closed form here

    def _paired_weight(self) -> float:
        return self.hparams["paired_weight"]
