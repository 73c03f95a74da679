"""The optional compiled build of the page-table code (``make fast``), and its fallback.

The genpt algorithms run once per simulated transaction, as Python generators; under
CPython their generator frames cost more than anything they compute. ``make fast``
compiles the hot modules with mypyc (the same source, no annotations added for
speed) into ``build/fast/<interpreter>/``; importing ``iommusim.tables`` then puts that
directory first on the package's search path, so the compiled modules replace their
sources and every other module is imported from source as always.

The pure-Python package is the fallback, chosen automatically whenever the compiled
build cannot be trusted: it was never built (a machine without a C compiler never
needs one), it was built for another interpreter, or any ``tables`` source changed
since it was built (a content hash per file, checked at import: a stale build is never
run). ``IOMMUSIM_TABLES`` overrides the choice: ``pure`` never uses the build,
``compiled`` requires it (an ImportError saying why when it is missing or stale),
``auto`` (the default) uses it when it is there and fresh. ``active()`` says which one
this process runs.

What is compiled (``COMPILED``) and what is not, and why: classes that other code
subclasses stay interpreted, because a mypyc class cannot be subclassed from Python --
``SyncTableApi`` (``api``) and the drivers' ``Driver``, ``LegacyTable`` (subclassed by
tests), ``DirectExecutor`` (``executor``, subclassed by tests), ``Memory`` and
``PageAllocator`` (``memory``, subclassed by ``hwmodels``) and ``Gather`` (subclassed by
the old drivers' ``IotlbGather``). ``pagetable`` (the synchronous wrapper), ``errors``,
``prot`` (an enum), ``transactions`` (constants) and ``demo`` gain nothing, nor do
``features``, ``fixes`` and ``init``, which run once per table and check their input
(compiled, a value of the wrong type would be a TypeError, not the ValueError naming
the switch or feature that callers and tests expect). The
io-pgtable drivers stay interpreted: they subclass ``Driver``. Compiled and pure
modules call each other freely; results are the same either way (the tests run on
both).

``make fast`` installs the ``[fast]`` extra (mypy, whose mypyc does the compiling;
a C compiler and the Python headers are needed too) and calls ``main(["build"])``;
``main(["clean"])`` removes the build, ``main(["status"])`` prints what ``active()``
reports (``make fast-status``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ENV = "IOMMUSIM_TABLES"
MODES = ("auto", "pure", "compiled")

COMPILED: tuple[str, ...] = (
    "common",
    "core",
    "dirty",
    "iter",
    "log2",
    "map",
    "pages",
    "top",
    "unmap",
    "walk",
    "work",
    "formats/base",
    "formats/amdv1",
    "formats/amdv1_mock",
    "formats/armv8",
    "formats/riscv64",
    "formats/vtdss",
    "formats/x86_64",
)
"""The modules ``make fast`` compiles, relative to ``tables/`` without ``.py``."""

SOURCE = Path(__file__).resolve().parent
"""The ``tables`` source directory."""

STAMP = "stamp.json"


def build_dir() -> Path:
    """Where the build for this interpreter lives: ``build/fast/<cache tag>`` beside
    the package folders of a source checkout (an installed wheel has none)."""
    return SOURCE.parent / "build" / "fast" / sys.implementation.cache_tag


def source_hashes() -> dict[str, str]:
    """A content hash of every ``tables`` source file, by path relative to it: the
    build is trusted only while all of them are what it was built from."""
    return {
        str(path.relative_to(SOURCE)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(SOURCE.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _stale_reason() -> str | None:
    """None when the build can be used, else why not (a sentence)."""
    stamp = build_dir() / STAMP
    if not stamp.exists():
        return f"no compiled build in {build_dir()} (make fast builds one)"
    try:
        built = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return f"unreadable {stamp}"
    if built.get("python") != sys.version:
        return f"built for Python {built.get('python')}, this is {sys.version}"
    now = source_hashes()
    changed = sorted(p for p in now.keys() | built.get("sources", {}).keys()
                     if now.get(p) != built["sources"].get(p))
    if changed:
        return f"sources changed since the build: {', '.join(changed[:5])} (make fast again)"
    return None


def _decide() -> tuple[bool, str]:
    mode = os.environ.get(ENV, "auto") or "auto"
    if mode not in MODES:
        raise ImportError(f"{ENV}={mode!r}: must be one of {', '.join(MODES)}")
    if mode == "pure":
        return False, f"pure Python ({ENV}=pure)"
    reason = _stale_reason()
    if reason is None:
        return True, f"compiled ({build_dir()})"
    if mode == "compiled":
        raise ImportError(f"{ENV}=compiled, but {reason}")
    return False, f"pure Python: {reason}"


_USE, _WHY = _decide()


def active() -> str:
    """Which page-table code this process runs, and why (one line)."""
    return _WHY


def search_path(path: list[str], package: str) -> list[str]:
    """The ``__path__`` of ``iommusim.tables`` (``package`` "") or of its ``formats``
    subpackage: the compiled build's directory first when it is used."""
    if not _USE:
        return path
    return [str(build_dir() / "iommusim" / "tables" / package), *path]


# --- building (make fast) --------------------------------------------------------------
SETUP = """\
from setuptools import setup
from mypyc.build import mypycify

setup(
    name="iommusim-tables-compiled",
    ext_modules=mypycify(
        ["--follow-imports=silent", "--ignore-missing-imports", *{paths!r}],
        opt_level="3",
        group_name="iommusim.tables._native",
    ),
)
"""


def build() -> Path:
    """Compile ``COMPILED`` with mypyc into ``build_dir()``; returns that directory.

    The sources are copied under an ``iommusim/tables`` package of a scratch directory
    (mypyc names modules after their package path), compiled there, and only the
    extension modules are kept: the build directory never holds a copy of a source.
    """
    hashes = source_hashes()
    out = build_dir()
    with tempfile.TemporaryDirectory(prefix="iommusim-fast-") as scratch:
        stage = Path(scratch)
        (stage / "iommusim").mkdir()
        (stage / "iommusim" / "__init__.py").write_text("")
        shutil.copytree(SOURCE, stage / "iommusim" / "tables",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        paths = [f"iommusim/tables/{m}.py" for m in COMPILED]
        (stage / "setup.py").write_text(SETUP.format(paths=paths))
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=stage,
                       check=True)
        clean()
        for lib in (stage / "iommusim").rglob("*.so"):
            target = out / lib.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, target)
    (out / STAMP).write_text(json.dumps(
        {"python": sys.version, "modules": list(COMPILED), "sources": hashes}, indent=1))
    return out


def clean() -> None:
    """Remove the build for this interpreter (the pure package is used again)."""
    shutil.rmtree(build_dir(), ignore_errors=True)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "build":
        print(f"compiled the page-table code into {build()}")
    elif command == "clean":
        clean()
        print(f"removed {build_dir()}")
    elif command != "status":
        print(f"unknown command {command!r}: build, clean or status", file=sys.stderr)
        return 2
    print(f"iommusim.tables: {_decide()[1]}")  # decided again: build/clean just ran
    return 0
