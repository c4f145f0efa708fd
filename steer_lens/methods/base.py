"""What a steering recipe is, and what it sees while it runs.

A ``Method`` is a named, documented recipe. It fits on TRAIN items only, proposes candidate
plans (``candidates``), lets ``steer_lens.protocol.choose`` pick one candidate and a strength on
VALIDATION, and is scored once on TEST beside its matched random control (``control``). The
``Context`` it runs in (built by ``steer_lens.bench``, or by hand for one dataset) holds the
models, the splits, the rule set and every shared computation (captures, the unsteered
validation pass), so methods that need the same capture share it.

A new method is one subclass and one ``@register`` (``steer_lens.methods.register``)::

    @register
    class MeanDiffLast(Method):
        '''Mean difference of the last prompt token's residual at the middle layer.'''
        name = "mean_diff_last"

        def candidates(self, ctx):
            layer = ctx.target.cfg.n_layers // 2
            return {layer: fit_caa(ctx.target, *ctx.contrast("correct"), layer, position="last")}

and ``steer-lens bench --methods mean_diff_last random_mean_diff_last`` then runs it with its
random control (registered with it unless ``control = None``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import ClassVar

from ..data import MCDataset, contrast_prompts
from ..evaluate import EvalResult, evaluate
from ..plan import SteeringPlan
from ..protocol import StrengthSearch, choose
from ..search_store import SearchStore
from .rules import RuleSet


def plan_layers(plan) -> list[int]:
    """The target layers a plan steers, sorted (``blocks.N.hook_...`` keys)."""
    return sorted(int(h.split(".")[1]) for h in plan.vectors)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


class Context:
    """One dataset's run: models, splits, rules, and a memo of what methods share.

    ``row_of(name)`` returns another method's TEST row on this dataset (computed and cached by the
    runner if needed): controls read their matched method's strength and layers from it, and
    calibration reads the unsteered margins.

    ``choice_of(name)`` (optional) returns a row whose validation choice a method reuses instead of
    searching again: the same method's row on another scored split under the same rules (fit on the
    same TRAIN items, chosen on the same VALIDATION items), or None to search. It lets one choice be
    scored on ``test`` and on ``confirm`` without repeating the search.

    ``train_seed``: the seed of the rules' TRAIN subsample (``limit_train`` items); another seed fits
    on other items (the spread of a method over fits).

    ``share_test``: steered TEST passes go through ``steer_lens.sweep`` with one ``SweepInputs`` of
    the test items per model, kept on the context: a method and its random control (same hooks),
    and methods steering from the same block, run the unsteered blocks below it once (same
    predictions as ``evaluate`` within float tolerance; the kept residuals cost memory: items x
    tokens x d_model per block level, two levels). False: one ``evaluate`` per pass.

    ``search_store(name)`` (optional) returns the ``steer_lens.search_store.SearchStore`` in which method
    ``name``'s validation search keeps its points (an interrupted search run again replays them), or None."""

    def __init__(self, dataset: MCDataset, target, expert, rules: RuleSet, *,
                 row_of: Callable[[str], dict] | None = None, batch_size: int = 8,
                 test_split: str = "test", choice_of: Callable[[str], dict | None] | None = None,
                 train_seed: int = 0, share_test: bool = True,
                 search_store: Callable[[str], SearchStore | None] | None = None):
        self.dataset, self.target, self.expert, self.rules = dataset, target, expert, rules
        self.search_store = search_store
        self.share_test = share_test
        self.batch_size, self.test_split = batch_size, test_split
        self.choice_of = choice_of
        self.train = dataset.split("train", limit=rules.limit_train, seed=train_seed)
        self.val = dataset.split("validation", limit=rules.limit_val)
        self.domain = self.train[0].domain if self.train else ""
        self._row_of = row_of
        self._memo: dict = {}

    # -- shared computations -------------------------------------------------------------------
    def memo(self, key, compute: Callable[[], object]):
        """``compute()`` once per key per dataset (captures, fits, validation passes)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def contrast(self, kind: str = "correct"):
        """(positives, negatives) from TRAIN: "correct" (right minus wrong completion) or "label"
        (choice 1 minus choice 0 on every item)."""
        return self.memo(("contrast", kind), lambda: contrast_prompts(self.train, by=kind))

    def target_acts(self, kind: str = "correct"):
        """((pos, neg) pooled target activations at every layer, layers): shared by CAA-like methods."""
        from ..baselines import pooled_activations

        def compute():
            layers = list(range(self.target.cfg.n_layers))
            return pooled_activations(self.target, *self.contrast(kind), layers), layers
        return self.memo(("target_acts", kind), compute)

    def expert_acts(self, kind: str, expert, target):
        """One capture of both models on the contrast prompts, shared by every ExpertSteer variant."""
        from ..pipeline import ExpertSteer

        def compute():
            pos, neg = self.contrast(kind)
            return ExpertSteer().capture(expert, target, list(pos) + list(neg))
        return self.memo(("expert_acts", kind, id(expert), id(target)), compute)

    def val0(self, model) -> EvalResult:
        """The unsteered VALIDATION result of ``model``, shared by every method steering it."""
        return self.memo(("val0", id(model)), lambda: evaluate(model, self.val, batch_size=self.batch_size))

    def recorded_choice(self, method: str) -> dict | None:
        """The row whose validation choice ``method`` reuses here (see ``choice_of``), or None."""
        return self.choice_of(method) if self.choice_of is not None else None

    def row(self, method: str) -> dict:
        """Another method's TEST row on this dataset (from the runner's cache)."""
        if self._row_of is None:
            raise RuntimeError(f"this context has no runner to compute the {method!r} row; run the method "
                               "through steer_lens.bench.Bench")
        return self._row_of(method)

    # -- scoring -------------------------------------------------------------------------------
    def search(self, signed: bool = False) -> StrengthSearch:
        return self.rules.search(signed=signed)

    def test_items(self) -> list:
        """The TEST items every method scores (``rules.limit_test`` of them, the same for every method)."""
        return self.memo(("test_items",), lambda: self.dataset.split(self.test_split, limit=self.rules.limit_test))

    def test(self, model, plan=None, strength: float = 0.0) -> dict:
        """Score the TEST split once (the only place a method reads it)."""
        from ..sweep import SweepInputs, sweep, sweepable

        if self.share_test and plan is not None and strength != 0 and sweepable(plan):
            items = self.test_items()
            inputs = self.memo(("test_inputs", id(model)),
                               lambda: SweepInputs(model, items, batch_size=self.batch_size, keep=2))
            r = sweep(model, items, plan, [strength], batch_size=self.batch_size, inputs=inputs)[0]
        else:
            r = evaluate(model, self.dataset, split=self.test_split, limit=self.rules.limit_test, plan=plan,
                         strength=strength, batch_size=self.batch_size)
        return {**r.to_dict(), "domain": self.domain, "model": str(model.cfg.model_name)}

    def select(self, model, candidates: Mapping[object, SteeringPlan], *, signed: bool = False,
               base_method: str = "unsteered", method: str | None = None) -> tuple[object, float, dict]:
        """Choose a candidate and a strength on VALIDATION; returns (key, strength, extra row fields).
        ``method``: whose search it is (its points go to ``search_store(method)`` when the context has one)."""
        store = self.search_store(method) if self.search_store is not None and method else None
        c = choose(model, self.val, candidates, search=self.search(signed), zero=self.val0(model),
                   batch_size=self.batch_size, store=store)
        extra = {"val_curve": c.curves[c.key]}
        if len(candidates) > 1:
            extra["candidate_val"] = {str(k): v for k, v in c.curves.items()}
        return c.key, c.strength, extra

    def finish(self, model, plan, strength: float, base_method: str = "unsteered", **extra) -> dict:
        """The TEST row of ``plan`` at ``strength``; strength 0 (= no steering) reuses the
        unsteered row of the same model instead of scoring TEST again."""
        if strength == 0:
            base = self.row(base_method)
            row = {k: v for k, v in base.items() if k not in ("method", "seconds", "strength", "layers",
                                                                 "rule_set", "dataset_key")}
        else:
            row = self.test(model, plan, strength)
        row.update(strength=strength, layers=plan_layers(plan), n_val=len(self.val),
                   pairs=[p.__dict__ for p in plan.pairs], plan_settings=_jsonable(plan.settings), **extra)
        return row


class Method:
    """A steering recipe (subclass it; set ``name`` and a docstring, override ``candidates``).

    Class attributes:
      ``name``         the registry name (a row's ``method``).
      ``needs_expert`` True if the recipe reads the expert model (its rows are keyed by the expert).
      ``control``      the name of its matched random control, registered with it by ``register``
                       ("auto": ``random_<name>``; None: no control, as for the unsteered references).
      ``signed``       also search negative strengths (label directions, whose useful sign depends
                       on the model's bias).
      ``reference``    a reference row (no steering of its own): no significance tally.
      ``alternative``  what a user could do instead of steering (prompting, fine-tuning the target, the
                       expert itself): the report tests every steering method against it.
    """

    name: ClassVar[str] = ""
    needs_expert: ClassVar[bool] = False
    control: ClassVar[str | None] = "auto"  # "auto": random_<name>; None: no control
    signed: ClassVar[bool] = False
    reference: ClassVar[bool] = False
    alternative: ClassVar[bool] = False
    steered_model: ClassVar[str] = "target"  # "expert" for the reverse direction
    # what a row depends on, i.e. its cache key: "test" (the scored model and the test items only),
    # "target" (the rules and the target) or, by default for needs_expert, "expert" (also the expert)
    scope: ClassVar[str | None] = None
    base_method: ClassVar[str] = "unsteered"  # the unsteered row of the steered model

    @property
    def doc(self) -> str:
        return " ".join((type(self).__doc__ or "").split())

    def row_scope(self) -> str:
        return self.scope or ("expert" if self.needs_expert else "target")

    def applies(self, dataset: MCDataset) -> bool:
        """Whether the method has a row on ``dataset`` (e.g. calibration needs two-way items)."""
        return True

    def model(self, ctx: Context):
        return ctx.expert if self.steered_model == "expert" else ctx.target

    def candidates(self, ctx: Context) -> dict[object, SteeringPlan]:
        """Candidate plans fitted on TRAIN only; validation chooses among them."""
        raise NotImplementedError(f"{type(self).__name__} must define candidates(ctx) or run(ctx)")

    def choose(self, ctx: Context) -> tuple[object, float, dict]:
        """(candidate key, strength, curves) chosen on VALIDATION, once per context: ``fit_method`` and the
        runner's row share the search when they share the context. A choice recorded for this context
        (``Context.choice_of``) is reused instead of searching again."""
        def compute():
            recorded = ctx.recorded_choice(self.name)
            if recorded is not None:
                return self.recorded_choice(ctx, recorded)
            return ctx.select(self.model(ctx), self.candidates(ctx), signed=self.signed,
                              base_method=self.base_method, method=self.name)
        return ctx.memo(("choice", self.name), compute)

    def recorded_choice(self, ctx: Context, row: Mapping) -> tuple[object, float, dict]:
        """(candidate key, strength, curves) of a row chosen earlier under the same rules: the candidate
        steering the row's layers, the row's strength and validation curves, and where they came from."""
        cands = self.candidates(ctx)
        key = next((k for k, plan in cands.items() if plan_layers(plan) == list(row["layers"])), None)
        if key is None:
            raise ValueError(f"no {self.name} candidate on {ctx.dataset.name!r} steers layers {row['layers']} "
                             "(the recorded choice was made under other settings)")
        extra = {"val_curve": row.get("val_curve", []),
                 "choice_from": {"split": row.get("split", "test"), "rule_set": row.get("rule_set"),
                                 "cache_key": row.get("cache_key")}}
        curves = row.get("candidate_val") or row.get("layer_val")
        if curves and len(cands) > 1:
            extra["candidate_val"] = curves
        return key, row["strength"], extra

    def row_extra(self, ctx: Context, key, candidates) -> dict:
        """Extra fields for the row (train-side scores, per-candidate curves)."""
        return {}

    def run(self, ctx: Context) -> dict:
        """Fit, choose on validation, score TEST once: the method's row."""
        cands = self.candidates(ctx)
        if not cands:
            raise ValueError(f"method {self.name!r} proposed no candidate plan on {ctx.dataset.name!r}")
        model = self.model(ctx)
        key, strength, extra = self.choose(ctx)
        extra = {**extra, **self.row_extra(ctx, key, cands)}
        return ctx.finish(model, cands[key], strength, self.base_method, **extra)

    def plan_of(self, ctx: Context, row: Mapping) -> SteeringPlan:
        """The plan a cached row was fitted with (refitted deterministically: fits are seeded)."""
        cands = self.candidates(ctx)
        for plan in cands.values():
            if plan_layers(plan) == list(row["layers"]):
                return plan
        raise ValueError(f"no {self.name} candidate on {ctx.dataset.name!r} steers layers {row['layers']}; "
                         "the row was made under other settings")

    def plan_at(self, ctx: Context, row: Mapping) -> SteeringPlan:
        """The plan fitted on ``ctx``'s TRAIN items at a row's chosen layers (or layer pairs), whether or not
        the method's candidate rule proposes them on these items (a refit on another train subsample keeps
        the choice). Default: ``plan_of``; methods whose candidates come from a train-side shortlist
        override it."""
        return self.plan_of(ctx, row)

    def __repr__(self) -> str:
        return f"<method {self.name}>"


class Reference(Method):
    """A row with no steering of its own (a model as it is, or a bias on its margins)."""

    reference = True
    control = None

    def plan_of(self, ctx, row):
        raise ValueError(f"{self.name} steers nothing: it has no plan")


__all__ = ["Context", "Method", "Reference", "plan_layers"]
