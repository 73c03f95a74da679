"""A run that uses every random choice in hwmodels; prints its trace and statistics.

Run as a script (``python determinism_workload.py SEED``) or through ``run(seed)``;
test_determinism compares the output of both, within one process and across two.
"""

from __future__ import annotations

import json
import sys

from iommusim.hwmodels.config import HardwareConfig
from iommusim.hwmodels.dma import OK, DmaDevice, DmaStream, Translation
from iommusim.hwmodels.machine import Machine
from iommusim.tables.transactions import (
    ALLOC_TABLE,
    CAUSE_INSTALL,
    CMPXCHG,
    FLUSH,
    FLUSH_WRITE_BUFFER,
    INVALIDATE_RANGE,
    LOAD,
    LOCK,
    STORE,
    UNLOCK,
    WAIT_INVALIDATION,
)

CONFIG = {
    "cpu": {"count": 2, "jitter": 30,
            "interrupts": {"mean_interval": 2000, "duration": 300, "distribution": "exponential"}},
    "cache": {"eviction": "random", "eviction_rate": 0.0005},
    "dram": {"channels": 2, "occupancy": 40},
    "iommu": {"write_buffer": {"enabled": True, "drain": 900},
              "iotlb": {"entries": 8, "ways": 2, "replacement": "random"}},
    "allocator": {"fail_probability": 0.2},
}


class ToyTranslator:
    """IOTLB, then a two-read "walk" through the port (enough to exercise the blocks)."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine

    def translate(self, device, domain, iova, size, is_write):
        m = self.m
        yield m.env.timeout(m.config.iommu.iotlb.hit)
        hit = m.iotlb.lookup(domain, iova)
        if hit is not None:
            return Translation(OK, pa=hit + (iova & 0xFFF), path="iotlb")
        root = yield from m.port.read(0x50_0000 + (iova >> 21) * 8)
        leaf = yield from m.port.read(0x50_1000 + (iova >> 12) % 512 * 8)
        pa = (root ^ leaf) << 12
        m.iotlb.fill(domain, iova, 12, pa)
        return Translation(OK, pa=pa + (iova & 0xFFF), path="walk")


def mapper(cpu: int):
    for k in range(15):
        table = yield (ALLOC_TABLE, 12)
        slot = 0x50_1000 + (cpu * 15 + k) % 512 * 8
        yield (LOCK, "pt")
        old = yield (LOAD, slot)
        yield (CMPXCHG, slot, old, (table or 0) >> 12)
        yield (UNLOCK, "pt")
        yield (FLUSH, slot, 8, CAUSE_INSTALL)
        yield (STORE, 0x50_0000 + k * 8, k + cpu)
        yield (INVALIDATE_RANGE, 1, k << 12, 4096, k % 3 == 0)
        if k % 4 == 0:
            yield (FLUSH_WRITE_BUFFER,)
        yield (WAIT_INVALIDATION,)
    return cpu


def run(seed: int) -> str:
    m = Machine(HardwareConfig.model_validate(CONFIG), seed=seed, trace=True)
    for core in m.cpus:
        core.start(mapper(core.index), "map")
    devs = [
        DmaDevice(m.env, f"dev{i}", domain=1, translator=ToyTranslator(m), dram=m.dram,
                  workload=DmaStream(base=0, length=1 << 16, size=64, count=40,
                                     outstanding=3, gap=50, pattern="random"),
                  seed=seed)
        for i in range(2)
    ]
    m.env.run(until=200_000)
    stats = {**m.stats(), **{f"{d.name}.{k}": v for d in devs for k, v in d.stats().items()}}
    return json.dumps(
        {
            "trace": [list(r) for r in m.tracer.records],
            "stats": list(stats.items()),
            "ops": [[r.cpu, r.label, r.start, r.end, r.result, r.flush_lines]
                    for c in m.cpus for r in c.records],
            "dma": [[r.device, r.index, r.iova, r.issue, r.end, list(r.translation)]
                    for d in devs for r in d.records],
        }
    )


if __name__ == "__main__":
    print(run(int(sys.argv[1])))
