"""Every ```python block of the documentation (README.md and docs/*.md) runs as written,
and the docs site builds with no broken link."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.docs import DOC_FILES, ROOT, code_blocks

BLOCKS = code_blocks("python")


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str) -> None:
    exec(compile(code, "docs", "exec"), {"__name__": "readme_example"})


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


def test_every_docs_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.name for p in DOC_FILES[1:]]
    assert pages and all(f": {name}" in nav for name in pages)


def test_the_readme_maps_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert all(f"(docs/{p.name})" in readme for p in DOC_FILES[1:] if p.name != "index.md")


@pytest.mark.skipif(shutil.which("mkdocs", path=str(ROOT / ".venv/bin")) is None
                    and not shutil.which("mkdocs"), reason="mkdocs is not installed")
def test_the_docs_site_builds_strictly(tmp_path) -> None:
    """`make docs` in a test: strict mode fails on a broken link or a page out of the nav."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").exists()
