"""Main results: every method on each dataset, fitted on TRAIN, chosen on VALIDATION, TEST scored
once per method, all through ``steer_lens.protocol``. Resumable: each (dataset, method) row is cached
as JSON under ``<out>/cache/<config>/`` and skipped on re-runs. Writes <out>/main_results.csv and
<out>/README.md (via analyses/main_report.py).

Protocol 3 (default; results/benchmark/): strengths searched on 100 validation items (coarse log grid,
upward extension, refinement where answers flip); label-direction methods (``label_caa``,
``expertsteer_label``: answer X minus answer Y, signed strengths) next to the correct-vs-wrong
contrast; ExpertSteer layer pairs either by the paper's lowest-MI rule or shortlisted on train
(expert layers whose split-half label separation is best, mid depth) and chosen on validation.
Protocol 2 (results/, the session-2/3 record): ``--protocol 2``.

    python analyses/main_results.py                       # every bundled dataset (hours on 2 cores)
    python analyses/main_results.py --compact             # one dataset per domain
    python analyses/main_results.py --fast                # tiny random models, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steer_lens.baselines import (calibrated, choose_layer, fit_bias, fit_caa, fit_iti, fit_self_rfm,  # noqa: E402
                                  pooled_activations, random_plan, shortlist_layers, signed_margins)
from steer_lens.data import COMPACT_DATASETS, contrast_prompts, list_datasets, load_dataset  # noqa: E402
from steer_lens.evaluate import EvalResult, evaluate  # noqa: E402
from steer_lens.field import shuffled_field_plan  # noqa: E402
from steer_lens.io import write_json  # noqa: E402
from steer_lens.pipeline import ExpertSteer, depth_match  # noqa: E402
from steer_lens.protocol import StrengthSearch, choose, point  # noqa: E402
from lens_common import start_run  # noqa: E402
from main_report import CONTROLS, TARGET_ONLY, with_controls  # noqa: E402

log = logging.getLogger("main_results")
COMPACT = list(COMPACT_DATASETS)
# name: (alignment, pair rule, contrast[, mode])
ES_VARIANTS = {"expertsteer_autoencoder": ("autoencoder", "lowest", "correct"),
               "expertsteer_ridge": ("ridge", "lowest", "correct"),
               "expertsteer_procrustes": ("procrustes", "lowest", "correct"),
               "expertsteer_highest_mi": ("autoencoder", "highest", "correct"),
               "expertsteer_hybrid": ("hybrid", "lowest", "correct"),
               "expertsteer_label": ("ridge", "validation", "label"),
               "expertsteer_label_lowest_mi": ("ridge", "lowest", "label"),
               # context-dependent: each token steered along the RFM's gradient there (steer_lens.field)
               "expertsteer_ridge_field": ("ridge", "lowest", "correct", "field"),
               "expertsteer_label_field": ("ridge", "validation", "label", "field")}
CORE = with_controls(["unsteered", "expert_unsteered", "calibration", "label_caa", "expertsteer_label", "caa", "self_rfm",
                      "expertsteer_autoencoder"])
ABLATIONS = with_controls(["iti", "expertsteer_ridge", "expertsteer_procrustes", "expertsteer_highest_mi",
                           "expertsteer_label_lowest_mi", "expertsteer_ridge_field", "expertsteer_label_field"])
EXTRA = with_controls(["expertsteer_hybrid"])  # not in the default method list (compute); pass --methods to add it
REVERSE = with_controls(["reverse_expertsteer_autoencoder"])
PROTOCOL2_METHODS = ["unsteered", "expert_unsteered", "caa", "self_rfm", "expertsteer_autoencoder", "random", "iti",
                     "expertsteer_ridge", "expertsteer_procrustes", "expertsteer_highest_mi", "expertsteer_hybrid"]


def es_config(variant: str, a, **kw) -> ExpertSteer:
    """The unfitted ExpertSteer of an ``ES_VARIANTS`` method under run arguments ``a`` (the validation
    pair rule fits each shortlisted pair with ``pairs=[...]``, so its rule here is the lowest-MI one)."""
    alignment, rule, _, *mode = ES_VARIANTS[variant]
    akw = {"solver": "adam", "max_epochs": a.ae_epochs} if alignment == "hybrid" else {}
    rule = "lowest" if rule == "validation" else rule
    return ExpertSteer(n_pairs=a.n_pairs, alignment=alignment, rule=rule, aligner_kwargs=akw,
                       mode=mode[0] if mode else "fixed", **kw)


def default_datasets() -> list[str]:
    """Every bundled dataset, behaviours last."""
    return sorted(list_datasets(), key=lambda d: (d.startswith("caa_"), d))


class Runner:
    def __init__(self, args, target, expert):
        self.args, self.target, self.expert = args, target, expert
        keys = ["limit_test", "limit_val", "limit_train", "strengths", "n_pairs", "fast", "ae_epochs",
                "iti_heads", "layer_shortlist", "protocol"]
        if args.protocol >= 3:
            keys += ["refine_rounds", "pair_shortlist"]
            # rules added later enter the key only when they differ from the rule the older rows used
            if args.layer_ties != "lowest":
                keys += ["layer_ties"]
            if args.refine != "best":
                keys += ["refine"]
            if args.expert_layers is not None:
                keys += ["expert_layers"]
            if args.extend_flat:
                keys += ["extend_flat"]
        models = {}
        if args.target != TARGET:
            models.update(target=args.target)
        if args.dtype not in (None, "float32"):  # another precision is another experiment
            models.update(dtype=args.dtype)
        cfg = {**{k: getattr(args, k) for k in keys}, **models}
        target_cfg = dict(cfg)  # rows of target-only methods do not depend on the expert
        expert = {"expert": args.expert} if args.expert != EXPERT else {}
        cfg.update(expert)
        self.config = cfg
        root = Path(args.cache or Path(args.out) / "cache")

        def folder(c: dict) -> Path:
            return root / hashlib.sha1(json.dumps(c).encode()).hexdigest()[:10]

        self.cache, self.target_cache = folder(cfg), folder(target_cfg)
        # protocol 3: the unsteered rows select nothing, so no selection rule is part of their key
        self.eval_cache = {}
        if args.protocol >= 3:
            ev = {"rows": "unsteered test", "limit_test": args.limit_test, "fast": args.fast, **models}
            self.eval_cache = {"unsteered": folder(ev), "expert_unsteered": folder({**ev, "model": "expert", **expert})}
        self.fits: dict[str, dict] = {}  # per dataset: captures, plans, the shared strength-0 validation
        for path, c in ((self.target_cache, target_cfg), (self.cache, cfg)):
            path.mkdir(parents=True, exist_ok=True)
            write_json(path / "config.json", c)
        for method, path in self.eval_cache.items():
            path.mkdir(parents=True, exist_ok=True)
            write_json(path / "config.json", {"method": method, "expert": args.expert if method == "expert_unsteered"
                                              else None, "limit_test": args.limit_test, **models})

    def row_path(self, dataset: str, method: str) -> Path:
        """Target-only methods share one cache across experts (same target, same settings); the
        unsteered rows (protocol 3) one across selection rules."""
        if method in self.eval_cache:
            return self.eval_cache[method] / f"{dataset}__{method}.json"
        return (self.target_cache if method in TARGET_ONLY else self.cache) / f"{dataset}__{method}.json"

    def search(self, signed: bool = False) -> StrengthSearch:
        a = self.args
        if a.protocol < 3:
            return StrengthSearch.fixed(a.strengths, signed=signed)
        return StrengthSearch(grid=tuple(a.strengths), refine_rounds=a.refine_rounds, signed=signed,
                              extend_flat=a.extend_flat)

    def screen(self, signed: bool = False) -> StrengthSearch | None:
        """``--refine best``: candidates (layers, pairs) are compared on the coarse grid and only the
        best one is refined. ``all`` (None): every candidate gets the full search; a window narrower
        than the grid's steps is found only by refining the candidate that has it."""
        if self.args.refine == "all":
            return None
        return dataclasses.replace(self.search(signed), refine_rounds=0, extend=())

    def cached(self, dataset: str, method: str, compute):
        path = self.row_path(dataset, method)
        if path.exists():
            log.info("skip %s / %s (cached)", dataset, method)
            return json.loads(path.read_text())
        t0 = time.time()
        row = compute()
        row.update(dataset=dataset, method=method, seconds=round(time.time() - t0, 1))
        write_json(path, row)
        log.info("%s / %s: acc %.3f [%.3f, %.3f] strength %s layers %s (%.0fs)", dataset, method,
                 row["accuracy"], row["ci_low"], row["ci_high"], row.get("strength"), row.get("layers"),
                 row["seconds"])
        return row

    def run_dataset(self, name: str, methods) -> list[dict]:
        a = self.args
        ds = load_dataset(name)
        train = ds.split("train", limit=a.limit_train)
        val = ds.split("validation", limit=a.limit_val)
        contrasts = {"correct": contrast_prompts(train), "label": contrast_prompts(train, by="label")}
        domain = train[0].domain
        T, E = self.target, self.expert
        fits = self.fits.setdefault(name, {})  # kept across passes (core, then ablations)

        def test(model, plan=None, strength=0.0):
            r = evaluate(model, ds, split="test", limit=a.limit_test, plan=plan, strength=strength,
                         batch_size=a.batch_size)
            return {**r.to_dict(), "domain": domain, "model": str(model.cfg.model_name)}

        def val0(model):
            """The unsteered VALIDATION result, shared by every method steering ``model``."""
            key = ("val0", id(model))
            if key not in fits:
                fits[key] = evaluate(model, val, batch_size=a.batch_size)
            return fits[key]

        def zero(model) -> dict:
            return point(0.0, val0(model))

        def calibration():
            """No steering: the unsteered test margins plus the bias that is best on the unsteered
            VALIDATION margins (two-way sets; ``steer_lens.baselines.calibration``)."""
            u = self.cached(name, "unsteered", todo["unsteered"])
            r = val0(T)
            bias = fit_bias(signed_margins(r, val), [it.answer for it in val])
            # the test answers are implied by the unsteered row (two-way): TEST is read only through evaluate
            cal = calibrated(EvalResult.from_dict(u), None, bias)
            return {**cal.to_dict(), "domain": domain, "model": u["model"], "strength": 0.0, "layers": [],
                    "bias": bias, "val_curve": [{**point(0.0, calibrated(r, val, bias)), "strength": 0.0}],
                    "n_val": len(val)}

        def test_or_reuse(model, plan, s, base_method):
            """Strength 0 = no steering: reuse the unsteered test row instead of re-scoring it."""
            if s == 0:
                base = self.cached(name, base_method, todo[base_method])
                return {k: v for k, v in base.items() if k not in ("method", "seconds", "strength", "layers")}
            return test(model, plan, s)

        def finish(model, plan, s, curve, base_method, **extra) -> dict:
            layers = sorted(int(h.split(".")[1]) for h in plan.vectors)
            row = test_or_reuse(model, plan, s, base_method)
            row.update(strength=s, layers=layers, val_curve=curve, n_val=len(val),
                       pairs=[p.__dict__ for p in plan.pairs], plan_settings=_jsonable(plan.settings), **extra)
            return row

        def selected(model, candidates, *, signed=False, base_method="unsteered", **extra):
            """Strength (and, with several candidates, the candidate) chosen on VALIDATION."""
            c = choose(model, val, candidates, search=self.search(signed), screen=self.screen(signed),
                       zero=zero(model), batch_size=a.batch_size)
            if len(candidates) > 1:
                extra["candidate_val"] = {str(k): v for k, v in c.curves.items()}
            return finish(model, candidates[c.key], c.strength, c.curves[c.key], base_method, **extra)

        def target_acts(contrast):
            key = ("acts", contrast)
            if key not in fits:
                layers = list(range(T.cfg.n_layers))
                fits[key] = (pooled_activations(T, *contrasts[contrast], layers), layers)
            return fits[key]

        def shortlisted(kind, contrast="correct"):
            """CAA / self-RFM: the train-only split-half score shortlists layers (middle half of the
            target); the layer AND strength are then chosen together on VALIDATION."""
            def compute():
                acts, layers = target_acts(contrast)
                L = T.cfg.n_layers
                _, scores = choose_layer(*acts, layers, candidates=range(L // 4, 3 * L // 4 + 1))
                short = shortlist_layers(scores, a.layer_shortlist, a.layer_ties)
                f = fit_caa if kind == "caa" else fit_self_rfm
                pos, neg = contrasts[contrast]
                plans = {layer: f(T, pos, neg, layer, acts=acts, acts_layers=layers) for layer in short}
                row = selected(T, plans, signed=contrast == "label", layer_scores=scores)
                row["layer_val"] = row.pop("candidate_val", {str(short[0]): row["val_curve"]})
                return row
            return compute

        def es_capture(contrast, expert, target):
            key = ("es_acts", contrast, id(expert), id(target))  # one capture feeds every variant
            if key not in fits:
                pos, neg = contrasts[contrast]
                fits[key] = ExpertSteer().capture(expert, target, list(pos) + list(neg))
            return fits[key]

        def es_candidates(variant, expert=E, target=T) -> dict:
            """Candidate plans: one (the paper's MI rule) or, for the validation pair rule, one
            single-pair plan per train-shortlisted pair."""
            key = ("es", variant, id(expert), id(target))
            if key not in fits:
                alignment, rule, contrast, *_ = ES_VARIANTS[variant]
                pos, neg = contrasts[contrast]
                acts = es_capture(contrast, expert, target)
                if rule != "validation":
                    fits[key] = {"mi_rule": es_config(variant, a).fit(expert, target, pos, neg, activations=acts)}
                else:
                    fits[key] = {pair: es_config(variant, a, pairs=[pair]).fit(expert, target, pos, neg,
                                                                           activations=acts)
                                 for pair in shortlist_pairs(acts[0], len(pos), expert, target, a.pair_shortlist,
                                                             a.layer_ties, window=a.expert_layers)}
            return fits[key]

        def es(variant, expert=E, target=T, base_method="unsteered"):
            def compute():
                cands = es_candidates(variant, expert, target)
                signed = ES_VARIANTS[variant][2] == "label"
                return selected(target, cands, signed=signed, base_method=base_method)
            return compute

        def plan_of(method):
            """The plan a cached row was fitted with (refitted deterministically, seeded)."""
            row = self.cached(name, method, todo[method])
            if method in ("caa", "self_rfm", "label_caa"):  # the target's own direction at the chosen layer
                contrast = "label" if method == "label_caa" else "correct"
                acts, layers = target_acts(contrast)
                fit = fit_self_rfm if method == "self_rfm" else fit_caa
                return fit(T, *contrasts[contrast], row["layers"][0], acts=acts, acts_layers=layers)
            variant = method.removeprefix("reverse_")
            expert, target = (T, E) if method.startswith("reverse_") else (E, T)
            cands = es_candidates(variant, expert, target)
            layers = row["layers"]
            return next(p for p in cands.values() if sorted(int(h.split(".")[1]) for h in p.vectors) == layers)

        def control(method):
            """Random unit vectors at ``matched``'s hooks, norms and selected strength (no selection)."""
            matched = CONTROLS[method]
            model, base = (E, "expert_unsteered") if method.startswith("reverse_") else (T, "unsteered")

            def compute():
                s = self.cached(name, matched, todo[matched])["strength"]
                plan = plan_of(matched)
                rnd = shuffled_field_plan(plan, seed=0) if plan.mode == "field" else random_plan(plan, seed=0)
                return finish(model, rnd, s, [], base, matched_to=matched)
            return compute

        todo = {
            "unsteered": lambda: {**test(T), "strength": 0.0, "layers": []},
            "expert_unsteered": lambda: {**test(E), "strength": 0.0, "layers": []},
            "calibration": calibration,
            "caa": shortlisted("caa"),
            "self_rfm": shortlisted("self_rfm"),
            "label_caa": shortlisted("caa", "label"),
            "iti": lambda: selected(T, {"iti": fit_iti(T, *contrasts["correct"], k=a.iti_heads)}),
            **{v: es(v) for v in ES_VARIANTS},
            **{m: control(m) for m in CONTROLS},
            # SmolLM2 as the expert steering Gemma (compare with expert_unsteered)
            "reverse_expertsteer_autoencoder": es("expertsteer_autoencoder", expert=T, target=E,
                                                  base_method="expert_unsteered"),
        }
        two_way = all(len(it.choices) == 2 for it in val)
        skip = [m for m in methods if m == "calibration" and not two_way]
        if skip:
            log.info("%s: no calibration row (a margin bias needs two-way items)", name)
        return [self.cached(name, m, todo[m]) for m in methods if m not in skip]


def shortlist_pairs(expert_acts: torch.Tensor, n_pos: int, expert, target, k: int,
                    ties: str = "spread", window: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """TRAIN only: the ``k`` expert layers in ``window`` (first, last expert layer, inclusive;
    default the middle half) whose split-half mean-difference direction best separates positives
    from negatives, each paired with the target layer at the same relative depth.
    ``expert_acts``: (prompts, expert layer, d) with positives first."""
    Le, Lt = expert.cfg.n_layers, target.cfg.n_layers
    lo, hi = window if window is not None else (Le // 4, 3 * Le // 4)
    if not 0 <= lo <= hi < Le:
        raise ValueError(f"expert layer window {lo}..{hi} is outside the expert's layers 0..{Le - 1}: "
                         f"pass --expert-layers FIRST LAST with 0 <= FIRST <= LAST < {Le}")
    layers = list(range(Le))
    _, scores = choose_layer(expert_acts[:n_pos], expert_acts[n_pos:], layers, candidates=range(lo, hi + 1))
    return [(e, depth_match(e, Le, Lt)) for e in shortlist_layers(scores, k, ties)]


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


TARGET, EXPERT = "smollm2-135m-instruct", "gemma-3-270m"
WINDOW_FOLDER = "expert_layers_{}_{}"  # the report of a run with --expert-layers, under its default out


def load_models(fast: bool, target: str = TARGET, expert: str = EXPERT, **kw):
    """(target, expert) bridges; ``kw``: load_model's device / dtype / device_map."""
    from steer_lens.models import load_model

    if fast:
        from steer_lens.testing import make_tiny_pair

        t, e = make_tiny_pair(tempfile.mkdtemp(prefix="steer_lens_fast_"))
        return load_model(t, **kw), load_model(e if expert == EXPERT else expert, **kw)
    return load_model(target, **kw), load_model(expert, **kw)


def cached_rows(runner: Runner, datasets: list[str]) -> list[dict]:
    """Every row cached for this configuration (by any run), ``datasets`` first in their order."""
    order = CORE + REVERSE + ABLATIONS + EXTRA
    files = set(runner.cache.glob("*__*.json"))
    shared = TARGET_ONLY | set(runner.eval_cache)
    seen = list(datasets) + sorted({f.name.split("__")[0] for f in files} - set(datasets))
    # the target-only and unsteered rows (other folders) of this run's datasets and of those cached here
    files |= {runner.row_path(d, m) for d in seen for m in shared if runner.row_path(d, m).exists()}
    rows = [json.loads(f.read_text()) for f in sorted(files)]
    rank = {d: i for i, d in enumerate(datasets + sorted({r["dataset"] for r in rows} - set(datasets)))}
    return sorted(rows, key=lambda r: (rank[r["dataset"]], order.index(r["method"]) if r["method"] in order
                                       else len(order)))


def write_cached_report(a, runner: Runner, extra: dict | None = None) -> Path:
    """Rewrite the CSV/README from every cached row of this configuration, so a run over some
    datasets or methods never drops the rows other runs wrote."""
    from main_report import write_report

    rows = cached_rows(runner, a.datasets)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("reverse_")))
    reverse = list(dict.fromkeys(r["dataset"] for r in rows if r["method"].startswith("reverse_")))
    config = {**runner.config, "datasets": datasets, "reverse": reverse, "methods": methods, **(extra or {})}
    return write_report(rows, Path(a.out), config=config)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=None, help="default: every bundled dataset")
    p.add_argument("--compact", action="store_true", help=f"one dataset per domain: {' '.join(COMPACT)}")
    p.add_argument("--limit-test", type=int, default=None, help="test items (default 500, i.e. every test split "
                   "bundled; protocol 2: 100)")
    p.add_argument("--limit-val", type=int, default=None, help="validation items (default 100; protocol 2: 24)")
    p.add_argument("--limit-train", type=int, default=64, help="train items -> 2x contrast prompts")
    p.add_argument("--strengths", type=float, nargs="+", default=None,
                   help="coarse grid of nonzero strengths (x median residual norm; default "
                        "0.025 0.05 0.1 0.2 0.4; protocol 2: 0.025 0.05 0.1 0.2); 0 = no steering is always a "
                        "candidate")
    p.add_argument("--refine-rounds", type=int, default=3, help="protocol 3: refinement rounds on validation")
    p.add_argument("--pair-shortlist", type=int, default=3,
                   help="protocol 3: expert layers shortlisted on train for the validation pair rule")
    p.add_argument("--protocol", type=int, default=3, choices=(2, 3),
                   help="3: adaptive strength search, label methods, validation pair rule (default); "
                        "2: the session-2/3 grid and methods (results/)")
    p.add_argument("--layer-shortlist", type=int, default=2,
                   help="CAA/self-RFM: layers shortlisted on train, then chosen on validation")
    p.add_argument("--refine", choices=["all", "best"], default="all",
                   help="protocol 3: refine the strength of every candidate layer / pair (default) or only of "
                        "the one best on the coarse grid (the rule of the first protocol-3 rows)")
    p.add_argument("--layer-ties", choices=["spread", "lowest"], default="spread",
                   help="protocol 3: layers tied at the shortlist's cut-off train score (saturated for label "
                        "contrasts) are spread over depth (default) or taken lowest first (the rule of the "
                        "first protocol-3 rows)")
    p.add_argument("--expert-layers", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                   help="validation pair rule: shortlist expert layers FIRST..LAST (inclusive; default the middle "
                        "half), e.g. the blocks a tuned expert trained; report in <default out>/expert_layers_FIRST_LAST")
    p.add_argument("--extend-flat", action="store_true",
                   help="strength search: also try larger strengths while no strength has changed the answers "
                        "(StrengthSearch.extend_flat); report in <default out>/extend_flat")
    p.add_argument("--n-pairs", type=int, default=2)
    p.add_argument("--iti-heads", type=int, default=8)
    p.add_argument("--reverse", nargs="*", default=None, help="datasets for SmolLM2 -> Gemma (default: first)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ae-epochs", type=int, default=300, help="hybrid aligner max epochs (autoencoder: closed form)")
    p.add_argument("--methods", nargs="+", default=CORE + ABLATIONS)
    p.add_argument("--out", default=None, help="default: results/benchmark (protocol 2: results; another "
                   "expert: results/tuned_experts/<expert folder name>)")
    p.add_argument("--cache", default=None, help="cache root (default <out>/cache; another expert: "
                   "results/benchmark/cache, so target-only rows are shared with the main run)")
    p.add_argument("--expert", default=EXPERT, help="expert model: registry name or local HF folder "
                   "(e.g. a tuned expert from `steer-lens finetune`)")
    p.add_argument("--target", default=TARGET, help="target model: registry name or local HF folder")
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N, mps, auto")
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    p.add_argument("--device-map", default=None, help="accelerate placement for models larger than one GPU")
    p.add_argument("--fast", action="store_true", help="tiny random models, very few items")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from cached rows, no models")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is ~4x faster than 2 when other jobs share the 2 cores)")
    a = p.parse_args(argv)
    unknown = [m for m in a.methods if m not in CORE + ABLATIONS + EXTRA]
    if unknown:  # the run plan only knows these lists: an unknown name would be dropped silently
        p.error(f"unknown method(s) {' '.join(unknown)}: choose from {' '.join(CORE + ABLATIONS + EXTRA)} "
                "(the reverse rows come with --reverse)")
    root = Path(__file__).resolve().parent.parent / "results"
    v3 = a.protocol >= 3
    default_out = root / "benchmark" if v3 else root
    if a.expert != EXPERT:
        default_out = root / "tuned_experts" / Path(a.expert).name
        a.cache = a.cache or (str(root / "benchmark" / "cache") if v3 and not a.fast else None)
    if a.expert_layers is not None and a.out is None:  # another pair window: its own table, the same cache
        a.cache = a.cache or str(default_out / "cache")
        default_out = default_out / WINDOW_FOLDER.format(*a.expert_layers)
    if a.extend_flat and a.out is None:  # another strength rule: its own table, the same cache
        a.cache = a.cache or str(default_out / "cache")
        default_out = default_out / "extend_flat"
    a.out = a.out or str(default_out)
    a.limit_val = a.limit_val or (100 if v3 else 24)
    a.limit_test = a.limit_test or (500 if v3 else 100)
    a.strengths = a.strengths or ([0.025, 0.05, 0.1, 0.2, 0.4] if v3 else [0.025, 0.05, 0.1, 0.2])
    if not v3:
        a.methods = [m for m in a.methods if m in PROTOCOL2_METHODS]
        a.layer_ties, a.refine = "lowest", "best"  # protocol 2 is frozen as it ran
    if a.fast:
        a.datasets = a.datasets or ["arithmetic_2way"]
        a.limit_test, a.limit_val, a.limit_train, a.strengths, a.ae_epochs = 8, 6, 20, [0.5, 1.0], 50
        a.refine_rounds, a.pair_shortlist = 1, 2
    a.datasets = a.datasets or (COMPACT if a.compact else default_datasets())
    a.reverse = a.datasets[:1] if a.reverse is None else a.reverse
    return a


def main(argv=None) -> Path:
    a = parse(argv)
    start_run("main_results", a, argv)  # logging, torch threads
    if a.report_only:
        return write_cached_report(a, Runner(a, None, None), {"target": Path(a.target).name,
                                                               "expert": Path(a.expert).name})
    target, expert = load_models(a.fast, a.target, a.expert, device=a.device, dtype=a.dtype,
                                 device_map=a.device_map)
    runner = Runner(a, target, expert)
    models = {"target": target.cfg.model_name, "expert": expert.cfg.model_name}
    # the core comparison on every dataset first (so a run cut short still covers every dataset),
    # then the ablations, the reverse direction and the opt-in extras
    plan = [(name, [m for m in CORE if m in a.methods]) for name in a.datasets]
    plan += [(name, [m for m in ABLATIONS if m in a.methods]) for name in a.datasets]
    plan += [(name, REVERSE) for name in a.reverse]
    plan += [(name, [m for m in EXTRA if m in a.methods]) for name in a.datasets]
    path = Path(a.out) / "README.md"
    for name, methods in plan:
        runner.run_dataset(name, methods)
        path = write_cached_report(a, runner, models)
    return path


if __name__ == "__main__":
    main()
