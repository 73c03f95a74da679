"""Helpers for the tests of the command itself: what it writes, what it refuses.

Every test runs in its own temporary working directory. ``cli(*args)`` runs the command
in-process and returns a ``Result`` (exit code, stdout, stderr); ``command(*args)`` runs
it as a child process (for pipes, signals and concurrent runs). ``BASE`` is a scenario
that runs in milliseconds and whose expectation fails (exit 1), so an exit code tells
whether it ran.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iommusim import cli as cli_module

BASE = """\
name: base
hardware: vtd-incoherent
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
cpus:
  - name: cpu0
    ops:
      - map: {iova: 0x40000000, pa: 0x100000000, size: 4K}
      - signal: mapped
devices:
  - name: nic0
    dma:
      - {after: mapped, iova: 0x40000000, size: 64, access: write}
run: {seeds: 1}
expect: {dma.faults: "> 0"}
"""


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def one_message(self) -> str:
        """The one problem of an exit-2 run (its header and the problem line)."""
        assert self.rc == 2, (self.rc, self.out, self.err)
        assert "Traceback" not in self.err
        head, *problems = self.err.strip().splitlines()
        assert head == "iommusim: 1 problem(s) in the input:", self.err
        assert len(problems) == 1, self.err
        return problems[0].strip()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def run(*args: Any) -> Result:
        capsys.readouterr()
        try:
            rc = cli_module.main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            rc = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(rc, captured.out, captured.err)

    return run


def command_line(*args: Any) -> list[str]:
    return [sys.executable, "-m", "iommusim", *map(str, args)]


@pytest.fixture
def command() -> Callable[..., Result]:
    def run(*args: Any, timeout: float = 120) -> Result:
        done = subprocess.run(command_line(*args), capture_output=True, text=True,
                              timeout=timeout)
        return Result(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    return path


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any simulation in this process fails the test (a refusal must come first)."""
    from iommusim.experiment import assembly

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a simulation started")

    monkeypatch.setattr(assembly, "build", refuse)
