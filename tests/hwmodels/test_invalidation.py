"""The invalidation queue: order, costs, completion of waits, root registers."""

from __future__ import annotations

from iommusim.tables.transactions import (
    CHANGE_TOP,
    FLUSH_WRITE_BUFFER,
    INVALIDATE_ALL,
    INVALIDATE_RANGE,
    WAIT_INVALIDATION,
    WORK,
)


def test_wait_behind_two_invalidations(rig):
    m = rig.machine()
    m.iotlb.fill(1, 0x1000, 12, "a")
    m.walk_cache.fill(1, 1, 0, 21, 0xB000)
    txs = [(INVALIDATE_RANGE, 1, 0x1000, 0x1000, False), (INVALIDATE_ALL, 2), (WAIT_INVALIDATION,)]
    # queue: range 0-300, domain 300-600; the wait (issued at 100, submitted by 150)
    # completes at 600, then the wait descriptor's 2000
    m.env.process(m.cpus[0].execute(rig.op(txs)))
    m.env.run(until=300)
    assert m.iotlb.lookup(1, 0x1000) == "a"
    m.env.run(until=301)
    assert m.iotlb.lookup(1, 0x1000) is None
    assert m.walk_cache.lookup(1, 1, 0, 21) is None
    m.env.run()
    assert m.cpus[0].records[0].latency == 600 + 2000
    assert m.cpus[0].command_wait_cycles == 600 - 150
    assert m.invalidation.busy_cycles == 600


def test_leaf_only_keeps_the_walk_cache(rig):
    m = rig.machine()
    m.iotlb.fill(1, 0, 12, "a")
    m.walk_cache.fill(1, 1, 0, 21, 0xB000)
    rig.run(m, [(0, [(INVALIDATE_RANGE, 1, 0, 0x1000, True), (WAIT_INVALIDATION,)])])
    assert m.iotlb.lookup(1, 0) is None
    assert m.walk_cache.lookup(1, 1, 0, 21) == 0xB000


def test_global_invalidation_when_domain_is_none(rig):
    m = rig.machine()
    for domain in (1, 2):
        m.iotlb.fill(domain, 0, 12, "a")
    rig.run(m, [(0, [(INVALIDATE_ALL, None), (WAIT_INVALIDATION,)])])
    assert len(m.iotlb) == 0


def test_change_top_takes_effect_when_processed(rig):
    m = rig.machine()
    m.env.process(m.cpus[0].execute(rig.op([(CHANGE_TOP, 3, 0xA000, 4)])))
    m.env.run(until=300)
    assert m.invalidation.root(3) is None
    m.env.run(until=301)
    assert m.invalidation.root(3) == (0xA000, 4)
    assert m.cpus[0].records[0].latency == 50


def test_set_up_programs_the_root_registers_at_once(rig):
    m = rig.machine()
    m.run_direct(rig.op([(CHANGE_TOP, 1, 0xC000, 3)]))
    assert m.invalidation.root(1) == (0xC000, 3)


def test_write_buffer_flush_without_a_write_buffer_costs_only_submit(rig):
    m = rig.machine()
    assert rig.costs(m, [(FLUSH_WRITE_BUFFER,)]) == [50]


def test_commands_from_two_cpus_are_processed_in_submission_order(rig):
    m = rig.machine(trace=True)
    m.cpus[0].start(rig.op([(INVALIDATE_ALL, 1), (WAIT_INVALIDATION,)]))
    m.cpus[1].start(rig.op([(WORK, 10), (INVALIDATE_ALL, 2), (WAIT_INVALIDATION,)]))
    m.env.run()
    done = [
        (r.cycle, r.fields["source"], r.fields["kind"])
        for r in m.tracer.records
        if r.component == "iommu.invalidation" and r.event == "done"
    ]
    assert done == [
        (300, "cpu0", INVALIDATE_ALL),
        (600, "cpu1", INVALIDATE_ALL),
        (600, "cpu0", WAIT_INVALIDATION),
        (600, "cpu1", WAIT_INVALIDATION),
    ]
    # cpu0's wait completes behind cpu1's invalidation, submitted before it
    assert [c.records[0].end for c in m.cpus[:2]] == [2600, 2600]


def test_an_invalidation_drains_the_write_buffer_first(rig):
    """VT-d 6.8: invalidations flush the write buffer implicitly (Linux flushes it
    explicitly only after a map, which needs no invalidation), so an unmap's cleared
    item is in DRAM before the walker can walk again."""
    m = rig.machine(iommu={"write_buffer": {"enabled": True, "drain": 100_000}})
    m.write_buffer.push(0x5000, [0] * 8)
    assert m.write_buffer.pending == 1
    rig.run(m, [(0, [(INVALIDATE_RANGE, 1, 0, 0x1000, True), (WAIT_INVALIDATION,)])])
    assert m.write_buffer.pending == 0 and m.write_buffer.lines_flushed == 1


def test_invalidated_since_tells_walks_in_flight(rig):
    """What a walk started before an overlapping invalidation read must not be cached."""
    m = rig.machine()
    q = m.invalidation
    seq = q.seq
    assert not q.invalidated_since(seq, 1, 0x40000000)
    rig.run(m, [(0, [(INVALIDATE_RANGE, 1, 0x40000000, 0x200000, False), (WAIT_INVALIDATION,)])])
    assert q.seq == seq + 1
    assert q.invalidated_since(seq, 1, 0x40001000)  # inside the range
    assert not q.invalidated_since(seq, 1, 0x40200000)  # beyond it
    assert not q.invalidated_since(seq, 2, 0x40001000)  # another domain
    assert not q.invalidated_since(q.seq, 1, 0x40001000)  # a walk started after it
    rig.run(m, [(0, [(INVALIDATE_ALL, None), (WAIT_INVALIDATION,)])])
    assert q.invalidated_since(seq + 1, 7, 0)  # global: every domain, every address
