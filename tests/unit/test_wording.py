"""Tracked documents, code and help texts describe the software, not the history of its making.

History (which run found what, what a release changed) belongs in ``CHANGELOG.md``. Elsewhere a
reader should not meet numbered work sessions ("session 3", "sessions 4-13"), earlier rule sets
named as versions ("protocol 2", "protocol-3"), or notes about how a run was interrupted. The
bundled datasets keep their own text, and pytest's ``scope="session"`` or a "session-scoped
fixture" are ordinary uses of the word and pass.
"""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = [
    (re.compile(r"\bsessions? \d", re.I), "a numbered session"),
    (re.compile(r"\bsession[-_]?\d", re.I), "a numbered session"),
    (re.compile(r"\bthis session\b", re.I), "'this session'"),
    (re.compile(r"\bthe session's\b", re.I), "'the session's'"),
    (re.compile(r"\bsession[- ]by[- ]session\b", re.I), "'session by session'"),
    (re.compile(r"\bprotocol[ _-]?[123](?!\d)", re.I), "a rule set named as a protocol version"),
    (re.compile(r"\bthe rule of the first rows\b", re.I), "'the rule of the first rows'"),
    (re.compile(r"\bstopped at the end\b", re.I), "'stopped at the end'"),
]

# Text files a reader meets: documents, code, help texts, notebooks, build files.
SUFFIXES = {".md", ".py", ".txt", ".toml", ".cfg", ".ini", ".sh", ".ipynb", ".yml", ".yaml", ".rst"}
NAMES = {"Makefile", "run"}

# What must keep the words: the history itself, and the bundled datasets' own text.
EXEMPT_FILES = {"CHANGELOG.md", "tests/unit/test_wording.py"}
EXEMPT_PREFIXES = ("steer_lens/datasets/", "data/raw/")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return sorted(p for p in out.decode().split("\0") if p)


def checked(path: str) -> bool:
    p = Path(path)
    if path in EXEMPT_FILES or path.startswith(EXEMPT_PREFIXES):
        return False
    return p.suffix in SUFFIXES or p.name in NAMES


def offences(text: str) -> list[str]:
    """``line: what`` for every line of ``text`` that speaks of the project's making."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what in FORBIDDEN:
            if pattern.search(line):
                out.append(f"{number}: {what}: {line.strip()[:120]}")
                break
    return out


def test_patterns_catch_history_and_spare_ordinary_uses():
    bad = ["Session 13 results", "sessions 4-13 measured", "as in session-6", "the .session10.log file",
           "not done this session", "stopped at the session's end", "Results, session by session",
           "Protocol 3 rows", "the protocol-2 grid", "protocol3/README.md", "PROTOCOL2_METHODS",
           "by the rule of the first rows", "the run stopped at the end"]
    good = ['@pytest.fixture(scope="session")', "a session-scoped fixture", "requests.Session()",
            "built once per session", "steer_lens.protocol (the benchmark's rules)", "- protocol: 3",
            "protocol 30 times"]
    assert all(offences(line) for line in bad), [line for line in bad if not offences(line)]
    assert not any(offences(line) for line in good), [line for line in good if offences(line)]


def test_tracked_texts_describe_the_software():
    files = tracked_files()
    if not files:
        pytest.skip("not a git checkout")
    found = {}
    for path in filter(checked, files):
        full = ROOT / path
        if not full.is_file():  # deleted in the work tree, not yet committed
            continue
        try:
            text = full.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if hits := offences(text):
            found[path] = hits
    report = "\n".join(f"{p}:{h}" for p, hits in found.items() for h in hits)
    assert not found, ("these tracked files speak of numbered sessions or protocol versions; describe what "
                       f"the software does now and keep the history in CHANGELOG.md:\n{report}")
