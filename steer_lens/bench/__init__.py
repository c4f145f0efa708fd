"""The benchmark runner: registered methods x datasets x models through the protocol.

    import steer_lens as sl
    bench = sl.bench.Bench(target, expert)          # rows cached under $STEER_LENS_CACHE/bench
    print(sl.bench.render_compare(sl.bench.compare_method(bench, "sst2", "expertsteer_label")))

``Bench`` caches one row per (dataset, method) under the hash of the rule set and the models'
names, resumes after an interruption and refuses rows written under other rules
(``CacheMismatch``); ``steer-lens bench`` is its command line and writes the CSV and the report.
"""

from .cache import CacheMismatch, RowCache, dataset_content_hash, dataset_key, model_id
from .compare import compare_method, render_compare
from .runner import Bench

__all__ = ["Bench", "CacheMismatch", "RowCache", "compare_method", "dataset_content_hash", "dataset_key",
           "model_id", "render_compare"]
