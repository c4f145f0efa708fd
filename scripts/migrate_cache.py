"""Move row caches of the runner's earlier layout (folders keyed by a hash of the command's options,
absolute expert paths inside) into the current layout (``steer_lens.bench.RowCache``: keyed by the rule
set and the models' names). Only rows made under the current rules move; folders of superseded rules
(layer ties broken lowest-first, or only the best candidate refined) are listed and left alone.

    python scripts/migrate_cache.py results/benchmark/cache --out /tmp/new_cache [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from steer_lens import methods as M
from steer_lens.bench.cache import RowCache, model_id

TARGET, EXPERT = "smollm2-135m-instruct", "gemma-3-270m"


def current_rules(cfg: dict) -> M.RuleSet | None:
    """The RuleSet of an old folder's config, None if its rules are superseded."""
    if cfg.get("protocol") != 3 or cfg.get("layer_ties") != "spread" or cfg.get("refine") != "all" or cfg.get("fast"):
        return None
    return M.RuleSet(limit_train=cfg["limit_train"], limit_val=cfg["limit_val"], limit_test=cfg["limit_test"],
                     grid=tuple(cfg["strengths"]), refine_rounds=cfg["refine_rounds"], n_pairs=cfg["n_pairs"],
                     pair_shortlist=cfg["pair_shortlist"], layer_shortlist=cfg["layer_shortlist"],
                     iti_heads=cfg["iti_heads"], ae_epochs=cfg["ae_epochs"],
                     expert_layers=tuple(cfg["expert_layers"]) if cfg.get("expert_layers") else None,
                     extend_flat=bool(cfg.get("extend_flat", False)))


def new_config(old: dict, method: str) -> dict | None:
    """The current cache config of one row of an old folder (None: superseded rules)."""
    m = M.get(method)
    extra = {"dtype": old["dtype"]} if old.get("dtype") not in (None, "float32") else {}
    if "method" in old:  # the unsteered rows: only the scored model and the test items
        model = model_id(old["expert"]) if old["method"] == "expert_unsteered" else model_id(old.get("target", TARGET))
        return {"rows": "unsteered test", "limit_test": old["limit_test"], "model": model, **extra}
    rules = current_rules(old)
    if rules is None:
        return None
    cfg = {"rules": rules.to_dict(), "target": model_id(old.get("target", TARGET)), **extra}
    if m.row_scope() == "expert":
        cfg["expert"] = model_id(old.get("expert", EXPERT))
    return cfg


def migrate(src: Path, out: Path, dry_run: bool = False) -> Counter:
    cache, counts = RowCache(out), Counter()
    for folder in sorted(p for p in src.iterdir() if (p / "config.json").exists()):
        old = json.loads((folder / "config.json").read_text())
        if old.get("format"):
            counts["already current"] += 1
            continue
        rows = sorted(folder.glob("*__*.json"))
        for path in rows:
            row = json.loads(path.read_text())
            dataset, method = path.stem.split("__", 1)
            cfg = new_config(old, method)
            if cfg is None:
                counts[f"superseded ({folder.name})"] += 1
                continue
            rules = cfg.get("rules")
            row["rule_set"] = M.RuleSet(**{**rules, "grid": tuple(rules["grid"]),
                                           "expert_layers": tuple(rules["expert_layers"]) if rules["expert_layers"]
                                           else None}).hash if rules else None
            if not dry_run:
                cache.save(cfg, dataset, method, row)
            counts["moved"] += 1
        if not rows:
            counts[f"empty ({folder.name})"] += 1
    return counts


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args()
    for k, v in sorted(migrate(a.src, a.out, a.dry_run).items()):
        print(f"{k}: {v}")
