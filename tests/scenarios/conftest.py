"""Helpers for the end-to-end tests of the ``iommusim`` command.

Every test runs in its own temporary working directory (so a default ``results/``
lands there), and calls the command in-process through ``cli``:
``cli("run", path, "--seed", "1")`` returns a ``Result`` with the exit code and
what was printed. ``scenario(text, name=...)`` writes a scenario file; ``h`` holds
the shared scenario texts and helpers.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iommusim import cli as cli_module

# A small scenario that runs in a few milliseconds: one CPU maps a page and tells
# the device, whose one DMA then goes through.
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
run: {seeds: 2}
expect: {dma.faults: "== 0"}
"""

# A scenario whose outcome depends on the seed: jitter, interrupts, random maps,
# a random DMA stream, barriers and a device that follows a CPU. Still fast.
BUSY = """\
name: busy
hardware: vtd-incoherent
overrides:
  cpu.jitter: 30
  cpu.interrupts.mean_interval: 3000
  cpu.interrupts.duration: 2000
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
kernel:
  fixes: {flush_done_sw_bit: false}
cpus:
  - name: cpu0
    ops:
      - map: {iova: 0x40000000, pa: 0x100000000, size: 4K}
      - signal: warm
      - barrier: go
      - map_range_random: {count: 12, sizes: [4K, 2M], region: {base: 0x40000000, size: 16M}}
      - unmap_all
  - name: cpu1
    after: warm
    ops:
      - barrier: go
      - map_range_random: {count: 12, sizes: [4K], region: {base: 0x80000000, size: 4M},
                           pa_base: 0x200000000}
devices:
  - name: nic0
    follow: {cpu: cpu1, size: 64, access: write}
  - name: nic1
    stream: {after: warm, pattern: random, region: {base: 0x40000000, size: 2M},
             count: 40, size: 64, access: read, outstanding: 4}
run: {seeds: 3}
"""


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def problems(self) -> list[str]:
        """The problem lines of an exit-2 message, without the indentation."""
        lines = self.err.splitlines()
        assert lines and lines[0].startswith("iommusim: "), self.err
        return [line.strip() for line in lines[1:]]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def run(*args: str | Path) -> Result:
        capsys.readouterr()
        try:
            rc = cli_module.main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            rc = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(rc, captured.out, captured.err)

    return run


@pytest.fixture
def scenario(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write


def load_results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())


def without_timestamp(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc.pop("created")
    return doc


class Helpers:
    """What test modules share (they cannot import this conftest): ``h.BASE``..."""

    BASE = BASE
    BUSY = BUSY
    load_results = staticmethod(load_results)
    without_timestamp = staticmethod(without_timestamp)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers
