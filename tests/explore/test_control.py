"""The controlled environment, the choice points and the strategies, in isolation."""

from __future__ import annotations

import simpy

from iommusim.experiment.oracles import stale_after_unmap
from iommusim.explore.control import PREEMPT, TIE, Budget, ChoicePoint, Controller
from iommusim.explore.strategies import Fifo, Forced, Pct, RandomWalk
from iommusim.hwmodels.config import HardwareConfig
from iommusim.hwmodels.machine import Machine
from iommusim.tables.transactions import CMPXCHG, LOAD, STORE, WORK
from iommusim.walker.iommu import Incident


def racers(env: simpy.Environment, log: list[str]) -> None:
    """Three processes whose steps fall on the same cycles."""

    def proc(name: str, delays: list[int]):
        for d in delays:
            yield env.timeout(d)
            log.append(f"{env.now}:{name}")

    for name, delays in (("a", [1, 1, 2]), ("b", [2, 2]), ("c", [1, 3])):
        env.process(proc(name, delays))


def test_fifo_is_stock_simpy() -> None:
    stock: list[str] = []
    env = simpy.Environment()
    racers(env, stock)
    env.run()
    ctl = Controller(Fifo(), Budget(ties="all"))
    mine: list[str] = []
    racers(ctl.env, mine)
    ctl.env.run()
    assert mine == stock
    assert ctl.choices and all(o == 0 for _, o, _ in ctl.choices)
    assert not ctl.deviations


def test_a_forced_choice_reorders_a_tie_and_is_recorded() -> None:
    base = Controller(Fifo(), Budget(ties="all"))
    log0: list[str] = []
    racers(base.env, log0)
    base.env.run()
    # some tie decides whose step comes first (at cycle 1, a and c are due)
    for index, (kind, _, n) in enumerate(base.choices):
        assert kind == TIE and n >= 2
        ctl = Controller(Forced({index: 1}), Budget(ties="all"))
        log1: list[str] = []
        racers(ctl.env, log1)
        ctl.env.run()
        assert sorted(log1) == sorted(log0)
        assert [(d.index, d.option) for d in ctl.deviations] == [(index, 1)]
        if log1 != log0:
            break
    else:
        raise AssertionError("no tie changed the order")
    # replaying the list gives the same run
    again = Controller(Forced({index: 1}, expect=ctl.choices), Budget(ties="all"))
    log2: list[str] = []
    racers(again.env, log2)
    again.env.run()
    assert log2 == log1 and again.choices == ctl.choices
    assert again.strategy.diverged is None


def test_ties_among_one_owners_events_are_no_choice() -> None:
    ctl = Controller(Fifo())  # ties="threads": the processes here have no owner
    racers(ctl.env, [])
    ctl.env.run()
    assert ctl.choices == []


def test_step_bound_stops_a_livelock() -> None:
    ctl = Controller(Fifo(), max_steps=1000)
    env = ctl.env

    def spin():
        while True:
            yield env.timeout(0)

    env.process(spin())
    env.run(until=10)  # never reaches cycle 10: every step is at cycle 0
    assert env.livelocked and env.steps == 1000 and env.now == 0


def op(kinds: list[tuple]):
    """An operation generator (a core sends results back: no ``yield from`` a list)."""
    for tx in kinds:  # noqa: UP028
        yield tx
    return 0


def test_the_cpu_preemption_hook() -> None:
    ops = [(WORK, 10), (STORE, 0x1000, 5), (LOAD, 0x1000), (WORK, 10)]

    def run(hook) -> tuple[int, list[str]]:
        m = Machine(HardwareConfig(), trace=True)
        core = m.cpus[0]
        core.preempt = hook
        seen: list[str] = []
        if hook is not None:
            inner = hook

            def hook2(c, tx):
                seen.append(tx[0])
                return inner(c, tx)

            core.preempt = hook2
        core.start(op(ops), "test")
        m.env.run()
        return core.records[0].latency, seen

    plain, _ = run(None)
    zero, seen = run(lambda core, tx: 0)
    assert zero == plain and seen == [WORK, STORE, LOAD, WORK]  # every boundary, no cost
    once, _ = run(lambda core, tx: 500 if tx[0] == LOAD else 0)
    assert once == plain + 500


def test_controller_preempts_within_budget_and_offers_evictions() -> None:
    m_ops = [(STORE, 0x1000, 1), (STORE, 0x2000, 2), (CMPXCHG, 0x1000, 1, 3), (WORK, 5)]
    strategy = Forced({})
    ctl = Controller(strategy, Budget(preemptions=1, preempt_cycles=300, evictions=1))
    m = Machine(HardwareConfig(), env=ctl.env)
    core = m.cpus[0]
    ctl.attach(m, [], {"cpu0": core})
    core.start(op(m_ops), "map")
    ctl.env.run()
    kinds = [k for k, _, _ in ctl.choices]
    # every boundary offers a preemption; evictions once some line is dirty
    assert kinds.count(PREEMPT) == 4
    assert kinds.count("evict") == 3
    evict_points = [(i, n) for i, (k, _, n) in enumerate(ctl.choices) if k == "evict"]
    assert evict_points[-1][1] == 3  # two dirty lines: none, or one of them
    # force: evict the second dirty line (0x2000) before the cmpxchg, preempt there
    last_evict = evict_points[-1][0]
    forced = Controller(Forced({last_evict: 2, last_evict + 1: 1}),
                        Budget(preemptions=1, preempt_cycles=300, evictions=1))
    m2 = Machine(HardwareConfig(), env=forced.env)
    forced.attach(m2, [], {"cpu0": m2.cpus[0]})
    m2.cpus[0].start(op(m_ops), "map")
    forced.env.run()
    assert forced.evicted == 1 and forced.preempted == 1
    assert m2.memory.hw.get(0x2000) == 2 and 0x2000 not in m2.memory.dirty  # in DRAM
    assert m2.memory.hw.get(0x1000, 0) == 0  # the other line stayed in the cache
    assert m2.cpus[0].records[0].latency == m.cpus[0].records[0].latency + 300
    # budgets spent: no more choice points of those kinds after them
    after = [k for k, _, _ in forced.choices[last_evict + 2:]]
    assert "evict" not in after and PREEMPT not in after


def test_preemption_points_filtered_by_op_and_kind() -> None:
    ctl = Controller(Fifo(), Budget(preemptions=1, ops=("unmap",)))
    m = Machine(HardwareConfig(), env=ctl.env)
    ctl.attach(m, [], {"cpu0": m.cpus[0]})
    m.cpus[0].start(op([(WORK, 1), (WORK, 1)]), "map")
    ctl.env.run()
    assert ctl.choices == []
    ctl = Controller(Fifo(), Budget(preemptions=1, kinds=(LOAD,)))
    m = Machine(HardwareConfig(), env=ctl.env)
    ctl.attach(m, [], {"cpu0": m.cpus[0]})
    m.cpus[0].start(op([(WORK, 1), (LOAD, 0x40), (WORK, 1)]), "map")
    ctl.env.run()
    assert ctl.choices == [(PREEMPT, 0, 2)]


def point(kind: str, index: int, who: tuple, n: int | None = None) -> ChoicePoint:
    return ChoicePoint(index, kind, n or len(who), 0, who, (kind, who, 0))


def test_pct_priorities_change_points_and_spin_hint() -> None:
    pct = Pct(seed=1, run=1, depth=2, k=10, p_evict=0.0)

    class Ctl:
        threads = ("cpu0", "cpu1", "nic0")

    pct.begin(Ctl())  # type: ignore[arg-type]
    prio = dict(pct.priority)
    assert sorted(prio[t] for t in Ctl.threads) == [2, 3, 4]  # d .. d+n-1
    (step,) = pct.change  # d-1 = 1 change point in 1..k
    assert 1 <= step <= 10
    best = max(Ctl.threads, key=lambda t: prio[t])
    who = ("nic0", "cpu0", "cpu1")
    # a tie that is not a change point: the highest priority wins; hardware first
    if step != 1:
        assert who[pct.choose(point(TIE, 0, who))] == best
    assert pct.choose(point(TIE, 0, (None, "cpu0"))) == 0
    # a boundary that is not a change point never preempts; one that is does
    others = [i for i in range(10) if i + 1 != step]
    assert pct.choose(point(PREEMPT, others[0], ("cpu1",), 2)) == 0
    assert pct.choose(point(PREEMPT, step - 1, ("cpu1",), 2)) == 1
    assert pct.priority["cpu1"] == 1  # demoted below every initial priority
    pct.spin("cpu0")
    assert pct.priority["cpu0"] < min(pct.priority[t] for t in ("cpu1", "nic0"))


def test_random_walk_is_seeded() -> None:
    def picks(seed: int) -> list[int]:
        r = RandomWalk(seed, 3, p_preempt=0.3, p_evict=0.0)
        return [r.choose(point(TIE, i, ("a", "b", "c"))) for i in range(20)] + [
            r.choose(point(PREEMPT, i, ("cpu0",), 2)) for i in range(20)
        ]

    assert picks(1) == picks(1) != picks(2)


def incident(cycle: int, iova: int) -> Incident:
    return Incident(cycle, "stale_translation", "nic0", 1, iova, 0x9000)


def test_stale_after_unmap_tells_the_legitimate_window_apart() -> None:
    unmaps = [(100, 200, 0x4000, 0x1000)]  # (start, end, iova, size)
    during = (150, incident(180, 0x4000))  # issued while the unmap ran
    after = (250, incident(290, 0x4000))  # issued after it completed
    elsewhere = (250, incident(290, 0x8000))  # another page
    assert stale_after_unmap([during, after, elsewhere], unmaps) == [after]
    # a second unmap of the page in flight while the DMA translated: its window
    again = [*unmaps, (260, 400, 0x4000, 0x1000)]
    assert stale_after_unmap([after], again) == []
