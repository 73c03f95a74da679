"""The memory system: line state, costs, flush, eviction policies, the write buffer."""

from __future__ import annotations

import math
import random

from iommusim.hwmodels.memsys import BOOT_CPU
from iommusim.tables.memory import PAGE_SIZE, POISON
from iommusim.tables.transactions import (
    ALLOC_TABLE,
    CAUSE_LEAF,
    CMPXCHG,
    FLUSH,
    FLUSH_WRITE_BUFFER,
    FREE_TABLE,
    LOAD,
    STORE,
)

A = 0x10_0000  # a line-aligned address
LINE = 64


def test_load_miss_then_hit(rig):
    m = rig.machine()
    m.memory.cpu[A] = 7
    assert rig.run(m, [(0, [(LOAD, A), (LOAD, A + 8)])]) == [(7, 250), (0, 4)]
    assert (m.memory.hits, m.memory.misses, m.memory.loads) == (1, 1, 2)


def test_load_misses_when_another_cpu_wrote_the_line(rig):
    m = rig.machine()
    out = rig.run(m, [(0, [(LOAD, A)]), (1, [(STORE, A, 5)]), (0, [(LOAD, A), (LOAD, A)])])
    assert out == [(0, 250), (None, 4), (5, 250), (5, 4)]
    assert m.memory.dirty == {A: 1}


def test_cmpxchg_local_remote_and_uncached(rig):
    m = rig.machine()
    out = rig.run(
        m,
        [
            (0, [(CMPXCHG, A, 0, 1)]),  # in no cache: miss + local
            (0, [(CMPXCHG, A, 1, 2)]),  # held by cpu0 alone: local
            (1, [(CMPXCHG, A, 9, 3)]),  # held by cpu0: remote; fails
            (1, [(CMPXCHG, A, 2, 3)]),  # now held by cpu1 alone: local
        ],
    )
    assert out == [(0, 270), (1, 20), (2, 125), (2, 20)]
    assert m.memory.cpu[A] == 3
    assert m.memory.dirty == {A: 1}
    assert m.memory.cmpxchg_remote == 1


def test_flush_of_three_dirty_lines(rig):
    m = rig.machine()
    stores = [(STORE, A + i * LINE, i + 1) for i in range(3)]
    out = rig.run(m, [(0, [*stores, (FLUSH, A, 3 * LINE, CAUSE_LEAF), (LOAD, A)])])
    # mfence 35 + clflush 260 + 2 x clflushopt 25 + mfence 35; the flushed line misses
    assert [c for _, c in out] == [4, 4, 4, 380, 250]
    assert [m.memory.hw_load(A + i * LINE) for i in range(3)] == [1, 2, 3]
    assert m.memory.dirty == {}
    assert (m.memory.flushes, m.memory.flushed_lines, m.memory.written_back_by_flush) == (1, 3, 3)
    assert m.cpus[0].records[0].flush_lines == {CAUSE_LEAF: 3}


def test_flush_counts_every_overlapped_line_but_writes_back_only_dirty_ones(rig):
    m = rig.machine()
    out = rig.run(m, [(0, [(STORE, A, 1), (FLUSH, A + 8, LINE, CAUSE_LEAF)])])
    assert out[1] == (None, 35 + 260 + 25 + 35)  # two lines overlapped
    assert (m.memory.flushed_lines, m.memory.written_back_by_flush) == (2, 1)


def test_empty_flush_costs_its_fences(rig):
    m = rig.machine()
    assert rig.costs(m, [(FLUSH, A, 0, CAUSE_LEAF), (FLUSH, A + 8, 0, CAUSE_LEAF)]) == [70, 330]


def test_store_without_flush_is_never_visible_under_no_eviction(rig):
    m = rig.machine()
    rig.run(m, [(0, [(STORE, A, 42)])])
    m.env.run(until=10**7)
    assert m.memory.hw_load(A) == 0
    assert m.memory.load(A) == 42
    rig.run(m, [(0, [(FLUSH, A, 8, CAUSE_LEAF)])])
    assert m.memory.hw_load(A) == 42


def test_write_buffer_hides_a_flushed_line_until_it_drains(rig):
    m = rig.machine(iommu={"write_buffer": {"enabled": True, "drain": 1500}})
    m.env.process(m.cpus[0].execute(rig.op([(STORE, A, 42), (FLUSH, A, 8, CAUSE_LEAF)])))
    m.env.run(until=1504)  # the flush wrote the line back at cycle 4
    assert m.memory.hw_load(A) == 0
    assert m.write_buffer.is_pending(A)
    m.env.run(until=1505)
    assert m.memory.hw_load(A) == 42
    assert m.write_buffer.stats() == {
        "lines_buffered": 1, "lines_drained": 1, "lines_flushed": 0, "flushes": 0, "pending": 0
    }


def test_write_buffer_flush_command_makes_lines_visible_when_it_completes(rig):
    m = rig.machine(iommu={"write_buffer": {"enabled": True, "drain": 10**6}})
    txs = [(STORE, A, 42), (FLUSH, A, 8, CAUSE_LEAF), (FLUSH_WRITE_BUFFER,)]
    m.env.process(m.cpus[0].execute(rig.op(txs)))
    m.env.run(until=334 + 1500)  # issued at 334; the queue works on it for 1500
    assert m.memory.hw_load(A) == 0
    m.env.run(until=334 + 1501)
    assert m.memory.hw_load(A) == 42
    assert m.cpus[0].records[0].end == 334 + 1500
    assert m.write_buffer.lines_flushed == 1


def test_write_buffer_keeps_the_line_as_it_was_written_back(rig):
    m = rig.machine(iommu={"write_buffer": {"enabled": True, "drain": 100}})
    rig.run(m, [(0, [(STORE, A, 1), (FLUSH, A, 8, CAUSE_LEAF), (STORE, A, 2)])])
    assert m.memory.hw_load(A) == 1
    assert m.memory.load(A) == 2


def test_random_eviction_eventually_writes_the_line_back(rig):
    rate = 0.001
    m = rig.machine(trace=True, cache={"eviction": "random", "eviction_rate": rate})
    rig.run(m, [(0, [(STORE, A, 42)])])
    expected = 1 + int(math.log(1.0 - random.Random("0/cache").random()) / math.log1p(-rate))
    assert m.memory.hw_load(A) == 42
    [event] = [r for r in m.tracer.records if r.event == "write_back"]
    assert (event.cycle, event.fields) == (expected, {"line": A, "writer": 0, "by": "evict"})
    assert m.memory.written_back_by_eviction == 1
    assert m.memory.dirty == {}


def test_random_eviction_of_a_flushed_line_does_nothing(rig):
    m = rig.machine(cache={"eviction": "random", "eviction_rate": 0.001})
    rig.run(m, [(0, [(STORE, A, 42), (FLUSH, A, 8, CAUSE_LEAF), (STORE, A + 8, 1)])])
    # the second store dirtied the line again after its flush: one eviction, not two
    assert (m.memory.written_back_by_flush, m.memory.written_back_by_eviction) == (1, 1)


def test_capacity_eviction_is_least_recently_used_first(rig):
    m = rig.machine(cache={"eviction": "capacity", "capacity_lines": 2})
    b, c, d = A + LINE, A + 2 * LINE, A + 3 * LINE
    rig.run(m, [(0, [(STORE, A, 1), (STORE, b, 2), (LOAD, A), (STORE, c, 3)])])
    assert (m.memory.hw_load(A), m.memory.hw_load(b)) == (0, 2)
    assert list(m.memory.dirty) == [A, c]
    rig.run(m, [(0, [(STORE, d, 4)])])
    assert m.memory.hw_load(A) == 1
    assert list(m.memory.dirty) == [c, d]
    assert m.memory.written_back_by_eviction == 2
    out = rig.run(m, [(0, [(LOAD, b)])])
    assert out == [(2, 250)]  # an evicted line left every cache


def test_direct_executor_set_up_leaves_consistent_line_state(rig):
    m = rig.machine()

    def setup():
        pa = yield (ALLOC_TABLE, 12)
        yield (STORE, pa, 5)
        yield (FLUSH, pa, 8, CAUSE_LEAF)
        yield (STORE, pa + LINE, 6)
        return pa

    pa = m.run_direct(setup())
    assert m.memory.dirty[pa + LINE] == BOOT_CPU
    assert pa not in m.memory.dirty
    assert len(m.memory.dirty) == PAGE_SIZE // LINE - 1
    assert (m.memory.hw_load(pa), m.memory.hw_load(pa + LINE)) == (5, 0)
    # the boot CPU is "another CPU" for every core
    out = rig.run(m, [(0, [(LOAD, pa + LINE), (CMPXCHG, pa + 2 * LINE, 0, 1), (LOAD, pa)])])
    assert out == [(6, 250), (0, 125), (5, 250)]


def test_alloc_zeroes_the_page_dirty_in_the_allocating_cpu(rig):
    m = rig.machine()
    out = rig.run(m, [(1, [(ALLOC_TABLE, 12)])])
    pa, cycles = out[0]
    assert cycles == 400 + (PAGE_SIZE // LINE) * 4
    assert set(m.memory.dirty.values()) == {1}
    assert len(m.memory.dirty) == PAGE_SIZE // LINE
    assert rig.run(m, [(1, [(LOAD, pa)]), (0, [(LOAD, pa)])]) == [(0, 4), (0, 250)]


def test_free_poisons_both_views_and_drops_pending_write_backs(rig):
    m = rig.machine(iommu={"write_buffer": {"enabled": True, "drain": 1000}})
    [pa] = m.run_direct(rig.op([(ALLOC_TABLE, 12)]))
    out = rig.run(m, [(0, [(STORE, pa, 7), (FLUSH, pa, 8, CAUSE_LEAF), (FREE_TABLE, pa)])])
    assert out[2] == (None, 200)
    m.env.run(until=10**5)
    assert m.memory.hw_load(pa) == POISON == m.memory.load(pa)
    assert not any(line in m.memory.dirty for line in range(pa, pa + PAGE_SIZE, LINE))
    assert m.write_buffer.pending == 0
