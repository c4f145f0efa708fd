"""The committed Markdown documents link to files and sections that exist.

Reports move (the session journal left the README for ``results/JOURNAL.md``) and a relative link
that silently breaks sends a reader nowhere; this walks every committed ``.md`` outside ``.venv``.
"""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    """Every ``.md`` under the project root, not descending into the environment or git folders."""
    skip = {".venv", ".git", "node_modules", ".pytest_cache"}
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        found += [Path(folder) / f for f in files if f.endswith(".md")]
    return sorted(found)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", path.read_text(), flags=re.M)}


def broken_links(path: Path) -> list[str]:
    out = []
    for m in LINK.finditer(path.read_text()):
        target, _, anchor = m.group(1).partition("#")
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        dest = (path.parent / target) if target else path
        if not dest.exists():
            out.append(f"{m.group(1)} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{m.group(1)} (no heading with that anchor)")
    return out


def test_slug_follows_github():
    assert slug("Results (honest)") == "results-honest"
    assert slug("GPU and bf16: other models and larger ones") == "gpu-and-bf16-other-models-and-larger-ones"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n[ok](b.md) [gone](c.md) [here](#top) [nowhere](#bottom)\n")
    (tmp_path / "b.md").write_text("text\n")
    assert broken_links(tmp_path / "a.md") == ["c.md (no such file)", "#bottom (no heading with that anchor)"]


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    assert broken_links(doc) == [], f"{doc.relative_to(ROOT)} links to missing targets"
