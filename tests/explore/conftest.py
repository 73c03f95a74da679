"""Helpers for the schedule-exploration tests.

The ``run_explore`` fixture is ``explore_catalog(name, sets, **options)``: an
exploration in-process (the functions ``iommusim explore`` uses), returning its
``Report``; ``cli(*args)`` runs the command and returns the exit code and what it
printed. Tests run in a fresh temporary working directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iommusim import cli as cli_module
from iommusim.explore.search import Report, explore
from iommusim.explore.setup import configure, resolve
from iommusim.scenarios.resolve import find_scenario


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    def run(*args: Any) -> Result:
        capsys.readouterr()
        code = cli_module.main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def explore_catalog(name: str, sets: Sequence[str] = (), **options: Any) -> Report:
    """Explore a catalog scenario (or a path) with its explore defaults and ``options``
    (configure's keywords)."""
    path = find_scenario(name)
    resolved = resolve(path, list(sets))
    setup, opts = configure(resolved, **options)
    return explore(setup, opts)


@pytest.fixture
def run_explore():
    return explore_catalog
