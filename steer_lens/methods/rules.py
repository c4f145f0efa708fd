"""The rule set: every setting that decides what a benchmark row selects and scores.

One frozen object, hashed into every cache key and every row (``RuleSet.hash``), so a row is
never reused under other rules. ``RuleSet()`` is the current rule set (the "flips" validation
search); ``RuleSet.reference()`` the same rules under the reference search, the rule set of the
committed benchmark rows and of the preregistered confirmation (hash ``abca3c4a0a``);
``RuleSet.fast()`` the current rules on tiny item counts (tests, smoke runs).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from ..protocol import StrengthSearch


@dataclass(frozen=True)
class RuleSet:
    """How every method is fitted, chosen and scored.

    limit_train   train items (each gives two contrast prompts)
    limit_val     validation items the strength and candidate are chosen on
    limit_test    test items scored once per row
    grid          coarse strength grid (x median residual norm); 0 = no steering is always tried
    refine_rounds refinement rounds of the strength search (``steer_lens.protocol``)
    extend_flat   also extend the strengths while the validation curve is flat
    n_pairs       layer pairs of the MI pair rules (lowest / highest MI)
    pair_shortlist expert layers shortlisted on train for the validation pair rule
    expert_layers (first, last) expert-layer window of the validation pair rule (None: the middle half)
    layer_shortlist target layers shortlisted on train for CAA-like methods
    iti_heads     attention heads steered by ITI
    ae_epochs     max epochs of the hybrid aligner (the auto-encoder is solved in closed form)
    strategy      the validation search: "flips" (the default; ``steer_lens.flips``: the
                  reference's points, each run only on the items whose answer is not yet known),
                  "reference" (every point on every item) or "halving" (``StrengthSearch.halving``:
                  screened on a share of the items); a non-reference strategy enters the hash, the
                  reference one leaves the hash as it was before the field existed
    """

    limit_train: int = 64
    limit_val: int = 100
    limit_test: int = 500
    grid: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2, 0.4)
    refine_rounds: int = 3
    extend_flat: bool = False
    n_pairs: int = 2
    pair_shortlist: int = 3
    expert_layers: tuple[int, int] | None = None
    layer_shortlist: int = 2
    iti_heads: int = 8
    ae_epochs: int = 300
    strategy: str = "flips"

    def __post_init__(self):
        for name in ("limit_train", "limit_val", "limit_test", "n_pairs", "pair_shortlist", "layer_shortlist",
                     "iti_heads", "ae_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"RuleSet.{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "grid", tuple(float(s) for s in self.grid))
        if self.expert_layers is not None:
            object.__setattr__(self, "expert_layers", tuple(int(x) for x in self.expert_layers))
        self.search()  # validates the grid

    @classmethod
    def reference(cls, **changes) -> "RuleSet":
        """The rules under the reference search (every point on every validation item): the rule
        set the committed benchmark rows were made under."""
        return cls(**{"strategy": "reference", **changes})

    @classmethod
    def fast(cls, **changes) -> "RuleSet":
        """The same rules on a few items (tiny models, smoke tests)."""
        return replace(cls(limit_test=8, limit_val=6, limit_train=20, grid=(0.5, 1.0), ae_epochs=50,
                           refine_rounds=1, pair_shortlist=2), **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = list(self.grid)
        d["expert_layers"] = list(self.expert_layers) if self.expert_layers else None
        if d["strategy"] == "reference":  # the rows made before the field existed keep their keys
            del d["strategy"]
        return d

    @property
    def hash(self) -> str:
        """10 hex digits of the rules' SHA-1: the rule set's name in caches, rows and the ledger."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]

    def search(self, signed: bool = False) -> StrengthSearch:
        """The validation strength search under these rules."""
        return StrengthSearch(grid=self.grid, refine_rounds=self.refine_rounds, signed=signed,
                              extend_flat=self.extend_flat, strategy=self.strategy)

    def replace(self, **changes) -> "RuleSet":
        return replace(self, **changes)


__all__ = ["RuleSet"]
