"""The documentation as tests read it: README.md and every page of the docs site."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_text() -> str:
    """README and every docs page, one after another."""
    return "\n".join(path.read_text() for path in DOC_FILES)


def code_blocks(lang: str) -> list[str]:
    """The bodies of every fenced ``lang`` block in the documentation."""
    return re.findall(rf"```{lang}\n(.*?)```", doc_text(), flags=re.S)
