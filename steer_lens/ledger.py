"""The test ledger: one line per scoring of a ``test`` or ``confirm`` split, from any entry point.

``steer_lens.evaluate.evaluate`` calls ``record`` whenever it scores a dataset's ``test`` or
``confirm`` split (given as a dataset and split, or as the items of such a split loaded with
``load_dataset``): one JSON line per evaluate call, appended atomically to ``results/ledger.jsonl``
(or to the file named by the environment variable ``STEER_LENS_LEDGER``). A line holds the date,
dataset, split, the split's content hash, the number of items scored, the method, the rule-set
hash and the model. The method and rule set come from the caller::

    with ledger.scoring(method="caa", rule_set="9645f4ecb5"):
        evaluate(model, dataset, split="test", ...)

Without ``scoring`` the line says method and rule set "unspecified". ``steer_lens.sweep`` records its test
passes the same way; the calibration baseline, which runs no model on the split (its answers are the
unsteered margins plus a bias), records its own line with ``source="calibration"``.

``confirm`` splits hold fresh items for confirming a result chosen elsewhere; ``evaluate`` refuses
to score them outside ``locked_run(rule_set, preregistration)``, which names the rule-set hash
and checks that the preregistration file is committed in git (and unchanged since).

``summary()`` counts, per dataset and split, the distinct rule sets that scored it: a split scored
under more than one is exploratory (its numbers informed a later choice). ``backfill`` adds lines
for the row caches committed before the ledger existed (``steer_lens.ledger_backfill``). Command line::

    python -m steer_lens.ledger summary
    python -m steer_lens.ledger backfill [--dry-run]

Under pytest (``PYTEST_CURRENT_TEST`` set) without ``STEER_LENS_LEDGER``, lines go to a file in
the temporary folder instead of the committed ledger, so test runs never touch it.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import datetime as _dt
import fcntl
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import SCORED_SPLITS, Item

ENV = "STEER_LENS_LEDGER"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = ROOT / "results" / "ledger.jsonl"
UNSPECIFIED = "unspecified"
FIELDS = ("date", "dataset", "split", "split_hash", "n", "method", "rule_set", "model", "source")


class ConfirmLockedError(RuntimeError):
    """A confirm split was to be scored outside a locked run."""


@dataclass(frozen=True)
class Scoring:
    method: str
    rule_set: str


@dataclass(frozen=True)
class Lock:
    rule_set: str
    preregistration: str
    commit: str


_scoring: contextvars.ContextVar[Scoring | None] = contextvars.ContextVar("steer_lens_scoring", default=None)
_lock: contextvars.ContextVar[Lock | None] = contextvars.ContextVar("steer_lens_lock", default=None)


def ledger_path() -> Path:
    """``$STEER_LENS_LEDGER`` if set; under pytest a temporary file; else results/ledger.jsonl."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    if os.environ.get("PYTEST_CURRENT_TEST"):
        return Path(tempfile.gettempdir()) / f"steer_lens_ledger_pytest_{os.getuid()}.jsonl"
    return DEFAULT_PATH


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        example = "method=\"caa\"" if what == "method" else "rule_set=<the rule set's hash, e.g. a config-hash folder name>"
        raise ValueError(f"{what} must be a non-empty one-line string, got {value!r}. Fix: pass {example}.")
    return value.strip()


@contextlib.contextmanager
def scoring(method: str, rule_set: str | None = None) -> Iterator[Scoring]:
    """Within this block, ledger lines name ``method`` and ``rule_set`` (the hash of the rules
    that chose the method's settings). Inside ``locked_run`` the rule set defaults to the lock's
    and may not differ from it."""
    lock = _lock.get()
    rs = _name(rule_set, "rule_set") if rule_set is not None else (lock.rule_set if lock else UNSPECIFIED)
    if lock and rs != lock.rule_set:
        raise ValueError(f"scoring(rule_set={rs!r}) inside locked_run({lock.rule_set!r}): a locked "
                         "run scores under the rule set it names. Fix: leave rule_set out or pass "
                         "the lock's.")
    token = _scoring.set(Scoring(_name(method, "method"), rs))
    try:
        yield _scoring.get()
    finally:
        _scoring.reset(token)


def git_commit_of(path: Path) -> str | None:
    """The last commit touching ``path`` in its git repository (None when untracked / no git)."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%H", "--", path.name], cwd=path.parent,
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


def git_dirty(path: Path) -> bool:
    """Whether ``path`` differs from its committed version (staged or not)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", path.name], cwd=path.parent,
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return True
    return bool(out)


@contextlib.contextmanager
def locked_run(rule_set: str, preregistration: str | os.PathLike) -> Iterator[Lock]:
    """The only place a ``confirm`` split may be scored. ``rule_set`` names the frozen rules
    (e.g. the config hash); ``preregistration`` is a file, committed in git before the run and
    unchanged since, that says what will be scored and what counts as confirmed."""
    rs = _name(rule_set, "rule_set")
    path = Path(preregistration).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"preregistration {str(preregistration)!r} does not exist. Fix: write "
                                "what will be scored and what counts as confirmed, commit it, then run.")
    commit = git_commit_of(path)
    if not commit:
        raise ConfirmLockedError(f"preregistration {str(preregistration)!r} is not committed in git "
                                 "(`git log -1 -- <path>` is empty). Fix: `git add` and `git commit` "
                                 "it before the run.")
    if git_dirty(path):
        raise ConfirmLockedError(f"preregistration {str(preregistration)!r} has changes not committed "
                                 f"since {commit[:10]}. Fix: commit them (or restore the committed "
                                 "version) before the run.")
    if _lock.get() is not None:
        raise ConfirmLockedError(f"locked_run({rs!r}) inside locked_run({_lock.get().rule_set!r}). "
                                 "Fix: one locked run at a time.")
    token = _lock.set(Lock(rs, str(path), commit))
    try:
        yield _lock.get()
    finally:
        _lock.reset(token)


def current_lock() -> Lock | None:
    return _lock.get()


def check_allowed(dataset: str, split: str) -> None:
    """Raise ConfirmLockedError when ``split`` is "confirm" and no locked run is active."""
    if split == "confirm" and _lock.get() is None:
        raise ConfirmLockedError(
            f"refusing to score the confirm split of {dataset!r} outside a locked run: confirm "
            "items are scored once, under rules fixed in advance. Fix: commit a preregistration "
            "file, then `with steer_lens.ledger.locked_run(rule_set_hash, 'path/to/prereg.md'): "
            "evaluate(..., split='confirm')`; for exploration use the validation or test split.")


def _append(path: Path, line: dict) -> None:
    """Append one JSON line atomically: one write under an exclusive lock, then fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size:  # a torn last line (no newline) from a crashed writer: start on a new line
                with open(path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        data = b"\n" + data
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to the ledger {path}: {written} of {len(data)} bytes")
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def record(dataset: str, split: str, split_hash: str, *, n: int, model: str, source: str = "evaluate",
           method: str | None = None, rule_set: str | None = None, date: str | None = None,
           path: Path | None = None, **extra: Any) -> dict:
    """Append one ledger line and return it. Method and rule set default to the active
    ``scoring`` block (else "unspecified"); inside ``locked_run`` the line names the lock."""
    sc, lock = _scoring.get(), _lock.get()
    line = {"date": date or _now(), "dataset": dataset, "split": split, "split_hash": split_hash,
            "n": int(n), "method": method or (sc.method if sc else UNSPECIFIED),
            "rule_set": rule_set or (sc.rule_set if sc else (lock.rule_set if lock else UNSPECIFIED)),
            "model": model, "source": source}
    if lock is not None and not source.startswith("backfill"):
        line.update(locked=True, preregistration=_relative(Path(lock.preregistration)),
                    preregistration_commit=lock.commit)
    line.update(extra)
    _append(path or ledger_path(), line)
    return line


def record_evaluation(dataset: str, split: str, split_hash: str, items: Sequence[Item], model) -> dict | None:
    """What evaluate() calls after scoring: a line for test/confirm splits, nothing otherwise."""
    if split not in SCORED_SPLITS:
        return None
    name = str(getattr(getattr(model, "cfg", None), "model_name", None) or type(model).__name__)
    return record(dataset, split, split_hash, n=len(items), model=name)


def _relative(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


# ----------------------------------------------------------------------------- reading
def read(path: Path | None = None) -> list[dict]:
    """Every ledger line (an absent ledger is empty). A malformed line raises, naming it."""
    p = Path(path) if path else ledger_path()
    if not p.exists():
        return []
    out = []
    for i, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}, line {i}: malformed ledger line ({e.msg}). Fix: the ledger is "
                             "append-only JSON lines; restore the line from git.") from None
        missing = [k for k in ("dataset", "split", "rule_set") if k not in line]
        if missing:
            raise ValueError(f"{p}, line {i}: ledger line lacks {missing}. Fix: restore it from git.")
        out.append(line)
    return out


def summary(path: Path | None = None) -> dict[tuple[str, str], dict]:
    """Per (dataset, split): lines, distinct rule sets (``rule_sets``, sorted), distinct content
    hashes, methods, and ``status`` "exploratory" when more than one rule set scored it (else
    "single rule set"). The "unspecified" rule set counts as one of its own."""
    out: dict[tuple[str, str], dict] = {}
    for line in read(path):
        s = out.setdefault((line["dataset"], line["split"]),
                           {"lines": 0, "rule_sets": set(), "split_hashes": set(), "methods": set()})
        s["lines"] += 1
        s["rule_sets"].add(line["rule_set"])
        s["split_hashes"].add(line.get("split_hash"))
        s["methods"].add(line.get("method", UNSPECIFIED))
    for s in out.values():
        s["rule_sets"] = sorted(s["rule_sets"])
        s["split_hashes"] = sorted(h for h in s["split_hashes"] if h)
        s["methods"] = sorted(s["methods"])
        s["n_rule_sets"] = len(s["rule_sets"])
        s["status"] = "exploratory" if s["n_rule_sets"] > 1 else "single rule set"
    return dict(sorted(out.items()))


def format_summary(summ: dict[tuple[str, str], dict]) -> str:
    rows = ["| dataset | split | lines | rule sets | methods | status |", "|---|---|---|---|---|---|"]
    for (ds, split), s in summ.items():
        rows.append(f"| {ds} | {split} | {s['lines']} | {s['n_rule_sets']} | {len(s['methods'])} "
                    f"| {s['status']} |")
    return "\n".join(rows)


def split_section(datasets: Iterable[str], split: str = "test", path: Path | None = None) -> str:
    """A report's section: per dataset, how many rule sets have scored its ``split`` (from the ledger) and
    whether that makes the split exploratory. Datasets the ledger has no line for are named as such."""
    summ = summary(path)
    rows = [f"## The {split} splits in the ledger", "",
            f"How many rule sets have scored each {split} split (`python -m steer_lens.ledger summary`); a split "
            "scored under more than one is exploratory: its numbers informed a later choice.", "",
            "| dataset | rule sets | scorings | status |", "|---|---|---|---|"]
    for d in sorted(set(datasets)):
        s = summ.get((d, split))
        rows.append(f"| {d} | {s['n_rule_sets']} | {s['lines']} | {s['status']} |" if s
                    else f"| {d} | 0 | 0 | no line in the ledger |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m steer_lens.ledger", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backfill", help="add lines for the committed row caches")
    b.add_argument("--dry-run", action="store_true", help="print the lines, append nothing")
    b.add_argument("--ref", default="HEAD", help="git commit whose caches to read (default HEAD); "
                   "'worktree' reads the working tree")
    sub.add_parser("summary", help="distinct rule sets per dataset and split")
    args = ap.parse_args(argv)
    if args.cmd == "backfill":
        from .ledger_backfill import backfill

        lines = backfill(dry_run=args.dry_run, ref=None if args.ref == "worktree" else args.ref)
        for line in lines if args.dry_run else []:
            print(json.dumps(line))
        print(f"{'would add' if args.dry_run else 'added'} {len(lines)} line(s) to {ledger_path()}")
    else:
        print(format_summary(summary()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
