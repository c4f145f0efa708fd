"""Main results: every method on each dataset, fitted on TRAIN, strength chosen on VALIDATION,
TEST scored once per method. Resumable: each (dataset, method) row is cached as JSON under
``results/cache/<config>/`` and skipped on re-runs. Writes results/main_results.csv and
results/README.md (via analyses/main_report.py).

    python analyses/main_results.py                       # every bundled dataset (hours on 2 cores)
    python analyses/main_results.py --compact             # one dataset per domain
    python analyses/main_results.py --fast                # tiny random models, seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steer_lens.baselines import (choose_layer, fit_caa, fit_iti, fit_self_rfm, pooled_activations,  # noqa: E402
                                  random_plan)
from steer_lens.data import COMPACT_DATASETS, contrast_prompts, list_datasets, load_dataset  # noqa: E402
from steer_lens.evaluate import evaluate  # noqa: E402
from steer_lens.io import write_json  # noqa: E402
from steer_lens.pipeline import ExpertSteer  # noqa: E402

log = logging.getLogger("main_results")
COMPACT = list(COMPACT_DATASETS)
ES_VARIANTS = {"expertsteer_autoencoder": ("autoencoder", "lowest"), "expertsteer_ridge": ("ridge", "lowest"),
               "expertsteer_procrustes": ("procrustes", "lowest"), "expertsteer_highest_mi": ("autoencoder", "highest"),
               "expertsteer_hybrid": ("hybrid", "lowest")}
CORE = ["unsteered", "expert_unsteered", "caa", "self_rfm", "expertsteer_autoencoder", "random"]
ABLATIONS = ["iti", "expertsteer_ridge", "expertsteer_procrustes", "expertsteer_highest_mi"]
EXTRA = ["expertsteer_hybrid"]  # not in the default method list (compute); pass --methods to add it
REVERSE = ["reverse_expertsteer_autoencoder", "reverse_random"]


def default_datasets() -> list[str]:
    """Every bundled dataset, behaviours last."""
    return sorted(list_datasets(), key=lambda d: (d.startswith("caa_"), d))


class Runner:
    def __init__(self, args, target, expert):
        self.args, self.target, self.expert = args, target, expert
        cfg = {k: getattr(args, k) for k in ("limit_test", "limit_val", "limit_train", "strengths", "n_pairs",
                                             "fast", "ae_epochs", "iti_heads", "layer_shortlist", "protocol")}
        self.config = cfg
        self.cache = Path(args.out) / "cache" / hashlib.sha1(json.dumps(cfg).encode()).hexdigest()[:10]
        self.cache.mkdir(parents=True, exist_ok=True)
        self.fits: dict[str, dict] = {}  # per dataset: captures, plans, the shared strength-0 validation
        write_json(self.cache / "config.json", cfg)

    def cached(self, dataset: str, method: str, compute):
        path = self.cache / f"{dataset}__{method}.json"
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
        pos, neg = contrast_prompts(train)
        domain = train[0].domain
        T, E = self.target, self.expert
        fits = self.fits.setdefault(name, {})  # kept across passes (core, then ablations)

        def test(model, plan=None, strength=0.0):
            r = evaluate(model, ds, split="test", limit=a.limit_test, plan=plan, strength=strength,
                         batch_size=a.batch_size)
            return {**r.to_dict(), "domain": domain, "model": str(model.cfg.model_name)}

        def point(s, r) -> dict:
            return {"strength": s, "accuracy": r.accuracy, "ci_low": r.ci_low, "ci_high": r.ci_high,
                    "mean_margin": float(sum(r.margins) / len(r.margins))}

        def curve_of(model, plan) -> list[dict]:
            """VALIDATION accuracy over the grid; strength 0 (no steering) is shared per model."""
            key = ("val0", id(model))
            if key not in fits:
                fits[key] = point(0.0, evaluate(model, val, batch_size=a.batch_size))
            return [fits[key]] + [point(s, evaluate(model, val, plan=plan, strength=s, batch_size=a.batch_size))
                                  for s in a.strengths]

        def rank(c: dict) -> tuple:
            """Validation order: accuracy, then larger mean margin, then the smaller strength."""
            return c["accuracy"], c["mean_margin"], -abs(c["strength"])

        def best(curve: list[dict]) -> dict:
            return max(curve, key=rank)

        def test_or_reuse(model, plan, s, base_method):
            """Strength 0 = no steering: reuse the unsteered test row instead of re-scoring it."""
            if s == 0:
                base = self.cached(name, base_method, todo[base_method])
                return {k: v for k, v in base.items() if k not in ("method", "seconds", "strength", "layers")}
            return test(model, plan, s)

        def finish(model, plan, s, curve, base_method, **extra) -> dict:
            layers = sorted(int(h.split(".")[1]) for h in plan.vectors)
            row = test_or_reuse(model, plan, s, base_method)
            row.update(strength=s, layers=layers, val_curve=curve, pairs=[p.__dict__ for p in plan.pairs],
                       plan_settings=_jsonable(plan.settings), **extra)
            return row

        def steered(model, plan_fn, strength=None, base_method="unsteered"):
            def compute():
                plan = plan_fn()
                if strength is not None:
                    return finish(model, plan, strength, [], base_method)
                curve = curve_of(model, plan)
                return finish(model, plan, best(curve)["strength"], curve, base_method)
            return compute

        def shortlisted(kind):
            """CAA / self-RFM: the train-only split-half score shortlists layers (middle half of the
            target); the layer AND strength are then chosen together on VALIDATION."""
            def compute():
                acts, layers = target_acts()
                L = T.cfg.n_layers
                _, scores = choose_layer(*acts, layers, candidates=range(L // 4, 3 * L // 4 + 1))
                short = sorted(scores, key=lambda k: (-scores[k], k))[: a.layer_shortlist]
                f = fit_caa if kind == "caa" else fit_self_rfm
                options = []
                for layer in short:
                    plan = f(T, pos, neg, layer, acts=acts, acts_layers=layers)
                    curve = curve_of(T, plan)
                    options.append((best(curve), layer, plan, curve))
                top, layer, plan, curve = max(options, key=lambda o: (*rank(o[0]), -short.index(o[1])))
                return finish(T, plan, top["strength"], curve, "unsteered", layer_scores=scores,
                              layer_val={str(o[1]): o[3] for o in options})
            return compute

        def target_acts():
            if "acts" not in fits:
                layers = list(range(T.cfg.n_layers))
                fits["acts"] = (pooled_activations(T, pos, neg, layers), layers)
            return fits["acts"]

        def es(variant, expert=E, target=T):
            key = ("es", variant, id(target))
            if key not in fits:
                alignment, rule = ES_VARIANTS[variant]
                kw = {"solver": "adam", "max_epochs": a.ae_epochs} if alignment == "hybrid" else {}
                cfg = ExpertSteer(n_pairs=a.n_pairs, alignment=alignment, rule=rule, aligner_kwargs=kw)
                acts_key = ("es_acts", id(expert), id(target))  # one capture feeds every variant
                if acts_key not in fits:
                    fits[acts_key] = cfg.capture(expert, target, list(pos) + list(neg))
                fits[key] = cfg.fit(expert, target, pos, neg, activations=fits[acts_key])
            return fits[key]

        def control(method, plan_of, model=T, base_method="unsteered"):
            """Random unit vectors at ``method``'s hooks, norms and selected strength (no selection)."""
            def compute():
                s = self.cached(name, method, todo[method])["strength"]
                return steered(model, lambda: random_plan(plan_of(), seed=0), strength=s,
                               base_method=base_method)()
            return compute

        todo = {
            "unsteered": lambda: {**test(T), "strength": 0.0, "layers": []},
            "expert_unsteered": lambda: {**test(E), "strength": 0.0, "layers": []},
            "caa": shortlisted("caa"),
            "self_rfm": shortlisted("self_rfm"),
            "iti": steered(T, lambda: fit_iti(T, pos, neg, k=a.iti_heads)),
            **{v: steered(T, lambda v=v: es(v)) for v in ES_VARIANTS},
            # the control: random unit vectors at ExpertSteer(autoencoder)'s hooks, norms and strength
            "random": control("expertsteer_autoencoder", lambda: es("expertsteer_autoencoder")),
            # SmolLM2 as the expert steering Gemma (compare with expert_unsteered), with its own control
            "reverse_expertsteer_autoencoder": steered(E, lambda: es("expertsteer_autoencoder", expert=T, target=E),
                                                       base_method="expert_unsteered"),
            "reverse_random": control("reverse_expertsteer_autoencoder",
                                      lambda: es("expertsteer_autoencoder", expert=T, target=E), model=E,
                                      base_method="expert_unsteered"),
        }
        return [self.cached(name, m, todo[m]) for m in methods]


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def load_models(fast: bool):
    from steer_lens.models import load_model

    if fast:
        from steer_lens.testing import make_tiny_pair

        target, expert = make_tiny_pair(tempfile.mkdtemp(prefix="steer_lens_fast_"))
        return load_model(target), load_model(expert)
    return load_model("smollm2-135m-instruct"), load_model("gemma-3-270m")


def cached_rows(runner: Runner, datasets: list[str]) -> list[dict]:
    """Every row cached for this configuration (by any run), ``datasets`` first in their order."""
    order = CORE + REVERSE + ABLATIONS + EXTRA
    rows = [json.loads(f.read_text()) for f in runner.cache.glob("*__*.json")]
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
    p.add_argument("--limit-test", type=int, default=100)
    p.add_argument("--limit-val", type=int, default=24)
    p.add_argument("--limit-train", type=int, default=64, help="train items -> 2x contrast prompts")
    p.add_argument("--strengths", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2],
                   help="nonzero strengths (x median residual norm); 0 = no steering is always a candidate")
    p.add_argument("--layer-shortlist", type=int, default=2,
                   help="CAA/self-RFM: layers shortlisted on train, then chosen on validation")
    p.add_argument("--n-pairs", type=int, default=2)
    p.add_argument("--iti-heads", type=int, default=8)
    p.add_argument("--reverse", nargs="*", default=None, help="datasets for SmolLM2 -> Gemma (default: first)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ae-epochs", type=int, default=300, help="hybrid aligner max epochs (autoencoder: closed form)")
    p.add_argument("--methods", nargs="+", default=CORE + ABLATIONS)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "results"))
    p.add_argument("--fast", action="store_true", help="tiny random models, very few items")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from cached rows, no models")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is ~4x faster than 2 when other jobs share the 2 cores)")
    a = p.parse_args(argv)
    a.protocol = 2  # 2: strength 0 in the grid, validation-chosen baseline layers, closed-form autoencoder
    if a.fast:
        a.datasets = a.datasets or ["arithmetic_2way"]
        a.limit_test, a.limit_val, a.limit_train, a.strengths, a.ae_epochs = 8, 6, 20, [0.5, 1.0], 50
    a.datasets = a.datasets or (COMPACT if a.compact else default_datasets())
    a.reverse = a.datasets[:1] if a.reverse is None else a.reverse
    return a


def main(argv=None) -> Path:
    a = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    if a.report_only:
        return write_cached_report(a, Runner(a, None, None))
    target, expert = load_models(a.fast)
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
