"""Where a row's validation choice spends its forward passes: points, item-points and blocks run
per search phase, for three kinds of row, under four rules.

Rows (validation items of the real datasets; plans fitted on train items):
  caa    two single-layer CAA candidates (layers n/4 and n/2, SST-2, unsigned), as the CAA-like
         methods' layer shortlist of two
  label  one label-direction candidate (SST-2, signed search: both signs of every strength)
  pairs  three two-layer candidates (ARC-Easy, four multi-token choices), as the validation pair
         rule's shortlist of three
Rules:
  today      the reference search, the lower blocks recomputed in every sweep call
  reference  the same search and points, one set of lower-block residuals shared by every
             candidate and round (``choose(share=True)``, the default)
  halving    ``StrengthSearch.halving()`` with the same sharing
  flips      ``StrengthSearch(strategy="flips")`` with the same sharing: the reference's points,
             each run only on the items whose answer is not yet known (``steer_lens.flips``)
The unsteered validation point is computed once per model and split (as the benchmark runner's
``Context.val0``) and passed to every row. One "validation pass" = ``evaluate`` on the validation
items (every block once); a test pass of 500 items = 500 / n_val validation passes.

Default: tiny random models (steer_lens.testing, a Llama of 8 blocks), seconds. ``--real``: the
SmolLM2-135M-Instruct target on ``--n-val`` items (default 20), a few minutes at one thread.
Writes benchmarks/results/profile_search[_real].json and benchmarks/results/profile.md
(``--fast``: benchmarks/results/fast/, for tests).

Usage: python benchmarks/profile_search.py [--real] [--n-val N] [--fast]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import _common as C

RULES = ("today", "reference", "halving", "flips")
N_TEST = 500


def build_rows(model, n_val: int, n_train: int) -> dict:
    """kind -> (validation items, candidate plans, signed)."""
    from steer_lens.baselines import fit_caa
    from steer_lens.baselines.caa import pooled_activations
    from steer_lens.data import contrast_prompts, load_dataset
    from steer_lens.plan import SteeringPlan

    n = model.cfg.n_layers
    sst2, arc = load_dataset("sst2"), load_dataset("arc_easy")
    rows = {}
    pos, neg = contrast_prompts(sst2.split("train", limit=n_train))
    layers = sorted({max(1, n // 4), n // 2})
    rows["caa"] = (sst2.split("validation", limit=n_val), {l: fit_caa(model, pos, neg, l) for l in layers}, False)
    lpos, lneg = contrast_prompts(sst2.split("train", limit=n_train), by="label")
    rows["label"] = (sst2.split("validation", limit=n_val), {n // 2: fit_caa(model, lpos, lneg, n // 2)}, True)
    apos, aneg = contrast_prompts(arc.split("train", limit=n_train))
    wanted = sorted({max(1, n // 4), max(1, n // 3), n // 2, (2 * n) // 3})
    if len(wanted) < 3:  # a model of few blocks
        wanted = list(range(n))
    acts = pooled_activations(model, apos, aneg, wanted)
    single = {l: fit_caa(model, apos, aneg, l, acts=acts, acts_layers=wanted) for l in wanted}

    def pair(a, b):
        pa, pb = single[a], single[b]
        return SteeringPlan(vectors={**pa.vectors, **pb.vectors}, pairs=[], mi=None, expert=pa.expert,
                            target=pa.target, norms={**pa.norms, **pb.norms})

    import itertools

    combos = list(itertools.combinations(wanted, 2))
    combos = [combos[i] for i in (1, len(combos) - 2, len(combos) - 1)] if len(combos) > 3 else combos[:3]
    rows["pairs"] = (arc.split("validation", limit=n_val), {f"{a}+{b}": pair(a, b) for a, b in combos}, False)
    return rows


def profile_row(model, items, candidates, signed, rule, zero) -> dict:
    from steer_lens.profiling import ForwardCounter
    from steer_lens.protocol import StrengthSearch, choose

    strategy = rule if rule in ("halving", "flips") else "reference"
    search = StrengthSearch(signed=signed, strategy=strategy)
    t0 = time.process_time()
    with ForwardCounter(model) as fc:
        c = choose(model, items, candidates, search=search, zero=zero, share=rule != "today")
    return {"cpu_seconds": time.process_time() - t0, "totals": fc.totals(), "phases": dict(fc.rows()),
            "key": str(c.key), "strength": c.strength, "accuracy": c.best["accuracy"],
            "mean_margin": c.best["mean_margin"]}


def unit_pass(model, items) -> dict:
    """One unsteered evaluate of ``items``: the validation pass the search costs are measured in."""
    from steer_lens.evaluate import evaluate
    from steer_lens.profiling import ForwardCounter

    t0 = time.process_time()
    with ForwardCounter(model) as fc:
        res = evaluate(model, items)
    return {"totals": fc.totals(), "cpu_seconds": time.process_time() - t0, "zero": res}


def markdown(result: dict) -> str:
    lines = [f"# Where the validation search's passes go ({result['model']})", "",
             f"`python benchmarks/profile_search.py{' --real' if result['real'] else ''}`: "
             f"{result['n_val']} validation items per row, {result['n_layers']} blocks, one torch thread, "
             "batch 8. A *validation pass* is one unsteered `evaluate` of the validation items (every block "
             f"once); a test pass of {N_TEST} items is {N_TEST}/{result['n_val']} of them. *points*: strengths "
             "scored (a point on a quarter of the items counts as one); *item-points*: items x strengths; "
             "*blocks*: block executions (batches x blocks); *tokens*: tokens through blocks, in validation "
             "passes. The unsteered validation point is computed once per model and split and passed to "
             "every row (not counted below).", "",
             "| row | rule | points | item-points | blocks | validation passes | x test pass | CPU s | "
             "chosen (candidate, strength, val. accuracy) |", "|---|---|---|---|---|---|---|---|---|"]
    unit = result["unit_pass"]["totals"]["block_tokens"]
    for kind, rules in result["rows"].items():
        for rule, r in rules.items():
            t = r["totals"]
            passes = t["block_tokens"] / unit
            lines.append(f"| {kind} | {rule} | {t['points']} | {t['item_points']} | {t['block_calls']} | "
                         f"{passes:.1f} | {passes * result['n_val'] / N_TEST:.2f} | {r['cpu_seconds']:.1f} | "
                         f"{r['key']}, {r['strength']:g}, {r['accuracy']:.3f} |")
    lines += ["", "Per phase (validation passes of block tokens; points):", "",
              "| row | rule | " + " | ".join(["phase"] * 1) + " | points | item-points | validation passes |",
              "|---|---|---|---|---|---|"]
    for kind, rules in result["rows"].items():
        for rule, r in rules.items():
            for name, row in r["phases"].items():
                lines.append(f"| {kind} | {rule} | {name} | {row['points']} | {row['item_points']} | "
                             f"{row['block_tokens'] / unit:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--real", action="store_true", help="the SmolLM2 target instead of the tiny model")
    p.add_argument("--n-val", type=int, default=None, help="validation items per row (default 40 tiny, 20 real)")
    args = p.parse_args(argv)
    C.setup(args)
    from steer_lens.models import load_model
    from steer_lens.testing import make_tiny_model

    tmp = tempfile.TemporaryDirectory()
    if args.real:
        model = load_model("smollm2-135m-instruct")
    else:
        model = load_model(make_tiny_model(Path(tmp.name) / "tiny", "llama", d_model=64, n_layers=4 if args.fast else 8))
    n_val = args.n_val or (8 if args.fast else 20 if args.real else 40)
    rows = build_rows(model, n_val, n_train=8 if args.fast else 32)
    result = {"model": str(model.cfg.model_name), "real": bool(args.real), "n_val": n_val,
              "n_layers": model.cfg.n_layers, "load_before": C.load(), "rows": {}, "unit_pass": {}}
    zero = {}
    for kind, (items, candidates, signed) in rows.items():
        key = tuple(it.id for it in items)
        if key not in zero:
            zero[key] = unit_pass(model, items)
        result["unit_pass"] = {k: v for k, v in zero[key].items() if k != "zero"}
        result["rows"][kind] = {rule: profile_row(model, items, candidates, signed, rule, zero[key]["zero"])
                                for rule in RULES}
        print(f"{kind}: " + ", ".join(f"{rule} {r['totals']['block_tokens'] / zero[key]['totals']['block_tokens']:.1f}"
                                       for rule, r in result["rows"][kind].items()) + " validation passes", flush=True)
    # the ARC items are longer than SST-2's: every row is measured in its own items' pass
    for kind, (items, _, _) in rows.items():
        unit = zero[tuple(it.id for it in items)]["totals"]["block_tokens"]
        for r in result["rows"][kind].values():
            r["validation_passes"] = r["totals"]["block_tokens"] / unit
    result["unit_pass_by_row"] = {kind: zero[tuple(it.id for it in items)]["totals"] for kind, (items, _, _) in rows.items()}
    result["load_after"] = C.load()
    result["findings"] = findings_by_row(result)
    name = "profile_search_real" if args.real else "profile_search"
    C.write(args, name, result)
    folder = Path(args.results_dir) if args.results_dir else (C.RESULTS / "fast" if args.fast else C.RESULTS)
    md = folder / ("profile_real.md" if args.real else "profile.md")
    from steer_lens.io import write_text

    write_text(md, markdown_by_row(result))
    print(f"-> {md}")
    tmp.cleanup()
    return 0


def markdown_by_row(result: dict) -> str:
    """``markdown`` with every row's passes in its own validation items' pass."""
    text = []
    for kind, rules in result["rows"].items():
        one = {**result, "rows": {kind: rules}, "unit_pass": {"totals": result["unit_pass_by_row"][kind]},
               "findings": []}
        text.append(markdown(one))
    head, *rest = text
    # keep one header: the tables of the later rows without their titles
    body = [head.rstrip()]
    for t in rest:
        body.append("\n".join(t.splitlines()[4:]).rstrip())
    return "\n\n".join(body) + "\n\n" + "\n".join(result["findings"]) + "\n"


def findings_by_row(result: dict) -> list[str]:
    out = ["Findings:", ""]
    for kind, rules in result["rows"].items():
        unit = result["unit_pass_by_row"][kind]["block_tokens"]
        p = {rule: r["totals"]["block_tokens"] / unit for rule, r in rules.items()}
        refine = sum(row["block_tokens"] for name, row in rules["today"]["phases"].items() if "refine" in name) / unit
        out.append(f"- **{kind}**: today {p['today']:.1f} validation passes ({refine:.1f} of them in refinement "
                   f"rounds) = {p['today'] * result['n_val'] / N_TEST:.2f} test passes; lower blocks shared "
                   f"{p['reference']:.1f} (same points); halving {p['halving']:.1f} = "
                   f"{p['halving'] * result['n_val'] / N_TEST:.2f} test passes; flips {p['flips']:.1f} = "
                   f"{p['flips'] * result['n_val'] / N_TEST:.2f} test passes. Chosen validation accuracy: "
                   f"reference {rules['reference']['accuracy']:.3f}, halving {rules['halving']['accuracy']:.3f}, "
                   f"flips {rules['flips']['accuracy']:.3f}.")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
