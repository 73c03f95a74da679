"""Races between CPUs, replayed with the Interleaver (generic_pt.md 5.4, 7.5, 8 row 2).

Every race here is a property of the transaction order. A schedule found by a seeded
random search is replayed from ``Interleaver.steps`` as an explicit schedule, and
the same schedules are run with the fix on to show the symptom is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from iommusim.tables import DirectExecutor, FaultInjector, Interleaver, PageTable, Prot, PTError
from iommusim.tables.executor import Operation, without_named_work
from iommusim.tables.transactions import (
    ALLOC_TABLE,
    CAUSE_HELPER,
    CHANGE_TOP,
    CMPXCHG,
    FLUSH,
    FREE_TABLE,
)

RW = Prot.READ | Prot.WRITE


class RecordingExecutor(DirectExecutor):
    """A direct executor that also logs (cpu, transaction, result)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log: list[tuple[int, tuple, Any]] = []

    def execute(self, tx: tuple, cpu: int = 0) -> Any:
        result = super().execute(tx, cpu)
        self.log.append((cpu, tx, result))
        return result


def count_until(pt: PageTable, op: Operation, stop: Callable[[tuple], bool]) -> int:
    """Run op alone on pt; the number of transactions up to and including the first
    one for which stop(tx) holds (all of them if none does)."""
    ex = pt.executor
    n = 0
    op = without_named_work(op)  # named work is not an interleaver step
    try:
        tx = next(op)
        while True:
            n += 1
            if stop(tx):
                return n
            tx = op.send(ex.execute(tx, 0))
    except StopIteration:
        return n


# --- 5.4: the SW_BIT_CACHE_FLUSH_DONE race -------------------------------------------------
# A page at 0 builds the upper levels; A and B share the level-0 table that does not
# exist yet, under the same level-1 slot: both CPUs try to install it.
IOVA_A, IOVA_B = 0x20_0000, 0x20_1000
PA_A, PA_B = 0x5000_0000, 0x6000_0000


def flush_race_table(fix: bool, executor: DirectExecutor | None = None) -> PageTable:
    pt = PageTable(
        "x86_64",
        vasz_lg2=48,
        top_level=3,
        features={"sign_extend", "dma_incoherent"},
        fixes={"flush_done_sw_bit": fix},
        executor=executor,
    )
    pt.map(0, 0x1000_0000, 0x1000, RW)
    return pt


def incoherent_executor() -> RecordingExecutor:
    return RecordingExecutor(two_views=True)


def run_flush_race(fix: bool, *, seed: int | None = None, schedule: list[int] = ()):
    """CPU 0 maps A, CPU 1 maps B. Returns (results, steps, [cpus that returned
    success while the hardware view could not translate their IOVA], table)."""
    pt = flush_race_table(fix)
    iovas = (IOVA_A, IOVA_B)
    invisible: list[int] = []

    def on_return(cpu: int, ret: int) -> None:
        if ret == 0 and pt.iova_to_phys(iovas[cpu], view="hw") is None:
            invisible.append(cpu)

    il = Interleaver(pt.executor)
    results = il.run(
        [pt.map_op(IOVA_A, PA_A, 0x1000, RW), pt.map_op(IOVA_B, PA_B, 0x1000, RW)],
        seed=seed,
        schedule=schedule,
        on_return=on_return,
    )
    return results, list(il.steps), invisible, pt


SEARCH_SEEDS = range(1000)


@pytest.fixture(scope="module")
def bad_schedule() -> tuple[int, list[int]]:
    """The first seed (and its steps) whose schedule shows the 5.4 race, fix off."""
    for seed in SEARCH_SEEDS:
        results, steps, invisible, _ = run_flush_race(False, seed=seed)
        assert results == [0, 0]
        if 1 in invisible:
            return seed, steps
    pytest.fail("no seeded schedule reproduces the 5.4 race with flush_done_sw_bit off")


def test_flush_done_race_found_without_fix(bad_schedule) -> None:
    """flush_done_sw_bit off: a seeded schedule exists in which CPU 1's map returns
    success while the hardware view cannot translate B; it replays exactly from
    ``steps``, and the translation appears only once CPU 0 flushes its pointer."""
    seed, steps = bad_schedule
    results, replay_steps, invisible, pt = run_flush_race(False, schedule=steps)
    assert results == [0, 0]
    assert replay_steps == steps
    assert 1 in invisible
    # The CPU view was fine all along, and the hardware catches up once the
    # installer flushed: the window is between its cmpxchg and its flush.
    assert pt.iova_to_phys(IOVA_B) == PA_B
    assert pt.iova_to_phys(IOVA_B, view="hw") == PA_B
    # The same seed gives the same schedule again.
    assert run_flush_race(False, seed=seed)[1] == steps


def test_flush_done_race_absent_with_fix(bad_schedule) -> None:
    """flush_done_sw_bit on: no CPU's map returns before its IOVA is walkable by the
    hardware, over 1000 seeded schedules and on the bad schedule replayed."""
    for seed in SEARCH_SEEDS:
        results, _, invisible, _ = run_flush_race(True, seed=seed)
        assert results == [0, 0]
        assert invisible == [], f"seed {seed}: map returned before the walker could see it"
    _, steps = bad_schedule
    results, _, invisible, _ = run_flush_race(True, schedule=steps)
    assert results == [0, 0]
    assert invisible == []


@pytest.mark.parametrize("fix", [False, True], ids=["fix_off", "fix_on"])
def test_flush_done_race_constructed(fix: bool) -> None:
    """The spec's construction (5.4): CPU 0 stops right after the cmpxchg that links
    the new table, CPU 1 maps B to completion, then CPU 0 finishes. CPU 1 returns
    with B invisible to the walker iff the fix is off; with the fix it flushes the
    pointer itself (a 'helper' flush)."""
    # How far CPU 0 gets alone: up to its table-installing cmpxchg.
    probe = flush_race_table(fix)
    k = count_until(probe, probe.map_op(IOVA_A, PA_A, 0x1000, RW), lambda tx: tx[0] == CMPXCHG)
    # How many transactions CPU 1 then needs to finish, on a mirror of that state.
    mirror = flush_race_table(fix)
    op0 = without_named_work(mirror.map_op(IOVA_A, PA_A, 0x1000, RW))
    tx = next(op0)
    for _ in range(k):
        result = mirror.executor.execute(tx, 0)
        tx = op0.send(result)
    m = count_until(mirror, mirror.map_op(IOVA_B, PA_B, 0x1000, RW), lambda tx: False)

    ex = incoherent_executor()
    pt = flush_race_table(fix, executor=ex)
    seen: dict[int, int | None] = {}
    returned_at: dict[int, int] = {}

    def on_return(cpu: int, ret: int) -> None:
        seen[cpu] = pt.iova_to_phys((IOVA_A, IOVA_B)[cpu], view="hw")
        returned_at[cpu] = len(ex.log) - start

    start = len(ex.log)
    results = Interleaver(ex).run(
        [pt.map_op(IOVA_A, PA_A, 0x1000, RW), pt.map_op(IOVA_B, PA_B, 0x1000, RW)],
        schedule=[0] * k + [1] * m,
        on_return=on_return,
    )
    assert results == [0, 0]
    log = ex.log[start:]
    # CPU 0's last step before the pause was the winning install; CPU 1 returned
    # before CPU 0's next transaction (its flush of that pointer).
    assert log[k - 1][0] == 0 and log[k - 1][1][0] == CMPXCHG
    assert log[k - 1][2] == log[k - 1][1][2]
    assert returned_at[1] == k + m
    assert log[k + m][0] == 0 and log[k + m][1][0] == FLUSH
    helper = [tx for cpu, tx, _ in log if cpu == 1 and tx[0] == FLUSH and tx[3] == CAUSE_HELPER]
    if fix:
        assert seen[1] == PA_B
        assert len(helper) == 1
    else:
        assert seen[1] is None
        assert helper == []
    assert seen[0] == PA_A
    assert pt.iova_to_phys(IOVA_B, view="hw") == PA_B


# --- increase_top (spec 8 row 2) -----------------------------------------------------------
GROW_X = 1 << 39  # both need a level-3 top; the table starts at level 2
GROW_Y = (1 << 39) + (2 << 20)


def top_race(fix: bool, *, schedule: list[int] = (), seed: int | None = None):
    """CPU 0 maps Y, CPU 1 maps X; both need growth. Returns (results, table)."""
    pt = PageTable("amdv1", fixes={"increase_top": fix})
    assert pt.top_level == 2
    results = Interleaver(pt.executor).run(
        [pt.map_op(GROW_Y, 0x20_0000, 0x1000, RW), pt.map_op(GROW_X, 0x10_0000, 0x1000, RW)],
        schedule=schedule,
        seed=seed,
    )
    return results, pt


def bogus_roots(pt: PageTable) -> list[tuple]:
    return [c for c in pt.executor.commands if c[0] == CHANGE_TOP and c[2] == 0]


# CPU 1 reads top_of_table for its range check, then CPU 0 grows the top to
# completion, then CPU 1 enters increase_top and finds the range already fits.
TOP_RACE_SCHEDULE = [1]


def test_increase_top_race_without_fix() -> None:
    """increase_top off (before 152c862c): the late mapper builds nothing yet calls
    change_top with its uninitialised locals (root 0, level 0); the hardware root
    no longer matches the software top and the walker can translate neither map."""
    results, pt = top_race(False, schedule=TOP_RACE_SCHEDULE)
    assert results == [0, 0]
    assert bogus_roots(pt) == [(CHANGE_TOP, pt.common.domain, 0, 0)]
    assert pt.executor.roots[pt.common.domain] != (pt.top_table_pa, pt.top_level)
    assert pt.top_level == 3
    # Software still translates; the hardware, walking from "root 0", does not.
    assert pt.iova_to_phys(GROW_X) == 0x10_0000
    assert pt.iova_to_phys(GROW_Y) == 0x20_0000
    assert pt.iova_to_phys(GROW_X, view="hw") is None
    assert pt.iova_to_phys(GROW_Y, view="hw") is None


def test_increase_top_race_with_fix() -> None:
    """increase_top on: the same schedule ends with one growth to level 3, the
    hardware root equal to the software top and both IOVAs walkable."""
    results, pt = top_race(True, schedule=TOP_RACE_SCHEDULE)
    assert results == [0, 0]
    assert bogus_roots(pt) == []
    changes = [c for c in pt.executor.commands if c[0] == CHANGE_TOP]
    assert [c[3] for c in changes] == [2, 3]  # attach, then one growth
    assert pt.executor.roots[pt.common.domain] == (pt.top_table_pa, pt.top_level)
    assert pt.iova_to_phys(GROW_X, view="hw") == 0x10_0000
    assert pt.iova_to_phys(GROW_Y, view="hw") == 0x20_0000
    pt.deinit()
    assert pt.live_table_pages == 0


def test_increase_top_random_schedules() -> None:
    """increase_top on, 300 seeded schedules: the hardware root always equals the
    software top, both maps translate in hardware and no page leaks (a tower lost
    to the other CPU is freed)."""
    for seed in range(300):
        results, pt = top_race(True, seed=seed)
        assert results == [0, 0]
        assert bogus_roots(pt) == []
        assert pt.executor.roots[pt.common.domain] == (pt.top_table_pa, pt.top_level)
        assert pt.iova_to_phys(GROW_X, view="hw") == 0x10_0000
        assert pt.iova_to_phys(GROW_Y, view="hw") == 0x20_0000
        pt.deinit()
        assert pt.live_table_pages == 0


@pytest.mark.parametrize("fix", [False, True], ids=["fix_off", "fix_on"])
def test_increase_top_alloc_failure_mid_growth(fix: bool) -> None:
    """Growing 2 -> 4 needs two new tops; the 2nd allocation fails: -ENOMEM either
    way, the top stays at level 2 and the old mapping works; without the fix the
    first new top leaks (live after deinit), with it nothing does."""
    pt = PageTable("amdv1", fixes={"increase_top": fix})
    pt.map(0x1000, 0x7000_0000, 0x1000, RW)
    pt.executor.allocator.faults = FaultInjector(fail_nth=2)
    with pytest.raises(PTError) as err:
        pt.map(1 << 48, 0x8000_0000, 0x1000, RW)
    assert err.value.errno == 12  # ENOMEM
    assert pt.executor.allocator.faults.failures == 1
    assert pt.top_level == 2
    assert pt.iova_to_phys(0x1000, view="hw") == 0x7000_0000
    pt.deinit()
    if fix:
        assert pt.live_table_pages == 0
    else:
        assert pt.live_table_pages == 1  # the level-3 top built before the failure


# --- the lost install race (spec 7.5 item 1) ---------------------------------------------------
@pytest.mark.parametrize("incoherent", [False, True], ids=["coherent", "incoherent"])
def test_lost_install_race(incoherent: bool) -> None:
    """CPU 1 allocates a level-0 table, CPU 0 installs its own first, CPU 1's cmpxchg
    loses: CPU 1 frees its page, walks CPU 0's table and succeeds; one table is
    left, both IOVAs translate (also in hardware) and nothing leaks."""
    features = {"sign_extend", "dma_incoherent"} if incoherent else {"sign_extend"}

    def table(executor: DirectExecutor | None = None) -> PageTable:
        pt = PageTable("x86_64", features=features, executor=executor)
        pt.map(0, 0x1000_0000, 0x1000, RW)
        return pt

    def ops(pt: PageTable) -> list[Operation]:
        return [pt.map_op(IOVA_A, PA_A, 0x1000, RW), pt.map_op(IOVA_B, PA_B, 0x1000, RW)]

    # CPU 1 runs alone until just before its cmpxchg (its table is allocated).
    probe = table()
    k = count_until(probe, ops(probe)[1], lambda tx: tx[0] == CMPXCHG) - 1

    ex = RecordingExecutor(two_views=incoherent)
    pt = table(ex)
    live_before = pt.live_table_pages
    start = len(ex.log)
    results = Interleaver(ex).run(ops(pt), schedule=[1] * k)
    assert results == [0, 0]
    log = ex.log[start:]
    cpu1 = [(tx, res) for cpu, tx, res in log if cpu == 1]
    allocated = [res for tx, res in cpu1 if tx[0] == ALLOC_TABLE]
    lost = [tx for tx, res in cpu1 if tx[0] == CMPXCHG and res != tx[2]]
    freed = [tx[1] for tx, _ in cpu1 if tx[0] == FREE_TABLE]
    assert len(allocated) == 1 and len(lost) == 1
    assert freed == allocated  # the loser frees exactly its own table
    # Both now use CPU 0's level-0 table.
    assert pt.walk(IOVA_A)[-1].table_pa == pt.walk(IOVA_B)[-1].table_pa != allocated[0]
    assert pt.live_table_pages == live_before + 1
    for iova, pa in ((IOVA_A, PA_A), (IOVA_B, PA_B)):
        assert pt.iova_to_phys(iova) == pa
        assert pt.iova_to_phys(iova, view="hw") == pa
    pt.deinit()
    assert pt.live_table_pages == 0
    assert ex.allocator.bad_frees == []
