"""How much a steering row depends on the train items it was fitted on: the spread over fit seeds.

Each method's committed SST-2 test row (``results/benchmark/cache``, the locked rule set) was fitted on the
rules' seeded subsample of 64 train items (seed 0). Here the same method is refitted on the subsamples of
seeds 1-3 (other train items, same size) and scored on the same 500 test items at the row's chosen layers and
strength (no new search): ``Method.plan_at`` fits at the row's layers (layer pairs for ExpertSteer) even where the
method's train-side shortlist on the other items would propose others; the report says where it would.
Test-split rows: exploratory. Every scoring is in results/ledger.jsonl (method ``<name>@seed<k>``).

    python analyses/fit_seeds.py                       # the primary steered methods, seeds 1-3 (resumable)
    python analyses/fit_seeds.py --report-only
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "fit_seeds"
METHODS = ("expertsteer_autoencoder", "expertsteer_label", "label_caa")
SEEDS = (1, 2, 3)
DATASET = "sst2"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from steer_lens import methods as M
    from steer_lens.bench import Bench
    from steer_lens.bench.cli import EXPERT, TARGET
    from steer_lens.io import write_json, write_text
    from steer_lens.ledger import split_section

    store = OUT / "rows.json"
    done = {k: v for k, v in (json.loads(store.read_text()) if store.exists() else {}).items() if "skipped" not in v}
    bench = Bench(None, None, cache=ROOT / "results" / "benchmark" / "cache", target_id=TARGET, expert_id=EXPERT,
                  rules=M.RuleSet.reference())  # the committed rows' rules
    # the report lists every method run so far, not only those of this call
    listed = [*a.methods, *sorted({v["method"] for v in done.values()} - set(a.methods))]
    rows = {m: json.loads(bench.row_path(DATASET, m).read_text()) for m in listed}
    if not a.report_only:
        import torch

        from steer_lens import ledger
        from steer_lens.data import load_dataset
        from steer_lens.evaluate import evaluate
        from steer_lens.models import load_model

        torch.set_num_threads(a.threads)
        target, expert = load_model(TARGET), load_model(EXPERT)
        ds = load_dataset(DATASET)
        for seed in a.seeds:
            ctx = M.Context(ds, target, expert, bench.rules, train_seed=seed)
            for m in a.methods:
                key = f"{m}@seed{seed}"
                if key in done:
                    continue
                row, method = rows[m], M.get(m)
                try:  # would the method's own shortlist on these train items propose the row's layers?
                    method.plan_of(ctx, row)
                    proposed = True
                except ValueError:
                    proposed = False
                plan = method.plan_at(ctx, row)
                with ledger.scoring(method=key, rule_set=bench.rules.hash):
                    r = evaluate(method.model(ctx), ds, split="test", limit=bench.rules.limit_test, plan=plan,
                                 strength=row["strength"], batch_size=8)
                done[key] = {"method": m, "seed": seed, "accuracy": r.accuracy, "ci_low": r.ci_low,
                             "ci_high": r.ci_high, "n": r.n, "layers": row["layers"], "strength": row["strength"],
                             "layers_proposed": proposed}
                logging.info("%s: %s", key, done[key])
                write_json(store, done)
    lines = ["# Spread over fit seeds (SST-2 test, exploratory)", "",
             "Made by `python analyses/fit_seeds.py`. Each method refitted on the rules' 64-item train subsample of "
             "seeds 1-3 and scored on the 500 test items at its committed row's layers and strength (seed 0 is the "
             "committed row).", "",
             "| method | layers | strength | seed 0 (committed) | seed 1 | seed 2 | seed 3 | range |", "|---|---|---|---|---|---|---|---|"]
    for m in sorted(rows, key=lambda m: (m not in METHODS, list(METHODS).index(m) if m in METHODS else 0, m)):
        row = rows[m]
        accs = [row["accuracy"]]
        cells = []
        for s in SEEDS:
            d = done.get(f"{m}@seed{s}")
            if d is None:
                cells.append("not run")
            else:
                accs.append(d["accuracy"])
                cells.append(f"{d['accuracy']:.3f}" + ("" if d["layers_proposed"] else " †"))
        lines.append(f"| {m} | {row['layers']} | {row['strength']} | {row['accuracy']:.3f} | {' | '.join(cells)} | "
                     f"{min(accs):.3f}-{max(accs):.3f} |")
    lines += ["", "† the method's own train-side shortlist on that seed's items would not propose the row's layers "
              "(fitted there anyway, as the choice is kept)."]
    OUT.mkdir(parents=True, exist_ok=True)
    write_text(OUT / "README.md", "\n".join(lines) + "\n\n" + split_section([DATASET]))
    print(OUT / "README.md")


if __name__ == "__main__":
    sys.exit(main())
