"""The benchmark runner: models x datasets x methods through the protocol, one cached row each.

    bench = Bench(target, expert, cache="results/benchmark/cache", target_id="smollm2-135m-instruct",
                  expert_id="gemma-3-270m")
    rows = bench.run(["sst2"], ["unsteered", "calibration", "expertsteer_label", "random_label"])

Each row is fitted on TRAIN, chosen on VALIDATION and scores TEST once (``steer_lens.methods``),
cached under the hash of everything it depends on (``RowCache``), and skipped when cached, so an
interrupted run resumes where it stopped. ``shard=(i, n)`` runs the i-th of n deterministic parts
of the rows (a job array of any scheduler spreads a benchmark over machines into one cache).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from .. import methods as M
from ..data import MCDataset, load_dataset
from ..search_store import SearchStore
from .cache import CacheMismatch, RowCache, dataset_key, model_id

log = logging.getLogger("steer_lens.bench")


class Bench:
    """Runs registered methods on datasets for one target (and optionally one expert).

    ``cache``: the row cache's root (default ``$STEER_LENS_CACHE/bench``). ``target_id`` / ``expert_id``:
    the models' names in cache keys (default: ``model_id`` of the
    model's ``cfg.model_name``). ``dtype``: recorded in the keys when not float32 (another precision
    is another experiment). ``test_split``: "test", or "confirm" inside a locked run.

    ``choices_from``: a row cache (folder) of ``test`` rows made under the same rules and models. A
    method with a row there reuses that row's validation choice (layers and strength; fitting on
    TRAIN is repeated, and is deterministic) and only scores ``test_split``; a method without one
    searches on validation as usual. Rows made under another rule set are refused.

    ``share_test``: steered test passes share their unsteered lower blocks (``Context``'s
    ``share_test``): a method and its random control run the blocks below their hooks once.

    ``resume_searches``: a row's validation search keeps every point it scores in
    ``<dataset>__<method>.points.jsonl`` beside the row (``steer_lens.search_store``), deleted once the row
    is written; a search interrupted before then replays those points when run again instead of scoring
    them anew (same points, same choice)."""

    def __init__(self, target, expert=None, *, cache: str | Path | None = None, rules: M.RuleSet | None = None,
                 target_id: str | None = None, expert_id: str | None = None, batch_size: int = 8,
                 dtype: str | None = None, test_split: str = "test", choices_from: str | Path | None = None,
                 share_test: bool = True, resume_searches: bool = True):
        self.target, self.expert = target, expert
        self.resume_searches = resume_searches
        self.rules = rules or M.RuleSet()
        if cache is None:
            from ..models import cache_dir

            cache = cache_dir() / "bench"
        self.cache = RowCache(cache)
        self.batch_size, self.test_split, self.share_test = batch_size, test_split, share_test
        self.target_id = target_id or model_id(target.cfg.model_name)
        self.expert_id = expert_id or (model_id(expert.cfg.model_name) if expert is not None else None)
        self.extra = {"dtype": dtype} if dtype not in (None, "float32") else {}
        if test_split != "test":
            self.extra["split"] = test_split
        if choices_from is not None and test_split == "test":
            raise ValueError("choices_from reuses the choices of test rows to score another split: pass "
                             "test_split='confirm' (or leave choices_from out)")
        self.choices = RowCache(choices_from) if choices_from is not None else None
        self._contexts: dict[str, M.Context] = {}
        self._datasets: dict[str, tuple[str, MCDataset]] = {}

    # -- keys ----------------------------------------------------------------------------------
    def config(self, method: str) -> dict:
        """What ``method``'s rows depend on: the folder key of its rows."""
        m = M.get(method)
        scope = m.row_scope()
        if scope == "test":  # selects nothing: only the scored model and the test items
            model = self.expert_id if m.steered_model == "expert" else self.target_id
            return {"rows": "unsteered test", "limit_test": self.rules.limit_test, "model": model, **self.extra}
        cfg = {"rules": self.rules.to_dict(), "target": self.target_id, **self.extra}
        if scope == "expert":
            self._need_expert(method)
            cfg["expert"] = self.expert_id
        return cfg

    def _need_expert(self, method: str) -> None:
        if self.expert_id is None:
            raise ValueError(f"method {method!r} needs an expert model: pass --expert (Bench(expert=...))")

    def dataset(self, name_or_path) -> tuple[str, MCDataset]:
        """(cache name, dataset) of a bundled name or a user's folder / JSONL file."""
        spec = str(name_or_path)
        if spec not in self._datasets:
            ds = load_dataset(name_or_path)
            for split in ("train", "validation", self.test_split):
                if split not in ds.splits:
                    raise ValueError(f"dataset {spec!r} has no {split!r} split (it has {sorted(ds.splits)}); a "
                                     f"benchmark row fits on train, chooses on validation and scores {self.test_split}: "
                                     f"add {split}.jsonl to the folder, or a \"split\" field to the JSONL lines")
            self._datasets[spec] = (dataset_key(name_or_path, ds), ds)
        return self._datasets[spec]

    def row_path(self, dataset, method: str) -> Path:
        key, _ = self.dataset(dataset)
        return self.cache.path(self.config(method), key, method)

    def points_path(self, dataset, method: str) -> Path:
        """Where ``method``'s validation search on ``dataset`` keeps its points until its row is written."""
        return self.row_path(dataset, method).with_suffix(".points.jsonl")

    def search_store(self, dataset, method: str) -> SearchStore | None:
        """The store of ``method``'s validation search on ``dataset`` (None: points not kept)."""
        return SearchStore(self.points_path(dataset, method)) if self.resume_searches else None

    # -- running -------------------------------------------------------------------------------
    def context(self, dataset) -> M.Context:
        key, ds = self.dataset(dataset)
        if key not in self._contexts:
            self._contexts[key] = M.Context(ds, self.target, self.expert, self.rules, batch_size=self.batch_size,
                                            row_of=lambda method, d=dataset: self.row(d, method),
                                            test_split=self.test_split, share_test=self.share_test,
                                            choice_of=(lambda method, d=dataset: self.recorded(d, method))
                                            if self.choices is not None else None,
                                            search_store=lambda method, d=dataset: self.search_store(d, method))
        return self._contexts[key]

    def recorded(self, dataset, method: str) -> dict | None:
        """``method``'s ``test`` row on ``dataset`` in ``choices_from`` (same rules and models), or None."""
        if self.choices is None:
            return None
        key, _ = self.dataset(dataset)
        cfg = {k: v for k, v in self.config(method).items() if k != "split"}
        row = self.choices.load(cfg, key, method)
        if row is not None and row.get("rule_set") != self.rules.hash:
            raise CacheMismatch(f"the recorded {method} row on {key} was chosen under rule set "
                                f"{row.get('rule_set')!r}, not {self.rules.hash!r}; its choice is not reused")
        return row

    def row(self, dataset, method: str) -> dict:
        """``method``'s row on ``dataset``: from the cache, else computed and cached."""
        key, ds = self.dataset(dataset)
        m = M.get(method)
        cfg = self.config(method)
        cached = self.cache.load(cfg, key, method)
        if cached is not None:
            log.info("skip %s / %s (cached)", key, method)
            return cached
        if self.target is None:
            raise RuntimeError(f"no cached {method} row for {key}, and no models loaded (report-only)")
        t0 = time.time()
        row = self._compute(m, key, ds, dataset)
        row.update(dataset=ds.name if key == ds.name else key, method=method, seconds=round(time.time() - t0, 1),
                   rule_set=self.rules.hash)
        row = self.cache.save(cfg, key, method, row)
        self.points_path(dataset, method).unlink(missing_ok=True)  # the row holds its validation curves
        log.info("%s / %s: acc %.3f [%.3f, %.3f] strength %s layers %s (%.0fs)", key, method, row["accuracy"],
                 row["ci_low"], row["ci_high"], row.get("strength"), row.get("layers"), row["seconds"])
        return row

    def _compute(self, m: M.Method, key: str, ds: MCDataset, dataset) -> dict:
        ctx = self.context(dataset)
        try:
            from ..ledger import scoring  # the test ledger, where the project has one
        except ImportError:
            return m.run(ctx)
        with scoring(method=m.name, rule_set=self.rules.hash):
            return m.run(ctx)

    def applicable(self, dataset, methods: Sequence[str]) -> list[str]:
        _, ds = self.dataset(dataset)
        keep = [m for m in methods if M.get(m).applies(ds)]
        for m in set(methods) - set(keep):
            log.info("%s: no %s row (%s)", ds.name, m, "needs two-way items" if m == "calibration" else "n/a")
        return keep

    def units(self, datasets: Sequence, methods: Sequence[str]) -> list[tuple[object, list[str]]]:
        """The run's work units in order: per dataset, each method with its control right after it
        (a control needs its method's row, so they travel together)."""
        groups, seen = [], set()
        for m in methods:
            if m in seen:
                continue
            ctrl = M.control_of(m)
            group = [m] + ([ctrl] if ctrl in methods else [])
            seen.update(group)
            groups.append(group)
        return [(d, g) for d in datasets for g in groups]

    def run(self, datasets: Sequence, methods: Sequence[str], *, shard: tuple[int, int] | None = None) -> list[dict]:
        """Every (dataset, method) row, computing what is not cached. ``shard=(i, n)``: only the work
        units whose index is i modulo n (0 <= i < n); the rows they need from other units (the
        unsteered row, a control's method) are computed or read from the shared cache as needed."""
        for m in methods:
            M.get(m)  # unknown names fail before any work
        units = self.units(datasets, methods)
        if shard is not None:
            i, n = shard
            if not (n >= 1 and 0 <= i < n):
                raise ValueError(f"shard {i}/{n}: need 0 <= I < N (e.g. --shard 0/4 ... --shard 3/4)")
            units = units[i::n]
        rows = []
        for dataset, group in units:
            rows += [self.row(dataset, m) for m in self.applicable(dataset, group)]
        return rows

    def cached_rows(self, datasets: Sequence | None = None, methods: Sequence[str] | None = None, *,
                    every_dataset: bool = False) -> list[dict]:
        """Cached rows of this configuration (target, expert, rules), ordered by dataset (``datasets`` first)
        then by registry order. ``every_dataset`` (a report over its own cache): every dataset with a row, so a
        run over some datasets never drops the rows other runs wrote. Otherwise (a cache shared with other
        experts' runs): ``datasets`` and the datasets with a row of this run's own expert, so another expert's
        target-only rows are not pulled in for datasets this expert never ran."""
        names = methods or [m for m in M.available() if self.expert_id is not None or not M.get(m).needs_expert]
        configs = {json.dumps(self.config(m), sort_keys=True): self.config(m) for m in names}
        found = {}
        for cfg in configs.values():
            for r in self.cache.rows(cfg):
                if r["method"] in names and self.config(r["method"]) == cfg:
                    found[(r["dataset"], r["method"])] = r
        if datasets and not every_dataset:  # these first; then every dataset with a row of this run's own models
            own = "expert" if self.expert_id is not None else "target"
            mine = {d for (d, m), r in found.items() if M.get(m).row_scope() == own}
            given = [self.dataset(d)[0] for d in datasets]
            keys = given + sorted(mine - set(given))
        else:
            given = [self.dataset(d)[0] for d in datasets or []]
            keys = given + sorted({d for d, _ in found} - set(given))
        rank = {d: i for i, d in enumerate(keys)}
        order = {m: i for i, m in enumerate(M.available())}
        rows = [r for r in found.values() if r["dataset"] in rank]
        return sorted(rows, key=lambda r: (rank[r["dataset"]], order.get(r["method"], len(order))))


__all__ = ["Bench"]
