"""Every relative link in the project's Markdown files points at a file or folder that exists, and every anchor
into a Markdown file at one of its headings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    """The tracked-tree Markdown files (README, docs, model READMEs, examples), not virtualenvs or run outputs."""
    skip = {".venv", ".venv-ci", "benchmark_results", ".git", "node_modules"}
    return sorted(p for p in ROOT.rglob("*.md") if not skip & set(p.relative_to(ROOT).parts))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of ``path``: lower case, punctuation dropped, each space a hyphen."""
    found = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"^#{1,6} ", line):
            text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip()).lower()
            found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def broken_links(path: Path) -> list[str]:
    """The relative link targets in ``path`` that do not exist (web links are not checked)."""
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part) if file_part else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    assert not broken_links(path), broken_links(path)


#: A committed figure or gallery must read on a screen without weighing the repository down.
MAX_IMAGE_BYTES = 300_000


def test_committed_images_are_at_most_300_kb():
    folders = [ROOT / name for name in ("docs", "anomalib_fewshot", "research", "examples")]
    images = [p for folder in folders for ext in ("*.png", "*.jpg") for p in folder.rglob(ext)]
    assert images
    assert not [
        f"{p.relative_to(ROOT)}: {p.stat().st_size} bytes" for p in images if p.stat().st_size > MAX_IMAGE_BYTES
    ]
