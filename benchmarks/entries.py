"""The benchmark entries: CPU transactions per second, IOTLB lookups per second."""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import Any

from iommusim.hwmodels.config import HardwareConfig, IotlbConfig
from iommusim.hwmodels.iotlb import Iotlb
from iommusim.hwmodels.machine import Machine
from iommusim.tables.transactions import CAUSE_LEAF, CMPXCHG, FENCE, FLUSH, LOAD, STORE

from .common import Prepared

TABLE_TXS = 200_000
IOTLB_LOOKUPS = 500_000


def _table_stream(base: int, n: int) -> Generator[tuple[Any, ...], Any, int]:
    """A map-like stream: walk down (loads), install (cmpxchg), write leaves, flush."""
    done = 0
    slot = 0
    while done < n:
        for level in range(3):
            yield (LOAD, base + level * 4096 + (slot % 512) * 8)
        yield (CMPXCHG, base + 3 * 4096 + (slot % 512) * 8, 0, slot + 1)
        for i in range(4):
            yield (STORE, base + 4 * 4096 + ((slot + i) % 512) * 8, slot | 1)
        yield (FLUSH, base + 4 * 4096 + (slot % 512) * 8, 32, CAUSE_LEAF)
        yield (FENCE,)
        done += 10
        slot += 4
    return done


def cpu_transactions() -> Prepared:
    """Two cores, each running a table-like stream through the memory system."""
    machine = Machine(HardwareConfig(), seed=1)
    cores = machine.cpus[:2]
    for core in cores:
        core.start(_table_stream(0x1000_0000 * (core.index + 1), TABLE_TXS // 2), "stream")

    def run() -> int:
        machine.env.run()
        return sum(core.transactions for core in cores)

    return run


def iotlb_lookups() -> Prepared:
    """Lookups on a 2048 x 4 LRU IOTLB holding 4K and 2M pages, about 90 % hits."""
    iotlb = Iotlb(IotlbConfig(entries=2048, ways=4, replacement="lru"))
    for page in range(1800):
        iotlb.fill(1, page << 12, 12, page)
    for page in range(8):
        iotlb.fill(1, (1 << 30) + (page << 21), 21, page)
    rng = random.Random(1)
    iovas = [rng.randrange(2000) << 12 for _ in range(IOTLB_LOOKUPS)]

    def run() -> int:
        lookup = iotlb.lookup
        for iova in iovas:
            lookup(1, iova)
        return len(iovas)

    return run
