"""Backfill the test ledger (``steer_lens.ledger``) from row caches committed before it existed: one line
per cached row of a test or confirm split, dated by the file's first commit (``python -m steer_lens.ledger
backfill``)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from .data import BUNDLED_DIR, SCORED_SPLITS, content_hash
from .ledger import ROOT, _append, _now, ledger_path, read

CACHE_GLOBS = ("results/benchmark/cache/*/*__*.json", "results/cache/*/*__*.json")


def _git(root: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def _cache_files(root: Path, ref: str | None) -> dict[str, tuple[str, str | None]]:
    """relative path -> (text, date) of the row caches: from git ``ref`` (date = the first commit
    of the file, following renames), or from the working tree when ``ref`` is None (date = the
    file's last commit, else its modification time)."""
    out: dict[str, tuple[str, str | None]] = {}
    if ref is not None:
        listing = _git(root, "ls-tree", "-r", "--name-only", ref, "--", "results")
        if listing is None:
            raise ValueError(f"cannot list {ref!r} in the git repository at {root}. Fix: pass a "
                             "commit that exists (e.g. HEAD), or ref=None for the working tree.")
        paths = [p for p in listing.splitlines() if any(Path(p).match(g) for g in CACHE_GLOBS)]
        for rel in sorted(paths):
            text = _git(root, "show", f"{ref}:{rel}")
            dates = (_git(root, "log", "--follow", "--format=%cI", ref, "--", rel) or "").split()
            if text is not None:
                out[rel] = (text, dates[-1] if dates else None)
        return out
    for f in sorted({f for g in CACHE_GLOBS for f in Path(root).glob(g)}):
        rel = str(f.relative_to(root))
        dates = (_git(root, "log", "-1", "--format=%cI", "--", rel) or "").split()
        mtime = _dt.datetime.fromtimestamp(f.stat().st_mtime, _dt.timezone.utc).replace(microsecond=0)
        out[rel] = (f.read_text(encoding="utf-8"), dates[0] if dates else mtime.isoformat())
    return out


def row_hash(row: dict) -> str:
    """Identity of a cached row (dataset, method, model, ids and per-item correctness): the same
    row under a renamed folder or in another commit is not added twice."""
    key = {k: row.get(k) for k in ("dataset", "method", "model", "ids", "correct")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _live_key(line: dict) -> tuple:
    return tuple(line.get(k) for k in ("dataset", "split", "method", "model", "rule_set", "n"))


def backfill(root: Path = ROOT, path: Path | None = None, *, ref: str | None = "HEAD",
             dry_run: bool = False, datasets_dir: Path = BUNDLED_DIR) -> list[dict]:
    """Ledger lines for the committed row caches (``CACHE_GLOBS`` in git ``ref``; the working
    tree when ``ref`` is None), each a scoring of a test split. Dataset and method come from the
    row (else the file name ``<dataset>__<method>.json``), the rule set the row's ``rule_set`` (else its
    config-hash folder), the model the row's, the date the file's first commit; the split is the bundled
    test/confirm split holding every scored id and ``split_hash`` its current content hash.
    Rows already in the ledger are skipped, so reruns add nothing: a backfilled row by its ``row_hash``, a
    row scored since the ledger existed by the line its scoring wrote (same dataset, split, method,
    model, rule set and item count; the rule set is the row's own ``rule_set`` where it has one, which
    need not be its folder's name). Returns the lines added (or that would be, with ``dry_run``)."""
    from .data import load_dataset

    target = Path(path) if path else ledger_path()
    lines = read(target)
    done = {line.get("row_hash") for line in lines} - {None}
    live = {_live_key(x) for x in lines if not str(x.get("source", "")).startswith("backfill")}
    splits_of: dict[str, dict[str, tuple[set[str], str]]] = {}
    added = []
    for rel, (text, date) in _cache_files(Path(root), ref).items():
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            print(f"skipping {rel}: not JSON ({e.msg})", file=sys.stderr)
            continue
        if not isinstance(row, dict) or not row.get("ids"):
            continue
        stem_ds, _, stem_method = Path(rel).stem.partition("__")
        row = {**row, "dataset": row.get("dataset") or stem_ds, "method": row.get("method") or stem_method,
               "model": str(row.get("model") or (row.get("meta") or {}).get("model") or "unknown")}
        rh = row_hash(row)
        if rh in done:
            continue
        ds_name = row["dataset"]
        if ds_name not in splits_of:
            folder = Path(datasets_dir) / ds_name
            splits_of[ds_name] = {}
            if folder.is_dir():
                ds = load_dataset(str(folder))
                splits_of[ds_name] = {s: ({it.id for it in items}, content_hash(items))
                                      for s, items in ds.splits.items() if s in SCORED_SPLITS}
        ids = set(row["ids"])
        split = next((s for s, (have, _) in splits_of[ds_name].items() if ids <= have), None)
        if split is None:
            print(f"skipping {rel}: its ids are not all in one test/confirm split of a bundled "
                  f"dataset {ds_name!r}", file=sys.stderr)
            continue
        line = {"date": date or _now(), "dataset": ds_name, "split": split,
                "split_hash": splits_of[ds_name][split][1], "n": len(row["ids"]),
                "method": row["method"], "rule_set": row.get("rule_set") or Path(rel).parent.name,
                "model": row["model"],
                "source": f"backfill:{rel}" + (f"@{ref}" if ref and ref != "HEAD" else ""),
                "row_hash": rh}
        if _live_key(line) in live:
            continue
        if not dry_run:
            _append(target, line)
        done.add(rh)
        added.append(line)
    return added
