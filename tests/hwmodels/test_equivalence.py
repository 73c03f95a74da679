"""Timed cores and the direct executor agree: same transactions, same order, same memory.

Two (or three) CPUs run race-free streams under SimPy, with jitter and interrupts to
vary the interleaving. The order in which their transactions took effect (from the
trace) is replayed with the ``tables`` Interleaver on a plain ``DirectExecutor``; the
final memory (both views), the allocator and every result must be identical.
"""

from __future__ import annotations

import pytest

from iommusim.tables.executor import DirectExecutor, Interleaver
from iommusim.tables.memory import Memory
from iommusim.tables.transactions import (
    ALL_KINDS,
    ALLOC_TABLE,
    CAUSE_LEAF,
    CAUSE_TABLE_START,
    CMPXCHG,
    FENCE,
    FLUSH,
    FREE_TABLE,
    INVALIDATE_RANGE,
    LOAD,
    LOCK,
    STORE,
    UNLOCK,
    WAIT_INVALIDATION,
    WORK,
)

COUNTER = 0x3000_0000


def stream(cpu: int, rounds: int):
    mine = 0x2000_0000 + cpu * 0x10_0000
    total = 0
    for k in range(rounds):
        table = yield (ALLOC_TABLE, 12)
        yield (STORE, table + 8 * (k % 512), k + 1)
        yield (FLUSH, table, 4096, CAUSE_TABLE_START)
        yield (STORE, mine + 8 * k, k)
        value = yield (LOAD, mine + 8 * k)
        total += yield (CMPXCHG, mine + 8 * k, value, value + 100)
        yield (FLUSH, mine + 8 * k, 8, CAUSE_LEAF)
        yield (LOCK, "counter")
        count = yield (LOAD, COUNTER)
        yield (WORK, 3 + cpu)
        yield (STORE, COUNTER, count + 1)
        yield (UNLOCK, "counter")
        yield (FENCE,)
        if k % 2:
            yield (FREE_TABLE, table)
        yield (INVALIDATE_RANGE, 1, k << 12, 4096, False)
        yield (WAIT_INVALIDATION,)
    return total


def timed_run(rig, seed: int, cpus: int, write_buffer: bool):
    m = rig.machine(
        seed=seed,
        trace=True,
        cpu={"count": cpus, "jitter": 40, "interrupts": {"mean_interval": 3000,
                                                        "duration": 500,
                                                        "distribution": "exponential"}},
        iommu={"write_buffer": {"enabled": write_buffer, "drain": 700}},
    )
    procs = [core.start(stream(core.index, 12), "stream") for core in m.cpus]
    m.env.run()
    schedule = [
        int(r.component[3:])
        for r in m.tracer.records
        if r.component.startswith("cpu") and r.event in ALL_KINDS
    ]
    return m, [p.value for p in procs], schedule


@pytest.mark.parametrize("write_buffer", [False, True])
@pytest.mark.parametrize("cpus", [2, 3])
def test_timed_cores_match_the_direct_executor(rig, cpus, write_buffer):
    schedules = set()
    for seed in range(4):
        m, results, schedule = timed_run(rig, seed, cpus, write_buffer)
        direct = DirectExecutor(Memory(two_views=True))
        replayed = Interleaver(direct).run(
            [stream(cpu, 12) for cpu in range(cpus)], schedule=schedule
        )
        assert replayed == results
        assert m.memory.cpu == direct.memory.cpu
        assert m.memory.hw == direct.memory.hw
        assert m.memory.load(COUNTER) == 12 * cpus
        assert (m.allocator.live_pages, m.allocator._free) == (
            direct.allocator.live_pages, direct.allocator._free
        )
        schedules.add(tuple(schedule))
    assert len(schedules) == 4  # the seeds really interleaved the CPUs differently
