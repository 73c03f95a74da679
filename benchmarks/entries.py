"""The benchmark entries (issue 8), each a ``prepare()`` returning the timed part.

1. CPU transactions/s: one CPU mapping and unmapping 4K pages on an incoherent VT-d.
   Beside it, the page-table code alone on the direct executor (what the table
   algorithms cost, without the machine).
2. The same with four CPUs contending for shared table levels.
3. DMA translations/s, an IOTLB-hit dominated stream.
4. DMA translations/s, a miss dominated stream (random over a large window).
5. Scale: map 1,000,000 4K pages (4 GiB of IOVA), then 1,000,000 DMA requests.
Plus IOTLB lookups/s, the structure's own hot path. The DMA entries drive one
``DmaDevice`` directly (one request in flight); ``benchmarks.commands`` has the issue-17
figures through ``iommusim run`` and ``iommusim explore``.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from pathlib import Path
from typing import Any

import simpy
import yaml

from iommusim.hwmodels.config import HardwareConfig, IotlbConfig
from iommusim.hwmodels.dma import DmaDevice, DmaStream
from iommusim.hwmodels.iotlb import Iotlb
from iommusim.hwmodels.machine import Machine
from iommusim.hwmodels.sim import SimEnvironment
from iommusim.scenarios.resolve import preset_dir
from iommusim.tables import PageTable, Prot
from iommusim.tables.transactions import WORK
from iommusim.walker import Iommu

from .common import Prepared

RW = Prot.READ | Prot.WRITE
IOVA = 0x4000_0000
PA = 0x1_0000_0000


def vtd_incoherent(lookahead: bool = True) -> tuple[Machine, PageTable]:
    """A machine from the vtd-incoherent preset with an incoherent 4-level vtdss table."""
    hw = HardwareConfig.model_validate(
        yaml.safe_load(Path(preset_dir(), "vtd-incoherent.yaml").read_text())
    )
    machine = Machine(hw, seed=1, env=SimEnvironment(lookahead=lookahead))
    pt = PageTable(
        "vtdss", vasz_lg2=48, top_level=3, features={"dma_incoherent"},
        executor=machine.executor, debug=False,
    )
    return machine, pt


def _map_unmap(core: Any, pt: PageTable, base: int, pages: int, stride: int) -> Generator:
    for i in range(pages):
        iova = base + i * stride
        yield from core.execute(pt.map_op(iova, PA + (iova - IOVA), 4096, RW), "map")
        yield from core.execute(pt.unmap_op(iova, 4096), "unmap")


def _cpus(n: int, pages: int, lookahead: bool = True) -> Prepared:
    machine, pt = vtd_incoherent(lookahead)
    # Neighbouring pages of all CPUs share every table level.
    for i in range(n):
        machine.env.process(_map_unmap(machine.cpus[i], pt, IOVA + i * 4096, pages, n * 4096))

    def run() -> int:
        machine.env.run()
        return sum(c.transactions for c in machine.cpus[:n])

    return run


def one_cpu() -> Prepared:
    """Map and unmap 4K pages, one CPU: every transaction through the cache model."""
    return _cpus(1, 3000)


def direct() -> Prepared:
    """The page-table code alone: the same 4K maps and unmaps on the direct executor
    (no timing, no cache model), counted in transactions as a CPU core counts them."""
    pt = PageTable("vtdss", vasz_lg2=48, top_level=3, features={"dma_incoherent"},
                   debug=False)
    counts = pt.executor.counts

    def run() -> int:
        before = counts.total() - counts[WORK]
        for i in range(3000):
            iova = IOVA + i * 4096
            pt.map(iova, PA + i * 4096, 4096, RW)
            pt.unmap(iova, 4096)
        return counts.total() - counts[WORK] - before  # named work is not a transaction

    return run


def four_cpus() -> Prepared:
    """Four CPUs mapping and unmapping neighbouring pages (shared table levels)."""
    return _cpus(4, 800)


def _dma(window: int, count: int, pattern: str, pa: int = PA) -> Prepared:
    machine, pt = vtd_incoherent()
    pt.map(IOVA, pa, window, RW)
    iommu = Iommu(machine, {1: "vtdss"})
    stream = DmaStream(IOVA, window, 64, count, outstanding=1, pattern=pattern)

    def run() -> int:
        DmaDevice(machine.env, "dev", domain=1, translator=iommu, dram=machine.dram,
                  workload=stream, keep_records=False)
        machine.env.run()
        return count

    return run


def dma_hits() -> Prepared:
    """64-byte DMAs sequential over 64 KiB: almost all IOTLB hits."""
    return _dma(64 << 10, 100_000, "sequential")


def dma_misses() -> Prepared:
    """64-byte DMAs at random over 64 MiB of 4K pages: almost all misses. (Before issue
    17 this mapped 1 GiB at a 1 GiB-aligned PA: one 1G page, and its DMAs all hit.)"""
    return _dma(64 << 20, 5_000, "random", PA + 4096)


def iotlb_lookups() -> Prepared:
    """Lookups on a 2048 x 4 LRU IOTLB holding 4K and 2M pages, about 90 % hits."""
    iotlb = Iotlb(IotlbConfig(entries=2048, ways=4, replacement="lru"))
    for page in range(1800):
        iotlb.fill(1, page << 12, 12, page)
    for page in range(8):
        iotlb.fill(1, (1 << 30) + (page << 21), 21, page)
    rng = random.Random(1)
    iovas = [rng.randrange(2000) << 12 for _ in range(500_000)]

    def run() -> int:
        lookup = iotlb.lookup
        for iova in iovas:
            lookup(1, iova)
        return len(iovas)

    return run


def scale(pages: int = 1_000_000, dmas: int = 1_000_000) -> dict[str, float]:
    """Map ``pages`` 4K pages in one call on a CPU core, then ``dmas`` random DMAs."""
    import resource
    import time

    start = time.perf_counter()
    machine, pt = vtd_incoherent()
    env: simpy.Environment = machine.env
    size = pages * 4096
    # PA offset by 4K from 2M alignment: the map must use 4K leaves throughout.
    mapping = machine.cpus[0].start(pt.map_op(IOVA, PA + 4096, size, RW), "map")
    env.run(until=mapping)
    mapped = time.perf_counter()
    iommu = Iommu(machine, {1: "vtdss"})
    stream = DmaStream(IOVA, size, 64, dmas, outstanding=8, pattern="random")
    DmaDevice(env, "dev", domain=1, translator=iommu, dram=machine.dram, workload=stream,
              keep_records=False)
    env.run()
    end = time.perf_counter()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "map_seconds": mapped - start,
        "dma_seconds": end - mapped,
        "total_seconds": end - start,
        "peak_rss_mib": rss_mib,
        "walks": iommu.walks,
    }
