"""The optional compiled build (tables.compiled): what it may compile, and its fallback.

Building takes minutes and a C compiler, so no test builds; these check the rules that
keep the pure package the safe default and the build safe to use."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iommusim.tables import compiled

ROOT = Path(__file__).resolve().parents[2]


def _classes(path: Path) -> dict[str, list[str]]:
    """Class name -> the names of its bases, for every class defined in ``path``."""
    tree = ast.parse(path.read_text())
    return {node.name: [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
            for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def test_no_class_of_a_compiled_module_is_subclassed_outside_the_build() -> None:
    """A mypyc class cannot be subclassed from Python: every subclass of a class the
    build compiles must be compiled too (tests, hwmodels, the old drivers included)."""
    compiled_files = {compiled.SOURCE / f"{m}.py" for m in compiled.COMPILED}
    native = {name for f in compiled_files for name in _classes(f)}
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if ".venv" in path.parts or "build" in path.parts or path in compiled_files:
            continue
        for name, bases in _classes(path).items():
            hit = native.intersection(bases)
            if hit:
                offenders.append(f"{path.relative_to(ROOT)}: {name}({', '.join(hit)})")
    assert not offenders, "subclasses of compiled classes: " + "; ".join(offenders)


def test_compiled_modules_exist() -> None:
    for module in compiled.COMPILED:
        assert (compiled.SOURCE / f"{module}.py").is_file(), module


def test_without_a_build_the_pure_package_runs(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setattr(compiled, "build_dir", lambda: tmp_path / "none")
    monkeypatch.delenv(compiled.ENV, raising=False)
    use, why = compiled._decide()
    assert not use and why.startswith("pure Python: no compiled build")


def test_a_stale_build_is_never_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A build whose sources changed since is skipped (auto) or refused (compiled)."""
    monkeypatch.setattr(compiled, "build_dir", lambda: tmp_path)
    sources = compiled.source_hashes()
    stamp = {"python": sys.version, "modules": list(compiled.COMPILED), "sources": sources}
    (tmp_path / compiled.STAMP).write_text(json.dumps(stamp))
    monkeypatch.setenv(compiled.ENV, "auto")
    assert compiled._decide()[0]  # fresh: used
    stamp["sources"] = {**sources, "map.py": "0" * 64}
    (tmp_path / compiled.STAMP).write_text(json.dumps(stamp))
    use, why = compiled._decide()
    assert not use and "map.py" in why
    monkeypatch.setenv(compiled.ENV, "compiled")
    with pytest.raises(ImportError, match=r"map\.py"):
        compiled._decide()
    monkeypatch.setenv(compiled.ENV, "pure")
    assert compiled._decide() == (False, f"pure Python ({compiled.ENV}=pure)")


@pytest.mark.parametrize("mode,ok", [("pure", True), ("bogus", False)])
def test_the_choice_is_made_at_import(mode: str, ok: bool) -> None:
    """IOMMUSIM_TABLES is read when iommusim.tables is first imported."""
    code = "import iommusim.tables.compiled as c; print(c.active())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, compiled.ENV: mode})
    if ok:
        assert out.returncode == 0 and out.stdout.startswith("pure Python"), out.stderr
    else:
        assert out.returncode != 0 and f"{compiled.ENV}='bogus'" in out.stderr
