"""Helpers for the hardware-model tests, handed out as the ``rig`` fixture."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import pytest
import simpy

from iommusim.hwmodels.config import HardwareConfig
from iommusim.hwmodels.dma import FAULT, OK, Translation
from iommusim.hwmodels.machine import Machine

Tx = tuple[Any, ...]


def timed(env: simpy.Environment, txs: Sequence[Tx], out: list[tuple[Any, int]]):
    """An operation yielding ``txs``; appends (result, cycles until resumed) per tx."""
    for tx in txs:
        start = env.now
        result = yield tx
        out.append((result, env.now - start))
    return len(txs)


def sequence(txs: Sequence[Tx]):
    """An operation yielding ``txs``; returns the list of their results."""
    results = []
    for tx in txs:
        results.append((yield tx))
    return results


class StubTranslator:
    """Translates 4K pages from a dict after a fixed latency; unknown pages fault."""

    def __init__(self, env: simpy.Environment, pages: dict[int, int], latency: int) -> None:
        self.env = env
        self.pages = pages
        self.latency = latency
        self.calls: list[tuple[str, int, int, int, bool]] = []

    def translate(
        self, device: str, domain: int, iova: int, size: int, is_write: bool
    ) -> Generator[simpy.Event, Any, Translation]:
        self.calls.append((device, domain, iova, size, is_write))
        yield self.env.timeout(self.latency)
        page = self.pages.get(iova >> 12)
        if page is None:
            return Translation(FAULT, path="walk", reason="not_present", level=0)
        return Translation(OK, pa=page << 12 | iova & 0xFFF, path="iotlb")


class Rig:
    StubTranslator = StubTranslator
    op = staticmethod(sequence)

    @staticmethod
    def machine(seed: int = 0, trace: bool = False, **sections: Any) -> Machine:
        return Machine(HardwareConfig.model_validate(sections), seed=seed, trace=trace)

    @staticmethod
    def run(machine: Machine, steps: Sequence[tuple[int, Sequence[Tx]]]) -> list[tuple[Any, int]]:
        """Run (cpu, transactions) steps one after another; (result, cycles) per tx."""
        out: list[tuple[Any, int]] = []

        def driver():
            for cpu, txs in steps:
                yield from machine.cpus[cpu].execute(timed(machine.env, txs, out))

        machine.env.process(driver())
        machine.env.run()
        return out

    @staticmethod
    def costs(machine: Machine, txs: Sequence[Tx], cpu: int = 0) -> list[int]:
        return [cycles for _, cycles in Rig.run(machine, [(cpu, txs)])]


@pytest.fixture
def rig() -> type[Rig]:
    return Rig
