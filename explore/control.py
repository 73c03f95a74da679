"""Controlled scheduling for schedule exploration: the environment, the choice points,
the strategies.

A run under the explorer has exactly three kinds of **choice points**; at each one a
strategy picks an option, and option 0 is always what an uncontrolled run does:

``tie``
    Several events are due at the same cycle with the same SimPy priority. Stock SimPy
    runs them first-in-first-out (by event id); ``ControlledEnvironment.step`` lets the
    strategy pick which runs next. The others stay queued, with their ids, and compete
    again at the next step. Every event has an *owner*: the CPU or device whose process
    waits for it, else whose process scheduled it, else the hardware (None). With
    ``ties="threads"`` (the default) the options are the distinct owners among the
    candidates, in event-id order (option ``i`` runs the earliest event of the i-th
    owner; a tie among one owner's own events is no choice: they keep FIFO order); with
    ``ties="all"`` the options are the candidates themselves. Option 0 is FIFO.
``preempt``
    A CPU is at a transaction boundary (``CpuCore.preempt``: where interrupts are taken).
    Option 1 takes the CPU away for ``preempt_cycles`` (an interrupt), option 0 lets it
    go on. Offered while the run's preemption budget lasts, inside the operations
    named by ``Budget.ops`` and before the transaction kinds named by
    ``Budget.kinds`` (default: all of both).
``evict``
    At the same boundaries, while the run's eviction budget lasts and some cache line is
    dirty: option ``i`` writes back the i-th dirty line (in address order) through the
    memory system's own eviction path, option 0 writes back nothing.

Every choice point is recorded as ``(kind, option, n_options)``; points with a single
option are not choice points. A run's *deviations* are its non-default choices. Since
the simulation is otherwise deterministic (same experiment, same seed), the choice list
determines the run: ``Forced`` replays one.

The step bound turns a run that never ends (a livelock an unfair schedule could cause)
into a reported outcome: past ``max_steps`` events the environment stops the run and
sets ``livelocked``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import NORMAL, Condition, EventPriority, Process

if TYPE_CHECKING:
    from ..hwmodels.cpu import CpuCore
    from ..hwmodels.machine import Machine
    from .strategies import Strategy

TIE, PREEMPT, EVICT = "tie", "preempt", "evict"
Key = tuple[str, tuple[str | None, ...], int]
KINDS = (TIE, PREEMPT, EVICT)
HARDWARE = None  # the owner of events no CPU or device waits for (queues, buffers, ...)
SPIN_LIMIT = 64  # boundaries of one CPU at one cycle before it counts as spinning


@dataclass(frozen=True, slots=True)
class ChoicePoint:
    """What a strategy sees: the point's position in the run, its kind and options."""

    index: int  # position in the run's choice list
    kind: str
    n: int  # options 0..n-1
    cycle: int
    who: tuple[str | None, ...]  # tie: the owner of each candidate; else (cpu,)
    key: Key  # (kind, who, how many points with this kind and who came before)


@dataclass(frozen=True, slots=True)
class Deviation:
    """A non-default choice, with a line for people."""

    index: int
    kind: str
    option: int
    n: int
    cycle: int
    what: str
    key: Key

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "kind": self.kind, "option": self.option, "n": self.n,
            "cycle": self.cycle, "what": self.what,
        }


# --- the environment ---------------------------------------------------------------------
class ControlledEnvironment(simpy.Environment):
    """A SimPy environment whose ties are decided by a ``Controller``.

    ``step`` is SimPy's own (simpy/core.py, Environment.step) with one change: when the
    earliest queued events share their time and priority, the controller picks which of
    them runs; the others go back into the queue unchanged. Processes remember which
    CPU or device created them (``owners``) and scheduled events which one scheduled
    them (``schedule``), so a strategy can tell whose event it is choosing. Before the
    event past ``max_steps`` the run stops (``livelocked``).
    """

    def __init__(self, controller: Controller, max_steps: int | None = None) -> None:
        super().__init__()
        self.controller = controller
        self.max_steps = max_steps
        self.steps = 0
        self.livelocked = False
        self.owners: dict[Process, str | None] = {}

    def process(self, generator: Any) -> Process:  # type: ignore[override]
        proc = Process(self, generator)
        active = self._active_proc
        self.owners[proc] = self.owners.get(active) if active is not None else HARDWARE
        return proc

    def schedule(self, event: simpy.Event, priority: EventPriority = NORMAL,
                 delay: Any = 0) -> None:
        active = self._active_proc
        event._scheduled_by = self.owners.get(active) if active is not None else HARDWARE
        heappush(self._queue, (self._now + delay, priority, next(self._eid), event))

    def owner_of(self, event: simpy.Event) -> str | None:
        """The CPU or device whose process waits for ``event``, else whose process
        scheduled it (None: the hardware)."""
        return self._waiter(event, 0) or getattr(event, "_scheduled_by", HARDWARE)

    def _waiter(self, event: simpy.Event, depth: int) -> str | None:
        for cb in event.callbacks or ():
            obj = getattr(cb, "__self__", None)
            if isinstance(obj, Process):
                owner = self.owners.get(obj)
                if owner is not None:
                    return owner
            elif isinstance(obj, Condition) and depth < 8:
                owner = self._waiter(obj, depth + 1)
                if owner is not None:
                    return owner
        return HARDWARE

    def step(self) -> None:
        queue = self._queue
        if not queue:
            raise EmptySchedule
        if self.max_steps is not None and self.steps >= self.max_steps:
            self.livelocked = True
            raise StopSimulation(None)
        self.steps += 1
        item = heappop(queue)
        if queue and queue[0][0] == item[0] and queue[0][1] == item[1]:
            ties = [item]
            while queue and queue[0][0] == item[0] and queue[0][1] == item[1]:
                ties.append(heappop(queue))
            item = ties.pop(self.controller.tie(ties))
            for other in ties:
                heappush(queue, other)
        self._now, _, _, event = item

        # From here on SimPy's Environment.step, unchanged.
        callbacks, event.callbacks = event.callbacks, None  # type: ignore
        try:
            for callback in callbacks:
                callback(event)
        except StopSimulation:
            event.callbacks = callbacks[callbacks.index(callback) + 1 :]
            self.schedule(event, EventPriority(-1))
            raise

        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc



# --- the controller ----------------------------------------------------------------------
@dataclass
class Budget:
    """Per run: preemptions and evictions the strategy may choose, how long a
    preemption lasts, which boundaries are choice points (inside which CPU operations,
    before which transaction kinds; None: all), and which ties are choice points
    ("threads" or "all")."""

    preemptions: int = 0
    preempt_cycles: int = 4000
    evictions: int = 0
    ops: tuple[str, ...] | None = None
    ties: str = "threads"
    kinds: tuple[str, ...] | None = None  # transaction kinds a boundary precedes


@dataclass
class Controller:
    """Owns the environment, offers the choice points, records the choices.

    ``simulate(..., explorer=controller)`` builds the machine on ``controller.env`` and
    calls ``attach`` with the scenario's CPU and device processes before the run.
    """

    strategy: Strategy
    budget: Budget = field(default_factory=Budget)
    max_steps: int | None = None
    choices: list[tuple[str, int, int]] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    preempted: int = 0
    evicted: int = 0

    def __post_init__(self) -> None:
        self.env = ControlledEnvironment(self, self.max_steps)
        self._preempt_left = self.budget.preemptions
        self._evict_left = self.budget.evictions
        self._memory: Any = None
        self._spin: dict[str, tuple[int, int]] = {}
        self._seen: dict[tuple[str, tuple[str | None, ...]], int] = {}

    # -- wiring (called by experiment.assembly.simulate) -----------------------------------
    def attach(
        self,
        machine: Machine,
        processes: Iterable[tuple[str, Process]],
        cores: Mapping[str, CpuCore],
    ) -> None:
        for name, proc in processes:
            self.env.owners[proc] = name
            if name not in self.threads:
                self.threads.append(name)
        for name, core in cores.items():
            core.preempt = self._boundary_of(name)
        self._memory = machine.memory
        self.strategy.begin(self)

    # -- choice points -------------------------------------------------------------------
    def _choose(self, kind: str, n: int, who: tuple[str | None, ...],
                describe: Callable[[int], str]) -> int:
        ordinal = self._seen.get((kind, who), 0)
        self._seen[kind, who] = ordinal + 1
        key = (kind, who, ordinal)
        point = ChoicePoint(len(self.choices), kind, n, self.env.now, who, key)
        option = self.strategy.choose(point)
        if not 0 <= option < n:
            raise ValueError(f"strategy {self.strategy.name} chose {option} of {n} at {point}")
        self.choices.append((kind, option, n))
        if option:
            self.deviations.append(
                Deviation(point.index, kind, option, n, point.cycle, describe(option), key)
            )
        return option

    def tie(self, items: list[tuple[Any, Any, int, simpy.Event]]) -> int:
        """Which of the due ``items`` (in event-id order) runs now."""
        env = self.env
        owners = [env.owner_of(item[3]) for item in items]
        if self.budget.ties == "all":
            first = list(range(len(items)))
        else:
            first = [i for i, o in enumerate(owners) if o not in owners[:i]]
            if len(first) == 1:
                return 0  # one owner's events keep their order
        who = tuple(owners[i] for i in first)

        def describe(option: int) -> str:
            def name(i: int) -> str:
                return f"{owners[i] or 'hardware'} ({type(items[i][3]).__name__})"

            return f"ran {name(first[option])} before {name(0)} ({len(items)} events due)"

        return first[self._choose(TIE, len(first), who, describe)]

    def _boundary_of(self, name: str) -> Callable[[CpuCore, tuple], int]:
        ops, kinds = self.budget.ops, self.budget.kinds

        def boundary(core: CpuCore, tx: tuple) -> int:
            if ops is not None and core.current_op not in ops:
                return 0
            if kinds is not None and tx[0] not in kinds:
                return 0
            return self._boundary(name, tx)

        return boundary

    def _boundary(self, cpu: str, tx: tuple) -> int:
        now = self.env.now
        last, same = self._spin.get(cpu, (-1, 0))
        same = same + 1 if last == now else 0
        self._spin[cpu] = (now, same)
        if same == SPIN_LIMIT:
            self.strategy.spin(cpu)
        memory = self._memory
        if self._evict_left and memory is not None and memory.dirty:
            lines = sorted(memory.dirty)
            option = self._choose(
                EVICT, 1 + len(lines), (cpu,),
                lambda o: f"wrote back dirty line {lines[o - 1]:#x} (before {cpu}'s {tx[0]})",
            )
            if option:
                memory.evict(lines[option - 1])
                self._evict_left -= 1
                self.evicted += 1
        if self._preempt_left:
            cycles = self.budget.preempt_cycles
            option = self._choose(
                PREEMPT, 2, (cpu,),
                lambda o: f"preempted {cpu} for {cycles} cycles before its {_tx_text(tx)}",
            )
            if option:
                self._preempt_left -= 1
                self.preempted += 1
                return cycles
        return 0


def _tx_text(tx: tuple) -> str:
    if len(tx) > 1 and isinstance(tx[1], int):
        return f"{tx[0]} {tx[1]:#x}"
    return str(tx[0])
