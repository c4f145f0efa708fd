"""A row's validation choice vs one test pass, and the core benchmark's projected hours.

Measured on one dataset (``--dataset``, default SST-2) with the benchmark's sizes (64 train, 100
validation, 500 test items) at two torch threads, on one shared ``Context`` as the runner builds it:

- the fit (``candidates(ctx)``, TRAIN only) of every core method that chooses on validation, in the
  CLI's ``CORE`` order, so a capture shared by several methods (``target_acts``, ``expert_acts``) is
  timed once, under the first method that needs it, as the runner computes it once;
- the target's unsteered validation pass (computed once per model and dataset for every method);
- one unsteered test pass of the target and one of the expert (the ``expert_unsteered`` row);
- the steered test passes of the timed CAA row's chosen plan and of its random control, one after
  the other on the shared ``Context`` (``test_pair``: the control reuses the unsteered blocks below
  the hooks, ``Context.share_test``);
- the validation choice (fit and unsteered validation pass excluded) of the ``caa`` row (two
  shortlisted layers, unsigned strengths) and of the ``expertsteer_label`` row (shortlisted pairs,
  signed strengths) under each rule of ``--rules`` (default "flips"; add "reference" or "halving",
  minutes to an hour on SmolLM2).

Headline: ``search_vs_test_time_ratio`` = the CAA row's choice seconds / one test pass's seconds
under the first rule (target <= 1.5: choose on validation in about the time of one test pass).
``core_benchmark_hours`` projects the measured seconds over the bundled datasets (``FORMULA``):
per dataset, one unsteered validation pass and every core row that applies there (``applies``):

    choosing method m:  fit[m] * f_train + choice[m] * f_validation + test_pair * f_test
                        (its test pass and its random control's; an upper bound: a row at strength
                        0 reuses the unsteered row)
    unsteered: test_target * f_test;  expert_unsteered: test_expert * f_test;  calibration: 0
    (it reads the unsteered test row and validation pass)

``f_split`` = the tokens one evaluate pass runs on the dataset's split (rule-set item limits; each
prompt once plus every choice's continuation, target tokenizer, no model run) / the same on the
measured dataset. ``choice[m]`` is the measured choice of the timed row with m's search sign
(signed: expertsteer_label, else caa). Rows run one at a time on two cores at two threads. The JSON
holds every term (``seconds``, ``datasets``, ``choice_proxy``, ``formula``) to recompute it.

Usage: python benchmarks/bench_search.py [--fast] [--rules flips reference halving] [--dataset sst2]
"""

from __future__ import annotations

import dataclasses
import time

import _common as C

CHOOSING = ("label_caa", "expertsteer_label", "caa", "self_rfm", "expertsteer_autoencoder")
REFERENCES = ("unsteered", "expert_unsteered", "calibration")
TIMED = ("caa", "expertsteer_label")  # the rows whose choice is timed: an unsigned and a signed search
FORMULA = ("core_benchmark_hours = sum over datasets d of [val_pass * f_validation(d) + sum over rows m in "
           "d.rows of cost(m, d)] / max(1, cores // threads_per_row) / 3600; cost(m, d) = fit[m] * f_train(d) "
           "+ choice[m] * f_validation(d) + test_pair * f_test(d) for a choosing method (m in fit: its "
           "row and its random control), test_expert * f_test(d) for expert_unsteered, 0 for calibration, "
           "test_target * f_test(d) for any other reference row (unsteered)")


def core_methods() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(methods that choose on validation, rows that only score test) of the core suite: the
    benchmark CLI's ``CORE`` list when importable, else the list above."""
    try:
        import steer_lens.methods as M
        from steer_lens.bench.cli import CORE

        choosing = tuple(m for m in CORE if M.get(m).control is not None and not M.get(m).reference)
        return choosing, tuple(m for m in CORE if m not in choosing)
    except Exception:  # the CLI or registry changed shape: the list above
        return CHOOSING, REFERENCES


def row_seconds(m: str, seconds: dict, factors: dict) -> float:
    """Projected seconds of core row ``m`` (with its random control) on a dataset (``FORMULA``)."""
    if m in seconds["fit"]:
        pair = seconds.get("test_pair", 2 * seconds["test_target"])  # older results: two separate passes
        return (seconds["fit"][m] * factors["train"] + seconds["choice"][m] * factors["validation"]
                + pair * factors["test"])
    if m == "calibration":
        return 0.0
    return (seconds["test_expert"] if m == "expert_unsteered" else seconds["test_target"]) * factors["test"]


def core_benchmark_hours(seconds: dict, datasets: dict, *, cores: int = 2, threads_per_row: int = 2) -> float:
    """``FORMULA``: ``seconds`` has fit and choice (per choosing method), val_pass, test_target and
    test_expert; ``datasets`` maps each dataset to its ``factors`` (per split) and applicable ``rows``."""
    total = sum(seconds["val_pass"] * d["factors"]["validation"]
                + sum(row_seconds(m, seconds, d["factors"]) for m in d["rows"]) for d in datasets.values())
    return total / max(1, cores // threads_per_row) / 3600


def pass_tokens(model, items) -> int:
    """Tokens one ``evaluate`` pass runs over ``items``: each prompt once plus every choice's
    continuation (the model's tokenizer and chat template, as evaluate formats them; no model run)."""
    from steer_lens.tokens import encode, uses_chat_template

    chat, total = uses_chat_template(model, None), 0
    for it in items:
        enc = [encode(model, (it.prompt(), c), chat=chat) for c in it.completions()]
        total += enc[0][1] + sum(len(ids) - start for ids, start in enc)
    return total


def split_tokens(model, ds, rules) -> dict[str, int]:
    """``pass_tokens`` of the items a run reads: the Context's TRAIN and VALIDATION, the scored TEST."""
    import steer_lens.methods as M

    ctx = M.Context(ds, model, None, rules)
    items = {"train": ctx.train, "validation": ctx.val, "test": ds.split("test", limit=rules.limit_test)}
    return {split: pass_tokens(model, its) for split, its in items.items()}


def dataset_scales(model, rules, measured) -> dict:
    """Per bundled dataset: split tokens, factors relative to ``measured`` and the core rows it has."""
    import steer_lens.methods as M
    from steer_lens.data import list_datasets, load_dataset

    base = split_tokens(model, measured, rules)
    choosing, references = core_methods()
    out = {}
    for name in list_datasets():
        ds = load_dataset(name)
        tokens = split_tokens(model, ds, rules)
        out[name] = {"tokens": tokens, "factors": {s: tokens[s] / base[s] for s in tokens},
                     "rows": [m for m in references + choosing if M.get(m).applies(ds)]}
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--rules", nargs="+", default=["flips"], choices=["flips", "halving", "reference"])
    p.add_argument("--dataset", default="sst2")
    p.set_defaults(threads=None)
    args = p.parse_args(argv)
    args.threads = args.threads or (1 if args.fast else 2)  # tiny models: one thread (no OpenMP stalls)
    C.setup(args)
    import steer_lens.methods as M
    from steer_lens.data import load_dataset
    from steer_lens.evaluate import evaluate
    from steer_lens.protocol import choose

    model, expert = C.target_model(args), C.expert_model(args)
    rules = M.RuleSet.fast(limit_val=12, limit_test=24) if args.fast else M.RuleSet()
    ds = load_dataset(args.dataset)
    ctx = M.Context(ds, model, expert, rules)  # one context per dataset, as the runner's
    choosing, references = core_methods()
    load_before = C.load()
    fit = {m: timed(lambda m=m: M.get(m).candidates(ctx))[1] for m in choosing}  # CORE order
    zero, val_pass = timed(lambda: ctx.val0(model))  # per item: the "flips" rule reads the answers
    test, test_target = timed(lambda: evaluate(model, ds, split="test", limit=rules.limit_test,
                                               batch_size=ctx.batch_size))
    test_e, test_expert = timed(lambda: evaluate(expert, ds, split="test", limit=rules.limit_test,
                                                 batch_size=ctx.batch_size))
    choices = {}
    for rule in args.rules:
        for name in TIMED:
            method = M.get(name)
            candidates = method.candidates(ctx)  # the fit (memoised: timed above when a core method)
            search = dataclasses.replace(ctx.search(method.signed), strategy=rule)
            c, sec = timed(lambda: choose(model, ctx.val, candidates, search=search, zero=zero,
                                          batch_size=ctx.batch_size))
            choices.setdefault(rule, {})[name] = {
                "seconds": sec, "key": str(c.key), "strength": c.strength, "val_accuracy": c.best["accuracy"],
                "n_points": sum(len(v) for v in c.curves.values()), "candidates": [str(k) for k in candidates]}
    first = choices[args.rules[0]]
    from steer_lens.baselines import random_plan

    caa = M.get("caa").candidates(ctx)
    plan = caa[[k for k in caa if str(k) == first["caa"]["key"]][0]]
    s = first["caa"]["strength"] or 0.1  # a row at strength 0 scores nothing: time a steered pass anyway
    _, test_pair = timed(lambda: (ctx.test(model, plan, s), ctx.test(model, random_plan(plan, seed=0), s)))
    load_after = C.load()
    proxy = {m: "expertsteer_label" if M.get(m).signed else "caa" for m in choosing}
    seconds = {"fit": fit, "choice": {m: first[proxy[m]]["seconds"] for m in choosing}, "val_pass": val_pass,
               "test_target": test_target, "test_expert": test_expert, "test_pair": test_pair}
    datasets, tokenise = timed(lambda: dataset_scales(model, rules, ds))
    C.write(args, "search", {
        "search_vs_test_time_ratio": first["caa"]["seconds"] / test_target,
        "core_benchmark_hours": core_benchmark_hours(seconds, datasets, cores=2, threads_per_row=2),
        "choice_seconds": first["caa"]["seconds"], "test_pass_seconds": test_target, "test_pair_seconds": test_pair,
        "label_choice_seconds": first["expertsteer_label"]["seconds"], "expert_test_pass_seconds": test_expert,
        "val_pass_seconds": val_pass, "fit_seconds_total": sum(fit.values()),
        "rule": args.rules[0], "choices": choices, "seconds": seconds, "choice_proxy": proxy,
        "datasets": datasets, "cores": 2, "threads_per_row": 2, "formula": FORMULA,
        "per_dataset_seconds": {d: v["factors"]["validation"] * val_pass
                                + sum(row_seconds(m, seconds, v["factors"]) for m in v["rows"])
                                for d, v in datasets.items()},
        "model": str(model.cfg.model_name), "expert": str(expert.cfg.model_name), "dataset": ds.name,
        "n_train": len(ctx.train), "n_val": len(ctx.val), "n_test": test.n, "n_test_expert": test_e.n,
        "core_methods": [list(choosing), list(references)], "tokenise_seconds": tokenise,
        "load_before": load_before, "load_after": load_after,
        "note": "wall seconds at --threads torch threads; fits in CORE order on one Context (a shared capture "
                "counted once, under the first method needing it); choices exclude the fit and the unsteered "
                "validation pass; test passes are unsteered (a steered pass adds hooks only); dataset factors "
                "scale by tokens (a fit's RFM/auto-encoder training scales with items, not tokens: rough)",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
