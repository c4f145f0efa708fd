"""The ExpertSteer family: alignment x contrast x pair rule x mode.

``expertsteer_autoencoder`` is the paper's specification (Wang et al. 2025): auto-encoder
alignment, right-vs-wrong contrast, the lowest-MI layer pairs, the fixed top AGOP eigenvector.
The others vary one axis at a time:

- alignment: ``autoencoder`` (paper), ``ridge``, ``procrustes`` (paired maps into the target's own
  coordinates), ``hybrid``;
- contrast: ``correct`` (right minus wrong completion) or ``label`` (choice 1 minus choice 0, signed
  strengths);
- pair rule: ``lowest`` / ``highest`` MI (``rules.n_pairs`` pairs), or ``validation``: the
  ``rules.pair_shortlist`` expert layers with the best train-only separation
  (``pipeline.shortlist_pairs``), one single-pair plan each, chosen on VALIDATION;
- mode: ``fixed`` vector, or ``field`` (each token steered along the RFM's gradient there).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Context, Method
from .registry import register

PAPER = "expertsteer_autoencoder"


@dataclass(frozen=True)
class Variant:
    alignment: str = "autoencoder"
    pair_rule: str = "lowest"  # "lowest" / "highest" MI, or "validation"
    contrast: str = "correct"  # "correct" or "label"
    mode: str = "fixed"  # "fixed" or "field"


class ExpertSteerMethod(Method):
    """ExpertSteer with one choice per axis (see the module docstring)."""

    needs_expert = True

    def __init__(self, name: str, variant: Variant, doc: str, *, reverse: bool = False):
        if variant.pair_rule not in ("lowest", "highest", "validation"):
            raise ValueError(f"pair_rule must be 'lowest', 'highest' or 'validation', got {variant.pair_rule!r}")
        self.name, self.variant, self._doc = name, variant, doc
        self.signed = variant.contrast == "label"
        self.reverse = reverse
        if reverse:  # the target steers the expert: compare with the expert's unsteered row
            self.steered_model, self.base_method = "expert", "expert_unsteered"

    @property
    def doc(self) -> str:
        return self._doc

    def config(self, ctx_or_rules, **kw):
        """The unfitted ``ExpertSteer`` of this variant under a context's (or a ``RuleSet``'s) rules."""
        from ..pipeline import ExpertSteer

        rules = getattr(ctx_or_rules, "rules", ctx_or_rules)
        v = self.variant
        akw = {"solver": "adam", "max_epochs": rules.ae_epochs} if v.alignment == "hybrid" else {}
        rule = "lowest" if v.pair_rule == "validation" else v.pair_rule
        return ExpertSteer(n_pairs=rules.n_pairs, alignment=v.alignment, rule=rule, aligner_kwargs=akw,
                           mode=v.mode, **kw)

    def models(self, ctx: Context):
        return (ctx.target, ctx.expert) if self.reverse else (ctx.expert, ctx.target)

    def candidates(self, ctx: Context) -> dict:
        from ..pipeline import shortlist_pairs

        expert, target = self.models(ctx)

        def compute():
            pos, neg = ctx.contrast(self.variant.contrast)
            acts = ctx.expert_acts(self.variant.contrast, expert, target)
            if self.variant.pair_rule != "validation":
                return {"mi_rule": self.config(ctx).fit(expert, target, pos, neg, activations=acts)}
            pairs = shortlist_pairs(acts[0], len(pos), expert, target, ctx.rules.pair_shortlist,
                                    window=ctx.rules.expert_layers)
            return {pair: self.config(ctx, pairs=[pair]).fit(expert, target, pos, neg, activations=acts)
                    for pair in pairs}
        # variants that differ only in name (none today) would share the fit
        return ctx.memo(("es", self.variant, self.reverse), compute)

    def plan_at(self, ctx: Context, row):
        """Fitted on ``ctx``'s TRAIN items at the row's (expert, target) layer pairs."""
        expert, target = self.models(ctx)
        pos, neg = ctx.contrast(self.variant.contrast)
        acts = ctx.expert_acts(self.variant.contrast, expert, target)
        pairs = [(p["expert_layer"], p["target_layer"]) for p in row["pairs"]]
        return self.config(ctx, pairs=pairs).fit(expert, target, pos, neg, activations=acts)


_VARIANTS = {
    PAPER: (Variant(), "The paper's specification: an affine auto-encoder maps each expert layer into the target's "
            "width, the lowest-MI (expert, target) layer pairs are kept, and an RFM on the right-vs-wrong "
            "contrast gives each pair's top AGOP eigenvector; strength chosen on VALIDATION."),
    "expertsteer_ridge": (Variant("ridge"), "ExpertSteer with a ridge map into the target's own coordinates "
                          "(cross-validated lambda), lowest-MI pairs, right-vs-wrong contrast."),
    "expertsteer_procrustes": (Variant("procrustes"), "ExpertSteer with an orthogonal map after whitening "
                               "(Procrustes), lowest-MI pairs, right-vs-wrong contrast."),
    "expertsteer_highest_mi": (Variant(pair_rule="highest"), "The paper's specification with the highest-MI "
                               "pairs instead of the lowest (an ablation of the pair rule)."),
    "expertsteer_hybrid": (Variant("hybrid"), "ExpertSteer with the hybrid aligner (auto-encoder plus a paired "
                           "term, trained with Adam), lowest-MI pairs."),
    "expertsteer_label": (Variant("ridge", "validation", "label"),
                          "The expert's label direction: ridge alignment, label contrast (choice 1 minus "
                          "choice 0), the train-shortlisted pair rule with the pair and signed strength "
                          "chosen on VALIDATION."),
    "expertsteer_label_lowest_mi": (Variant("ridge", "lowest", "label"),
                                    "The expert's label direction at the paper's lowest-MI pairs (the pair rule "
                                    "the validation rule is judged against)."),
    "expertsteer_ridge_field": (Variant("ridge", "lowest", "correct", "field"),
                                "Context-dependent ExpertSteer: each token steered along the unit gradient of "
                                "the pair's RFM at that token (ridge alignment, lowest-MI pairs)."),
    "expertsteer_label_field": (Variant("ridge", "validation", "label", "field"),
                                "The expert's label direction as a field: each token steered along the RFM's "
                                "gradient there, validation pair rule, signed strengths."),
}
_CONTROLS = {PAPER: "random", "expertsteer_label": "random_label", "expertsteer_ridge": "random_ridge",
             "expertsteer_procrustes": "random_procrustes", "expertsteer_hybrid": "random_hybrid",
             "expertsteer_highest_mi": "random_highest_mi", "expertsteer_label_lowest_mi": "random_label_lowest_mi",
             "expertsteer_ridge_field": "random_field", "expertsteer_label_field": "random_label_field"}

for _name, (_variant, _doc) in _VARIANTS.items():
    _m = ExpertSteerMethod(_name, _variant, _doc)
    _m.control = _CONTROLS.get(_name, "auto")
    register(_m)

_rev = ExpertSteerMethod("reverse_expertsteer_autoencoder", Variant(),
                         "The paper's specification in the other direction: the target steers the expert "
                         "(compare with expert_unsteered).", reverse=True)
_rev.control = "reverse_random"
register(_rev)
