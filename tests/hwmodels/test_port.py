"""The walker's port: incoherent and coherent reads, A/D updates, use-after-free, DRAM."""

from __future__ import annotations

from iommusim.tables.memory import POISON
from iommusim.tables.transactions import ALLOC_TABLE, CAUSE_LEAF, FLUSH, FREE_TABLE, STORE

A = 0x10_0000


def walk(m, body):
    """Run ``body`` (a generator using the port) as a process; returns (value, cycles)."""
    out = []

    def proc():
        start = m.env.now
        value = yield from body
        out.append((value, m.env.now - start))

    m.env.process(proc())
    m.env.run()
    return out[0]


def test_incoherent_walker_reads_dram_and_sees_stale_data(rig):
    m = rig.machine()
    rig.run(m, [(0, [(STORE, A, 5)])])
    assert walk(m, m.port.read(A)) == (0, 250)
    assert m.port.is_stale(A, 0)
    rig.run(m, [(0, [(FLUSH, A, 8, CAUSE_LEAF)])])
    assert walk(m, m.port.read(A)) == (5, 250)
    assert m.port.stats() == {
        "reads": 2, "snoops": 0, "stale_reads": 1, "freed_reads": 0, "updates": 0
    }


def test_coherent_walker_snoops_dirty_lines(rig):
    m = rig.machine(iommu={"coherent_walk": True})
    rig.run(m, [(0, [(STORE, A, 5)])])
    assert walk(m, m.port.read(A)) == (5, 120)
    rig.run(m, [(0, [(FLUSH, A, 8, CAUSE_LEAF)])])
    assert walk(m, m.port.read(A)) == (5, 250)
    assert (m.port.snoops, m.port.stale_reads) == (1, 0)


def test_update_is_atomic_and_visible_in_both_views(rig):
    m = rig.machine(iommu={"write_buffer": {"enabled": True, "drain": 1000}})
    rig.run(m, [(0, [(STORE, A, 0x1), (FLUSH, A, 8, CAUSE_LEAF)])])  # pending in the buffer
    assert walk(m, m.port.update(A, 0x1, 0x21)) == (0x1, 250)
    assert walk(m, m.port.update(A, 0x1, 0x61)) == (0x21, 250)  # lost the race: no change
    m.env.run(until=10**4)  # the buffered copy drains with the update in it
    assert m.memory.hw_load(A) == m.memory.load(A) == 0x21


def test_reads_of_freed_table_pages_are_flagged(rig):
    m = rig.machine(trace=True)
    [pa] = rig.run(m, [(0, [(ALLOC_TABLE, 12)])])[0][:1]
    assert not m.port.is_freed_table(pa)
    rig.run(m, [(0, [(FREE_TABLE, pa)])])
    assert m.port.is_freed_table(pa + 0x800)
    assert walk(m, m.port.read(pa + 8)) == (POISON, 250)
    assert m.port.freed_reads == 1
    [read] = [r for r in m.tracer.records if r.event == "read"]
    assert read.fields == {"pa": pa + 8, "value": POISON, "stale": False, "freed": True}


def test_dram_channels_make_accesses_contend(rig):
    m = rig.machine(dram={"channels": 1, "occupancy": 100})
    ends = []

    def reader():
        yield from m.port.read(A)
        ends.append(m.env.now)

    for _ in range(3):
        m.env.process(reader())
    m.env.run()
    assert ends == [250, 350, 450]
    assert m.dram.stats() == {
        "reads": 3, "writes": 0, "channel_waits": 2, "channel_wait_cycles": 300
    }
