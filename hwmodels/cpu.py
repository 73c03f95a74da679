"""CPU cores: SimPy processes that run ``tables`` operation generators, charging cycles.

A core executes any generator of ``tables`` transactions (a map, an unmap, a test
stream) unchanged: it sends back the same results the ``DirectExecutor`` would.

Convention: **a transaction takes effect at its issue time, then the core waits its
cost.** Between two transactions -- and only there -- other CPUs, the walker and
devices may act, and an interrupt may take the core away. A blocking transaction
takes effect when it stops blocking: a ``LOCK`` when the lock is granted.

Costs, in cycles (config nodes ``cpu``, ``allocator``, ``iommu.invalidation``):

======================  ============================================================
transaction             cost
======================  ============================================================
LOAD, STORE, CMPXCHG,   through the memory system (``MemorySystem``: hit/miss,
FLUSH                   local/remote, ``clflush_cache_range``)
FENCE                   ``mfence``
WORK(n)                 n
WORK(name, count)       ``count`` times ``cpu.work.<name>``; never a boundary: the core
                        waits it before issuing the next transaction (no jitter, no
                        interrupt check, no trace record), so charging work changes no
                        interleaving. Costs may be fractional (a per-item cost of a
                        tight loop is a few cycles); the whole cycles are waited, the
                        fraction is carried to the next wait of the same operation and
                        the rest rounded at its end, so the clock stays an integer
ALLOC_TABLE             ``allocator.alloc``, plus one ``store`` per line of the zeroed
                        page when it succeeds (the lines become dirty)
FREE_TABLE              ``allocator.free``
LOCK                    waiting for the lock, then ``cmpxchg_local``/``_remote``
UNLOCK                  ``store``
INVALIDATE_RANGE,       ``submit`` (the descriptor is posted to the queue)
INVALIDATE_ALL,
CHANGE_TOP
FLUSH_WRITE_BUFFER      ``submit``, then waiting until the queue has done it
WAIT_INVALIDATION       ``submit``, then waiting until every earlier command took
                        effect, then ``wait``
======================  ============================================================

Jitter: once per transaction, its issue cost (for a blocking one, the cmpxchg or the
``submit``, not the waiting) gets a uniform draw in ±``cpu.jitter`` added, never going
below zero. Interrupts arrive after exponentially distributed intervals (mean
``cpu.interrupts.mean_interval``, from the end of the previous interrupt or the start of
an operation after idling) and are taken at the next transaction boundary; each takes
the core away for ``duration`` cycles, fixed or exponentially distributed.

``charge(tx)`` computes the effect and cost of a non-blocking transaction without
touching the clock, so a caller may run several before yielding.

Preemption hook (schedule exploration, ``explore.control``): when ``preempt`` is set,
it is called as ``preempt(core, tx)`` at every transaction boundary, where interrupts are
taken, before ``tx`` takes effect; a non-zero return takes the core away for that many
cycles, like an interrupt (traced as an ``interrupt`` with ``source="explorer"``). None,
the default, costs one test per transaction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import simpy

from ..tables.memory import PAGE_SIZE
from ..tables.transactions import (
    ALLOC_TABLE,
    CHANGE_TOP,
    CMPXCHG,
    FENCE,
    FLUSH,
    FLUSH_WRITE_BUFFER,
    FREE_TABLE,
    INVALIDATE_ALL,
    INVALIDATE_RANGE,
    LOAD,
    LOCK,
    STORE,
    TX_FIELDS,
    UNLOCK,
    WAIT_INVALIDATION,
    WORK,
    Transaction,
)
from .allocator import TableAllocator
from .component import component_rng
from .config import CpuConfig
from .invalidation import InvalidationQueue
from .locks import Locks
from .memsys import MemorySystem
from .trace import Tracer

Operation = Generator[Transaction, Any, Any]
Events = Generator[simpy.Event, Any, Any]

@dataclass(slots=True)
class OpRecord:
    """One executed operation: when it ran, what it returned, what it flushed."""

    cpu: str
    label: str
    start: int
    end: int = -1
    result: Any = None
    flush_lines: dict[str, int] = field(default_factory=dict)  # by FLUSH cause

    @property
    def latency(self) -> int:
        return self.end - self.start


def _add(counter: dict[str, Any], key: str, n: int) -> None:
    counter[key] = counter.get(key, 0) + n


class CpuCore:
    """One CPU: executes one operation at a time (``start`` or ``yield from execute``)."""

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        cfg: CpuConfig,
        *,
        memory: MemorySystem,
        allocator: TableAllocator,
        queue: InvalidationQueue,
        locks: Locks,
        seed: int = 0,
        tracer: Tracer | None = None,
    ) -> None:
        self.env = env
        self.index = index
        self.cfg = cfg
        self.name = f"cpu{index}"
        self.memory = memory
        self.allocator = allocator
        self.queue = queue
        self.locks = locks
        self._tracer = tracer
        self._rng = component_rng(seed, self.name)
        self._jitter = cfg.jitter
        self._submit = queue.cfg.submit
        self._work_costs: dict[str, float] = cfg.work.model_dump()
        self._charges = {
            LOAD: self._load,
            STORE: self._store,
            CMPXCHG: self._cmpxchg,
            FLUSH: self._flush,
            FENCE: self._fence,
            WORK: self._work,
            ALLOC_TABLE: self._alloc,
            FREE_TABLE: self._free,
            UNLOCK: self._unlock,
            INVALIDATE_RANGE: self._post,
            INVALIDATE_ALL: self._post,
            CHANGE_TOP: self._post,
        }
        self._blocking = {
            LOCK: self._lock,
            FLUSH_WRITE_BUFFER: self._await_command,
            WAIT_INVALIDATION: self._await_command,
        }
        irq = cfg.interrupts
        self._next_interrupt = env.now + self._interval() if irq.mean_interval else math.inf
        self._record: OpRecord | None = None
        self.preempt: Callable[[CpuCore, Transaction], int] | None = None
        self.preemptions = 0
        self.records: list[OpRecord] | None = []  # for tests; None in a scenario run
        self.op_listeners: list[Callable[[OpRecord], None]] = []  # told at each op's end
        self.op_totals: dict[str, list[int]] = {}  # label -> [operations, cycles]
        self.flush_lines: dict[str, int] = {}
        self.transactions = 0
        self.interrupts = 0
        self.interrupt_cycles = 0
        self.lock_waits = 0
        self.lock_wait_cycles = 0
        self.command_wait_cycles = 0

    # -- driving the core -------------------------------------------------------------

    def start(self, op: Operation, label: str = "op") -> simpy.Process:
        """Run one operation as its own SimPy process; the process's value is its result."""
        return self.env.process(self.execute(op, label))

    def execute(self, op: Operation, label: str = "op") -> Events:
        """Run one operation to completion (``result = yield from core.execute(op)``).

        The transaction loop is inlined in one function: it is the simulator's hot path
        (see benchmarks/). Locals are bound once; named work, the look-ahead test and
        the three memory accesses (LOAD, STORE, CMPXCHG: over half of all
        transactions) are handled in the loop itself, without a call to a handler or
        a helper generator; every other kind goes through its handler as before."""
        if self._record is not None:
            raise RuntimeError(f"{self.name} is already executing {self._record.label!r}")
        env = self.env
        rec = self._record = OpRecord(self.name, label, env.now)
        if self._next_interrupt < env.now:  # interrupts while idle were served while idle
            self._next_interrupt = env.now + self._interval()
        if self._tracer is not None:
            self._tracer.emit(self.name, "op_start", op=label)
        charges, blocking, send, timeout = self._charges, self._blocking, op.send, env.timeout
        work_costs = self._work_costs
        index = self.index
        cpu_load = self.memory.cpu_load
        cpu_store = self.memory.cpu_store
        cpu_cmpxchg = self.memory.cpu_cmpxchg
        tracer, jitter = self._tracer, self._jitter
        interrupts = self.cfg.interrupts.mean_interval > 0
        preempt = self.preempt
        lookahead = getattr(env, "lookahead", False)
        queue = env._queue
        result: Any = None
        done = 0
        pending = 0.0  # WORK cycles owed before the next transaction issues
        try:
            while True:
                try:
                    tx = send(result)
                except StopIteration as stop:
                    rec.result = stop.value
                    if round(pending):
                        yield from self._advance(round(pending))
                    break
                kind = tx[0]
                if kind is WORK and len(tx) == 3:  # named work: delays the next one
                    pending += work_costs[tx[1]] * tx[2]
                    result = None
                    continue
                if pending >= 1.0:  # whole cycles now; a fraction waits for more work
                    whole = int(pending)
                    pending -= whole
                    # _advance inlined (the same look-ahead rule as below).
                    due = env._now + whole
                    if lookahead and not env._waking_several and (not queue or due < queue[0][0]):
                        env._now = due
                        env.skipped += 1
                    else:
                        yield timeout(whole)
                if interrupts and env._now >= self._next_interrupt:
                    yield from self._interrupt()
                if preempt is not None:
                    pause = preempt(self, tx)
                    if pause:
                        yield from self._preempted(pause)
                if kind is LOAD:
                    result, cycles = cpu_load(index, tx[1])
                elif kind is STORE:
                    result, cycles = None, cpu_store(index, tx[1], tx[2])
                elif kind is CMPXCHG:
                    result, cycles = cpu_cmpxchg(index, tx[1], tx[2], tx[3])
                else:
                    handler = charges.get(kind)
                    if handler is None:
                        wait = blocking.get(kind)
                        if wait is None:
                            raise ValueError(f"{self.name}: unknown transaction {tx!r}")
                        result = yield from wait(tx)
                        done += 1
                        continue
                    result, cycles = handler(tx)
                if jitter:
                    cycles = self._jittered(cycles)
                if tracer is not None:
                    self._trace(tx, result, cycles)
                # Exact look-ahead (hwmodels.sim): nothing else can happen before
                # this transaction ends, so move the clock instead of an event.
                due = env._now + cycles
                if lookahead and not env._waking_several and (not queue or due < queue[0][0]):
                    env._now = due
                    env.skipped += 1
                else:
                    yield timeout(cycles)
                done += 1
        finally:
            self._record = None
            self.transactions += done
        rec.end = env.now
        self._ended(rec)
        if self._tracer is not None:
            self._tracer.emit(self.name, "op_end", op=label, result=rec.result)
        return rec.result

    def _ended(self, rec: OpRecord) -> None:
        """Count a finished operation; keep its record only if records are kept."""
        totals = self.op_totals.get(rec.label)
        if totals is None:
            totals = self.op_totals[rec.label] = [0, 0]
        totals[0] += 1
        totals[1] += rec.end - rec.start
        if self.records is not None:
            self.records.append(rec)
        for listener in self.op_listeners:
            listener(rec)

    @property
    def current_op(self) -> str | None:
        """The label of the operation executing now (None when idle)."""
        return self._record.label if self._record is not None else None

    def charge(self, tx: Transaction) -> tuple[Any, int]:
        """Perform a non-blocking transaction now; returns (its result, its cost)."""
        try:
            handler = self._charges[tx[0]]
        except KeyError:
            raise ValueError(f"{self.name} cannot charge {tx!r}: it blocks or is unknown") from None
        return handler(tx)

    # -- non-blocking transactions --------------------------------------------------

    def _load(self, tx: Transaction) -> tuple[Any, int]:
        return self.memory.cpu_load(self.index, tx[1])

    def _store(self, tx: Transaction) -> tuple[Any, int]:
        return None, self.memory.cpu_store(self.index, tx[1], tx[2])

    def _cmpxchg(self, tx: Transaction) -> tuple[Any, int]:
        return self.memory.cpu_cmpxchg(self.index, tx[1], tx[2], tx[3])

    def _flush(self, tx: Transaction) -> tuple[Any, int]:
        lines = self.memory.flush(tx[1], tx[2])
        _add(self.flush_lines, tx[3], lines)
        if self._record is not None:
            _add(self._record.flush_lines, tx[3], lines)
        return None, self.memory.flush_cycles(lines)

    def _fence(self, tx: Transaction) -> tuple[Any, int]:
        return None, self.cfg.mfence

    def _work(self, tx: Transaction) -> tuple[Any, int]:
        if len(tx) == 3:
            return None, round(self._work_costs[tx[1]] * tx[2])
        return None, tx[1]

    def _advance(self, cycles: int) -> Events:
        """Let ``cycles`` pass; the clock just moves when nothing else can act first
        (the same look-ahead rule as the transaction loop)."""
        env = self.env
        due = env._now + cycles
        queue = env._queue
        if getattr(env, "lookahead", False) and not env._waking_several and (
            not queue or due < queue[0][0]
        ):
            env._now = due
            env.skipped += 1
        else:
            yield env.timeout(cycles)

    def _alloc(self, tx: Transaction) -> tuple[Any, int]:
        memory = self.memory
        writer, memory.writer = memory.writer, self.index  # the zeroing is this CPU's
        try:
            pa = self.allocator.alloc(tx[1])
        finally:
            memory.writer = writer
        cost = self.allocator.cfg.alloc
        if pa is not None:
            cost += memory.zero_cycles(PAGE_SIZE)
        return pa, cost

    def _free(self, tx: Transaction) -> tuple[Any, int]:
        self.allocator.free(tx[1])
        return None, self.allocator.cfg.free

    def _unlock(self, tx: Transaction) -> tuple[Any, int]:
        self.locks.release(tx[1], self.index)
        return None, self.cfg.store

    def _post(self, tx: Transaction) -> tuple[Any, int]:
        self.queue.submit(tx, self.name)
        return None, self._submit

    # -- blocking transactions -------------------------------------------------------

    def _lock(self, tx: Transaction) -> Events:
        env = self.env
        req = self.locks.request(tx[1], self.index)
        if not req.triggered:
            self.lock_waits += 1
            start = env.now
            yield req
            self.lock_wait_cycles += env.now - start
        remote = self.locks.granted(tx[1], self.index, req)
        yield from self._own_cost(tx, self.cfg.cmpxchg_remote if remote else self.cfg.cmpxchg_local)

    def _await_command(self, tx: Transaction) -> Events:
        env = self.env
        done = self.queue.submit(tx, self.name)
        assert done is not None
        yield from self._own_cost(tx, self._submit)
        start = env.now
        yield done
        self.command_wait_cycles += env.now - start
        if tx[0] == WAIT_INVALIDATION:
            yield from self._advance(self.queue.cfg.wait)

    def _own_cost(self, tx: Transaction, cycles: int) -> Events:
        if self._jitter:
            cycles = self._jittered(cycles)
        if self._tracer is not None:
            self._trace(tx, None, cycles)
        yield from self._advance(cycles)  # exact look-ahead, as for every other cost

    # -- interrupts, jitter, trace -----------------------------------------------------

    def _interval(self) -> int:
        return max(1, round(self._rng.expovariate(1.0 / self.cfg.interrupts.mean_interval)))

    def _interrupt(self) -> Events:
        irq = self.cfg.interrupts
        duration = irq.duration
        if irq.distribution == "exponential" and duration:
            duration = round(self._rng.expovariate(1.0 / duration))
        self.interrupts += 1
        self.interrupt_cycles += duration
        if self._tracer is not None:
            self._tracer.emit(self.name, "interrupt", duration=duration)
        yield self.env.timeout(duration)
        self._next_interrupt = self.env.now + self._interval()

    def _preempted(self, cycles: int) -> Events:
        """Taken away by the explorer (an interrupt it chose) for ``cycles``."""
        self.preemptions += 1
        if self._tracer is not None:
            self._tracer.emit(self.name, "interrupt", duration=cycles, source="explorer")
        yield self.env.timeout(cycles)

    def _jittered(self, cycles: int) -> int:
        return max(0, cycles + self._rng.randint(-self._jitter, self._jitter))

    def _trace(self, tx: Transaction, result: Any, cost: int) -> None:
        assert self._tracer is not None
        label = self._record.label if self._record is not None else None
        fields = dict(zip(TX_FIELDS[tx[0]], tx[1:], strict=True))
        self._tracer.emit(self.name, tx[0], op=label, cost=cost, result=result, **fields)

    def stats(self) -> dict[str, float]:
        stats: dict[str, Any] = {
            "transactions": self.transactions,
            "operations": sum(n for n, _ in self.op_totals.values()),
            "interrupts": self.interrupts,
            "interrupt_cycles": self.interrupt_cycles,
            "lock_waits": self.lock_waits,
            "lock_wait_cycles": self.lock_wait_cycles,
            "command_wait_cycles": self.command_wait_cycles,
        }
        for label, (count, cycles) in self.op_totals.items():
            stats[f"ops.{label}.count"] = count
            stats[f"ops.{label}.cycles"] = cycles
        for cause in sorted(self.flush_lines):
            stats[f"flush_lines.{cause}"] = self.flush_lines[cause]
        return stats
