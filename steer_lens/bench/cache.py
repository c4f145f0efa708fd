"""The row cache: one JSON file per (dataset, method), in a folder named by the hash of what the row
depends on (the rule set and the models' names, never an absolute path).

    <root>/<key>/config.json            what the key hashes
    <root>/<key>/<dataset>__<method>.json

A row carries its folder's key (``cache_key``); a row or folder whose key or config does not match
the run reading it is refused (``CacheMismatch``) instead of being mixed in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..data import MCDataset, list_datasets
from ..io import write_json

FORMAT = 2  # the cache layout (a folder of another layout is refused, never read)


class CacheMismatch(RuntimeError):
    """A cached row or folder was written under other rules or inputs than the run reading it."""


def config_key(config: dict) -> str:
    """10 hex digits of the SHA-1 of ``config`` (JSON, sorted keys)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def model_id(spec) -> str:
    """A model's name in cache keys: a registry name as it is, a local folder or file by its name
    (``steer-lens finetune`` folders carry a hash of their settings), never an absolute path."""
    s = str(spec).rstrip("/")
    return Path(s).name if ("/" in s or Path(s).exists()) and not _is_hub_id(s) else s


def _is_hub_id(s: str) -> bool:
    """``org/name`` as the Hugging Face cache names a model (not a path that exists here)."""
    return s.count("/") == 1 and not Path(s).exists() and not s.startswith((".", "/", "~"))


def dataset_content_hash(ds: MCDataset) -> str:
    """SHA-1 (10 hex) of every item of every split: a dataset given by path is keyed by its content."""
    h = hashlib.sha1()
    for split in sorted(ds.splits):
        for it in ds.splits[split]:
            h.update(json.dumps([split, it.id, it.question, list(it.choices), it.answer], default=str).encode())
    return h.hexdigest()[:10]


def dataset_key(name_or_path, ds: MCDataset) -> str:
    """A bundled dataset by its name; any other by its folder/file name and content hash, so rows of a
    user's dataset stay inside the cache and are never reused after the data changes."""
    if isinstance(name_or_path, str) and name_or_path in list_datasets():
        return name_or_path
    return f"{Path(str(name_or_path)).stem}-{dataset_content_hash(ds)}"


class RowCache:
    """Folders of rows under ``root``, one per config (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, config: dict) -> Path:
        cfg = {"format": FORMAT, **config}
        return self.root / config_key(cfg)

    def _check_folder(self, folder: Path, config: dict) -> None:
        path = folder / "config.json"
        if path.exists():
            found = json.loads(path.read_text())
            if found != {"format": FORMAT, **config}:
                raise CacheMismatch(
                    f"cache folder {folder} holds rows of another configuration ({_diff(found, config)}); "
                    "they are not reused. Pass another --cache, or remove that folder to recompute.")

    def path(self, config: dict, dataset: str, method: str) -> Path:
        return self.folder(config) / f"{dataset}__{method}.json"

    def load(self, config: dict, dataset: str, method: str) -> dict | None:
        """The cached row, None if absent; ``CacheMismatch`` if it belongs to another configuration."""
        folder = self.folder(config)
        path = folder / f"{dataset}__{method}.json"
        if not path.exists():
            return None
        self._check_folder(folder, config)
        row = json.loads(path.read_text())
        if row.get("cache_key") != folder.name:
            raise CacheMismatch(
                f"{path} was written under {'cache key ' + repr(row['cache_key']) if row.get('cache_key') else 'no cache key (another cache layout)'}"
                f", not this run's {folder.name!r} (rule set and models); it is not reused. Remove it to "
                "recompute, or run with the rules it was made under.")
        return row

    def save(self, config: dict, dataset: str, method: str, row: dict) -> dict:
        folder = self.folder(config)
        self._check_folder(folder, config)
        if not (folder / "config.json").exists():
            write_json(folder / "config.json", {"format": FORMAT, **config})
        row = {**row, "cache_key": folder.name}
        write_json(folder / f"{dataset}__{method}.json", row)
        return row

    def rows(self, config: dict) -> list[dict]:
        """Every row in ``config``'s folder (checked)."""
        folder = self.folder(config)
        if not folder.is_dir():
            return []
        self._check_folder(folder, config)
        out = []
        for path in sorted(folder.glob("*__*.json")):
            dataset, method = path.stem.split("__", 1)
            out.append(self.load(config, dataset, method))
        return out


def _diff(found: dict, want: dict) -> str:
    want = {"format": FORMAT, **want}
    keys = sorted(k for k in set(found) | set(want) if found.get(k) != want.get(k))
    return "; ".join(f"{k}: cached {found.get(k)!r}, this run {want.get(k)!r}" for k in keys[:4]) or "same"


__all__ = ["CacheMismatch", "RowCache", "config_key", "dataset_content_hash", "dataset_key", "model_id"]
