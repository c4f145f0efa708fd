"""Main results: every method on each dataset, fitted on TRAIN, strength chosen on VALIDATION,
TEST scored once per method. Resumable: each (dataset, method) row is cached as JSON under
``results/cache/<config>/`` and skipped on re-runs. Writes results/main_results.csv and
results/README.md (via analyses/main_report.py).

    python analyses/main_results.py                       # compact real run
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
import steer_lens.pipeline as pipeline  # noqa: E402
from steer_lens.baselines import (choose_layer, fit_caa, fit_iti, fit_self_rfm, pooled_activations,  # noqa: E402
                                  random_plan)
from steer_lens.data import contrast_prompts, load_dataset  # noqa: E402
from steer_lens.evaluate import evaluate  # noqa: E402
from steer_lens.io import write_json  # noqa: E402
from steer_lens.pipeline import ExpertSteer  # noqa: E402

log = logging.getLogger("main_results")
DEFAULT_DATASETS = ["mmlu_medical_2way", "arithmetic_2way", "caa_myopic_reward", "sst2", "mmlu_finance_2way"]
ES_VARIANTS = {"expertsteer_autoencoder": ("autoencoder", "lowest"), "expertsteer_ridge": ("ridge", "lowest"),
               "expertsteer_procrustes": ("procrustes", "lowest"), "expertsteer_highest_mi": ("autoencoder", "highest")}
CORE = ["unsteered", "expert_unsteered", "caa", "self_rfm", "expertsteer_autoencoder", "random"]
ABLATIONS = ["iti", "expertsteer_ridge", "expertsteer_procrustes", "expertsteer_highest_mi"]


def memo_capture(real):
    """Wrap activations.capture so the ExpertSteer variants share one capture per model/prompts."""
    store: dict = {}

    def capture(model, prompts, **kw):
        key = (id(model), hashlib.sha1(json.dumps([list(map(str, prompts)), repr(sorted(kw.items()))]).encode()).hexdigest())
        if key not in store:
            store[key] = real(model, prompts, **kw)
        return store[key]
    return capture


class Runner:
    def __init__(self, args, target, expert):
        self.args, self.target, self.expert = args, target, expert
        cfg = {k: getattr(args, k) for k in ("limit_test", "limit_val", "limit_train", "strengths", "n_pairs",
                                             "fast", "ae_epochs", "iti_heads")}
        self.config = cfg
        self.cache = Path(args.out) / "cache" / hashlib.sha1(json.dumps(cfg).encode()).hexdigest()[:10]
        self.cache.mkdir(parents=True, exist_ok=True)
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
        fits: dict = {}

        def test(model, plan=None, strength=0.0):
            r = evaluate(model, ds, split="test", limit=a.limit_test, plan=plan, strength=strength,
                         batch_size=a.batch_size)
            return {**r.to_dict(), "domain": domain, "model": str(model.cfg.model_name)}

        def select(model, plan) -> tuple[float, list]:
            """Strength with the best VALIDATION accuracy (ties: smaller strength)."""
            curve = []
            for s in a.strengths:
                r = evaluate(model, val, plan=plan, strength=s, batch_size=a.batch_size)
                curve.append({"strength": s, "accuracy": r.accuracy, "ci_low": r.ci_low, "ci_high": r.ci_high,
                              "mean_margin": float(sum(r.margins) / len(r.margins))})
            best = max(curve, key=lambda c: (c["accuracy"], c["mean_margin"], -abs(c["strength"])))
            return best["strength"], curve

        def steered(model, plan_fn, strength=None):
            def compute():
                plan = plan_fn()
                s, curve = (strength, []) if strength is not None else select(model, plan)
                layers = sorted(int(h.split(".")[1]) for h in plan.vectors)
                row = test(model, plan, s)
                row.update(strength=s, layers=layers, val_curve=curve,
                           pairs=[p.__dict__ for p in plan.pairs], plan_settings=_jsonable(plan.settings))
                return row
            return compute

        def target_acts():
            if "acts" not in fits:
                layers = list(range(T.cfg.n_layers))
                fits["acts"] = (pooled_activations(T, pos, neg, layers), layers)
            return fits["acts"]

        def single_layer(kind):
            def fit():
                acts, layers = target_acts()
                L = T.cfg.n_layers
                layer, scores = choose_layer(*acts, layers, candidates=range(L // 4, 3 * L // 4 + 1))
                f = fit_caa if kind == "caa" else fit_self_rfm
                plan = f(T, pos, neg, layer, acts=acts, acts_layers=layers)
                plan.settings["layer_scores"] = scores
                return plan
            return fit

        def es(variant, expert=E, target=T):
            key = ("es", variant, id(target))
            if key not in fits:
                alignment, rule = ES_VARIANTS[variant]
                kw = {"max_epochs": a.ae_epochs} if alignment == "autoencoder" else {}
                fits[key] = ExpertSteer(n_pairs=a.n_pairs, alignment=alignment, rule=rule,
                                        aligner_kwargs=kw).fit(expert, target, pos, neg)
            return fits[key]

        todo = {
            "unsteered": lambda: {**test(T), "strength": 0.0, "layers": []},
            "expert_unsteered": lambda: {**test(E), "strength": 0.0, "layers": []},
            "caa": steered(T, single_layer("caa")),
            "self_rfm": steered(T, single_layer("self_rfm")),
            "iti": steered(T, lambda: fit_iti(T, pos, neg, k=a.iti_heads)),
            **{v: steered(T, lambda v=v: es(v)) for v in ES_VARIANTS},
            # the control: random unit vectors at ExpertSteer(autoencoder)'s hooks, norms and strength
            "random": lambda: steered(T, lambda: random_plan(es("expertsteer_autoencoder"), seed=0),
                                      strength=self.cached(name, "expertsteer_autoencoder",
                                                           todo["expertsteer_autoencoder"])["strength"])(),
            # SmolLM2 as the expert steering Gemma (compare with expert_unsteered)
            "reverse_expertsteer_autoencoder": steered(E, lambda: es("expertsteer_autoencoder", expert=T, target=E)),
        }
        return [self.cached(name, m, todo[m]) for m in methods]


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def load_models(fast: bool):
    from steer_lens.models import load_model

    if fast:
        from steer_lens.testing import make_tiny_model

        d = Path(tempfile.mkdtemp(prefix="steer_lens_fast_"))
        return (load_model(make_tiny_model(d / "target", "llama", d_model=64, n_layers=4)),
                load_model(make_tiny_model(d / "expert", "gemma3", d_model=48, n_layers=3, seed=1)))
    return load_model("smollm2-135m-instruct"), load_model("gemma-3-270m")


def report_from_cache(a) -> Path:
    """Rewrite the CSV/README from the cached rows of this configuration (no model runs)."""
    from main_report import write_report

    runner = Runner(a, None, None)
    order = CORE + ["reverse_expertsteer_autoencoder"] + ABLATIONS
    rows = [json.loads((runner.cache / f"{d}__{m}.json").read_text()) for d in a.datasets for m in order
            if (runner.cache / f"{d}__{m}.json").exists()]
    config = {**runner.config, "datasets": a.datasets, "reverse": a.reverse, "methods": a.methods}
    return write_report(rows, Path(a.out), config=config)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=None)
    p.add_argument("--limit-test", type=int, default=50)
    p.add_argument("--limit-val", type=int, default=12)
    p.add_argument("--limit-train", type=int, default=48, help="train items -> 2x contrast prompts")
    p.add_argument("--strengths", type=float, nargs="+", default=[0.1, 0.3, 0.9])
    p.add_argument("--n-pairs", type=int, default=2)
    p.add_argument("--iti-heads", type=int, default=8)
    p.add_argument("--reverse", nargs="*", default=None, help="datasets for SmolLM2 -> Gemma (default: first)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ae-epochs", type=int, default=300, help="autoencoder aligner max epochs")
    p.add_argument("--methods", nargs="+", default=CORE + ABLATIONS)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "results"))
    p.add_argument("--fast", action="store_true", help="tiny random models, very few items")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from cached rows, no models")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is ~4x faster than 2 when other jobs share the 2 cores)")
    a = p.parse_args(argv)
    if a.fast:
        a.datasets = a.datasets or ["arithmetic_2way"]
        a.limit_test, a.limit_val, a.limit_train, a.strengths, a.ae_epochs = 8, 6, 20, [0.5, 1.0], 50
    a.datasets = a.datasets or DEFAULT_DATASETS
    a.reverse = a.datasets[:1] if a.reverse is None else a.reverse
    return a


def main(argv=None) -> Path:
    a = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    if a.report_only:
        return report_from_cache(a)
    target, expert = load_models(a.fast)
    pipeline.capture = memo_capture(pipeline.capture)  # share captures across ExpertSteer variants
    runner = Runner(a, target, expert)
    from main_report import write_report

    config = {**runner.config, "datasets": a.datasets, "reverse": a.reverse, "methods": a.methods,
              "ae_epochs": a.ae_epochs, "iti_heads": a.iti_heads,
              "target": target.cfg.model_name, "expert": expert.cfg.model_name}
    done: dict = {}
    # pass 1: the core comparison on every dataset; then the reverse direction; then ablations
    plan = [(name, [m for m in CORE if m in a.methods]) for name in a.datasets]
    plan += [(name, ["reverse_expertsteer_autoencoder"]) for name in a.reverse]
    plan += [(name, [m for m in ABLATIONS if m in a.methods]) for name in a.datasets]
    path = Path(a.out) / "README.md"
    for name, methods in plan:
        for row in runner.run_dataset(name, methods):
            done[(row["dataset"], row["method"])] = row
        path = write_report(list(done.values()), Path(a.out), config=config)
    return path


if __name__ == "__main__":
    main()
