"""The tracer, and the statistics tree of a machine."""

from __future__ import annotations

from iommusim.tables.transactions import CAUSE_LEAF, FLUSH, STORE


def test_no_tracer_unless_asked(rig):
    m = rig.machine()
    rig.run(m, [(0, [(STORE, 0x1000, 1)])])
    assert m.tracer is None
    assert all(block._tracer is None for block in (m.memory, m.iotlb, m.port, *m.cpus))


def test_trace_of_a_store_and_its_flush_through_the_write_buffer(rig):
    m = rig.machine(trace=True, iommu={"write_buffer": {"enabled": True, "drain": 100}})
    m.cpus[1].start(rig.op([(STORE, 0x1008, 7), (FLUSH, 0x1008, 8, CAUSE_LEAF)]), "map")
    m.env.run()
    assert [tuple(r) for r in m.tracer.records] == [
        (0, "cpu1", "op_start", {"op": "map"}),
        (0, "cpu1", "store", {"op": "map", "cost": 4, "result": None, "pa": 0x1008, "value": 7}),
        # depth: the lines in the write buffer once this one is in (Perfetto's counter)
        (4, "cache", "write_back", {"line": 0x1000, "writer": 1, "by": "flush", "depth": 1}),
        (4, "cpu1", "flush",
         {"op": "map", "cost": 330, "result": None, "pa": 0x1008, "nbytes": 8, "cause": "leaf"}),
        (104, "iommu.write_buffer", "drain", {"line": 0x1000, "depth": 0}),
        (334, "cpu1", "op_end", {"op": "map", "result": [None, None]}),
    ]


def test_machine_statistics_are_prefixed_by_block_name(rig):
    m = rig.machine(cpu={"count": 1})
    rig.run(m, [(0, [(STORE, 0x1000, 1)])])
    stats = m.stats()
    assert stats["cache.stores"] == 1
    assert stats["cpu0.transactions"] == 1
    assert "cpu1.transactions" not in stats
    assert "iommu.write_buffer.pending" not in stats  # no write buffer configured
    prefixes = {key.split(".")[0] for key in stats}
    assert prefixes == {"cache", "dram", "allocator", "iommu", "cpu0"}
    assert all(isinstance(v, int | float) for v in stats.values())
