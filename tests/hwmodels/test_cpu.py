"""CPU cores: costs, operation records, locks, interrupts, jitter, fault injection."""

from __future__ import annotations

import random

import pytest

from iommusim.tables.memory import PAGE_SIZE
from iommusim.tables.transactions import (
    ALLOC_TABLE,
    CAUSE_INSTALL,
    CAUSE_LEAF,
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

A = 0x10_0000


def test_fixed_costs(rig):
    m = rig.machine()
    txs = [(FENCE,), (WORK, 77), (WORK, 0), (LOCK, "l"), (UNLOCK, "l"),
           (INVALIDATE_RANGE, 1, 0, 4096, False)]
    assert rig.costs(m, txs) == [35, 77, 0, 20, 4, 50]


def test_operation_record(rig):
    m = rig.machine()

    def op():
        yield (STORE, A, 1)
        yield (FLUSH, A, 8, CAUSE_LEAF)
        yield (STORE, A + 64, 1)
        yield (FLUSH, A, 128, CAUSE_INSTALL)
        return "done"

    m.env.run(until=1000)
    proc = m.cpus[2].start(op(), "map")
    m.env.run()
    [rec] = m.cpus[2].records
    assert proc.value == "done"
    assert (rec.cpu, rec.label, rec.start, rec.result) == ("cpu2", "map", 1000, "done")
    assert rec.latency == 4 + 330 + 4 + 355
    assert rec.flush_lines == {CAUSE_LEAF: 1, CAUSE_INSTALL: 2}
    stats = m.cpus[2].stats()
    assert (stats["ops.map.count"], stats["ops.map.cycles"]) == (1, rec.latency)
    assert (stats["flush_lines.install"], stats["flush_lines.leaf"]) == (2, 1)
    assert stats["transactions"] == 4


def test_a_held_lock_blocks_and_the_wait_is_counted(rig):
    m = rig.machine()
    m.cpus[0].start(rig.op([(LOCK, "pt"), (WORK, 100), (UNLOCK, "pt")]))

    def late():
        yield m.env.timeout(10)
        yield from m.cpus[1].execute(rig.op([(LOCK, "pt"), (UNLOCK, "pt")]))

    m.env.process(late())
    m.env.run()
    # cpu0: lock 0-20 (local), work 20-120, unlock at 120; cpu1 waits 10-120, then
    # takes the lock line from cpu0 (remote 125) and unlocks: 120 + 125 + 4
    assert m.cpus[1].records[0].end == 249
    assert (m.cpus[1].lock_waits, m.cpus[1].lock_wait_cycles) == (1, 110)
    assert m.cpus[0].lock_waits == 0


def test_lock_misuse_is_an_error(rig):
    with pytest.raises(RuntimeError, match="does not hold"):
        rig.run(rig.machine(), [(0, [(UNLOCK, "x")])])
    with pytest.raises(RuntimeError, match="already holds"):
        rig.run(rig.machine(), [(0, [(LOCK, "x"), (LOCK, "x")])])


def test_an_interrupt_stretches_the_gap_between_cmpxchg_and_flush(rig):
    mean, duration = 5000, 4000
    m = rig.machine(trace=True, cpu={"interrupts": {"mean_interval": mean, "duration": duration}})
    arrival = max(1, round(random.Random("0/cpu0").expovariate(1 / mean)))
    assert arrival > 1
    rig.run(m, [(0, [(WORK, arrival - 1), (CMPXCHG, A, 0, 1), (FLUSH, A, 8, CAUSE_INSTALL)])])
    events = [(r.cycle, r.event) for r in m.tracer.records if r.component == "cpu0"]
    # the interrupt arrives during the cmpxchg and is taken before the flush is issued
    cas = arrival - 1
    assert events == [
        (0, "op_start"),
        (0, WORK),
        (cas, CMPXCHG),
        (cas + 270, "interrupt"),
        (cas + 270 + duration, FLUSH),
        (cas + 270 + duration + 330, "op_end"),
    ]
    assert (m.cpus[0].interrupts, m.cpus[0].interrupt_cycles) == (1, duration)


def test_idle_time_does_not_bank_interrupts(rig):
    m = rig.machine(cpu={"interrupts": {"mean_interval": 100, "duration": 50}})
    m.env.run(until=10**6)
    assert rig.costs(m, [(WORK, 1)]) == [1]


def test_jitter_is_seeded_and_never_negative(rig):
    m = rig.machine(seed=3, cpu={"jitter": 5})
    rng = random.Random("3/cpu0")
    txs = [(WORK, 100), (WORK, 0), (FENCE,), (LOCK, "l")]
    expected = [max(0, c + rng.randint(-5, 5)) for c in (100, 0, 35, 20)]
    assert rig.costs(m, txs) == expected


def test_alloc_and_free_costs_and_fault_injection(rig):
    m = rig.machine(allocator={"fail_nth": 2})
    out = rig.run(m, [(0, [(ALLOC_TABLE, 12), (ALLOC_TABLE, 12), (ALLOC_TABLE, 12)])])
    zeroing = PAGE_SIZE // 64 * 4
    assert [c for _, c in out] == [400 + zeroing, 400, 400 + zeroing]
    first, failed, third = (r for r, _ in out)
    assert failed is None
    assert third == first + PAGE_SIZE
    assert rig.costs(m, [(FREE_TABLE, first)]) == [200]
    assert m.allocator.stats() == {
        "allocations": 2, "frees": 1, "failures": 1, "live_pages": 1, "bad_frees": 0
    }


def test_a_failed_allocation_changes_nothing_else(rig):
    m = rig.machine(allocator={"fail_nth": 3})
    core = m.cpus[0]
    for _ in range(2):
        core.charge((ALLOC_TABLE, 12))
    core.charge((STORE, A, 1))
    mem, alloc = m.memory, m.allocator

    def state():
        return (dict(mem.cpu), dict(mem.hw), dict(mem.holders), list(mem.dirty.items()),
                sorted(alloc._live), list(alloc._free), alloc._next)

    before = state()
    assert core.charge((ALLOC_TABLE, 12)) == (None, 400)
    assert state() == before
    assert core.charge((ALLOC_TABLE, 12))[0] == m.allocator.base + 2 * PAGE_SIZE


def test_a_core_runs_one_operation_at_a_time(rig):
    m = rig.machine()
    m.cpus[0].start(rig.op([(WORK, 10)]))
    m.cpus[0].start(rig.op([(WORK, 10)]))
    with pytest.raises(RuntimeError, match="already executing"):
        m.env.run()


def test_unknown_and_blocking_transactions_are_rejected(rig):
    with pytest.raises(ValueError, match="unknown"):
        rig.run(rig.machine(), [(0, [("teleport", 1)])])
    with pytest.raises(ValueError, match="blocks"):
        rig.machine().cpus[0].charge((WAIT_INVALIDATION,))


def test_charge_matches_the_results_of_the_direct_executor(rig):
    m = rig.machine()
    core = m.cpus[0]
    assert core.charge((STORE, A, 9)) == (None, 4)
    assert core.charge((LOAD, A)) == (9, 4)
    assert core.charge((CMPXCHG, A, 9, 10)) == (9, 20)
    assert core.charge((CMPXCHG, A, 9, 11)) == (10, 20)
    assert m.memory.load(A) == 10


def test_named_work_delays_the_next_transaction_without_a_boundary(rig):
    m = rig.machine(trace=True, cpu={"work": {"level": 7, "item_write": 3}})
    ops = [("work", "level", 2), (STORE, A, 1), ("work", "item_write", 4), ("work", "level", 1)]
    rig.run(m, [(0, [(WORK, *op[1:]) if op[0] == "work" else op for op in ops])])
    events = [(r.cycle, r.event) for r in m.tracer.records if r.component == "cpu0"]
    # 14 cycles of work before the store issues; 12 + 7 after it, before the op ends
    assert events == [(0, "op_start"), (14, STORE), (14 + 4 + 19, "op_end")]
    assert m.cpus[0].transactions == 1


def test_fractional_named_work_carries_its_fraction_within_an_operation(rig):
    """Per-item costs of a few cycles are fractional (cpu.work defaults): whole cycles
    are waited before the next transaction, the fraction is carried, the rest is
    rounded when the operation ends -- the clock stays an integer."""
    m = rig.machine(trace=True, cpu={"work": {"item_examine": 0.4, "level": 2.5}})
    ops = [(WORK, "item_examine", 2), (STORE, A, 1), (WORK, "item_examine", 2),
           (STORE, A + 8, 1), (WORK, "level", 1)]
    rig.run(m, [(0, ops)])
    events = [(r.cycle, r.event) for r in m.tracer.records if r.component == "cpu0"]
    # 0.8 waits for more; 0.8 + 0.8 = 1.6: one cycle now, 0.6 carried; 0.6 + 2.5 = 3.1
    assert events == [(0, "op_start"), (0, STORE), (4 + 1, STORE), (5 + 4 + 3, "op_end")]
    assert isinstance(m.env.now, int)


def test_named_work_charges_the_calibrated_defaults_and_nothing_when_zero(rig):
    m = rig.machine()  # cpu.work defaults: the i7-12700 fit, gather 12.26
    # 5 x 12.26 = 61.3: 61 whole cycles before the fence issues, 0.3 carried
    assert rig.costs(m, [(WORK, "gather", 5), (FENCE,)]) == [0, 61 + 35]
    m = rig.machine(cpu={"work": {"gather": 0}})
    assert rig.costs(m, [(WORK, "gather", 5), (FENCE,)]) == [0, 35]
