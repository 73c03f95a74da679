"""The direct executor and the interleaver: transactions performed at once, no time.

The direct executor gives the synchronous ``PageTable`` API its world: one memory
(optionally with a separate hardware view), the table-page allocator, named locks
and a log of the IOMMU commands the driver glue sent.

The interleaver runs several operation generators -- several CPUs -- against one
executor, one transaction at a time, in an order given explicitly (a list of CPU
indices) or drawn from a seeded random generator. Because page-table code only
interacts through transactions, every interleaving a real machine could produce is
some such order.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from typing import Any

from .memory import Memory, PageAllocator, PagedWords
from .transactions import (
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
    UNLOCK,
    WAIT_INVALIDATION,
    WORK,
    Transaction,
)

Operation = Generator[Transaction, Any, Any]


class Blocked(Exception):
    """The transaction cannot run now: the lock it asks for is held by another CPU."""


class DirectExecutor:
    """Performs transactions immediately on one memory."""

    def __init__(
        self,
        memory: Memory | None = None,
        allocator: PageAllocator | None = None,
        *,
        two_views: bool = False,
    ) -> None:
        self.memory = memory if memory is not None else Memory(two_views=two_views)
        self.allocator = allocator if allocator is not None else PageAllocator(self.memory)
        self.lock_owner: dict[str, int] = {}
        self.commands: list[Transaction] = []
        self.roots: dict[int, tuple[int, int]] = {}
        self.counts: Counter[str] = Counter()
        self.flush_lines: Counter[str] = Counter()
        self.flush_bytes: Counter[str] = Counter()

    def execute(self, tx: Transaction, cpu: int = 0) -> Any:
        kind = tx[0]
        self.counts[kind] += 1
        mem = self.memory
        if kind is LOAD:
            return mem.load(tx[1])
        if kind is STORE:
            mem.store(tx[1], tx[2])
            return None
        if kind is CMPXCHG:
            return mem.cmpxchg(tx[1], tx[2], tx[3])
        if kind is FLUSH:
            self.flush_lines[tx[3]] += mem.flush(tx[1], tx[2])
            self.flush_bytes[tx[3]] += tx[2]
            return None
        if kind is FENCE or kind is WORK:
            return None
        if kind is ALLOC_TABLE:
            return self.allocator.alloc(tx[1])
        if kind is FREE_TABLE:
            self.allocator.free(tx[1])
            return None
        if kind is LOCK:
            owner = self.lock_owner.get(tx[1])
            if owner is not None:
                raise Blocked(tx[1])
            self.lock_owner[tx[1]] = cpu
            return None
        if kind is UNLOCK:
            if self.lock_owner.get(tx[1]) != cpu:
                raise RuntimeError(f"CPU {cpu} unlocks {tx[1]!r}, which it does not hold")
            del self.lock_owner[tx[1]]
            return None
        if kind is CHANGE_TOP:
            self.roots[tx[1]] = (tx[2], tx[3])
            self.commands.append(tx)
            return None
        if kind in (INVALIDATE_RANGE, INVALIDATE_ALL, FLUSH_WRITE_BUFFER, WAIT_INVALIDATION):
            self.commands.append(tx)
            return None
        raise ValueError(f"unknown transaction {tx!r}")

    def would_block(self, tx: Transaction, cpu: int) -> bool:
        if tx[0] is not LOCK:
            return False
        owner = self.lock_owner.get(tx[1])
        return owner is not None and owner != cpu

    def run(self, op: Operation, cpu: int = 0) -> Any:
        """Run one operation to completion and return its result."""
        execute = self.execute
        send = op.send
        try:
            tx = next(op)
            while True:
                try:
                    result = execute(tx, cpu)
                except Blocked as blocked:
                    raise RuntimeError(f"deadlock: lock {blocked} is already held") from None
                tx = send(result)
        except StopIteration as stop:
            return stop.value


def without_named_work(op: Operation) -> Operation:
    """``op`` with its named work taken out: the transactions an ``Interleaver``
    steps through, for counting a schedule's steps by running ``op`` alone."""
    result: Any = None
    while True:
        try:
            tx = op.send(result)
        except StopIteration as stop:
            return stop.value
        if tx[0] is WORK and len(tx) == 3:
            result = None
            continue
        result = yield tx


def _send_past_named_work(op: Operation, value: Any) -> Transaction:
    """``op.send(value)``, then on past named work: it is instruction time, never a
    point where another CPU may interleave (tables.work), so it is not a step."""
    tx = op.send(value)
    while tx[0] is WORK and len(tx) == 3:
        tx = op.send(None)
    return tx


class Interleaver:
    """Runs several operations on one executor, switching CPUs between transactions.

    ``run(programs, schedule=[0, 0, 1, ...])`` executes transactions in exactly that
    order of CPU indices; ``seed=`` picks each next CPU uniformly among the runnable
    ones. A schedule may be followed by a seed (random after the prefix); with
    neither, CPUs run to completion in index order. ``steps`` records the CPU of every
    executed transaction, so any random run can be replayed as an explicit schedule.
    ``on_return(cpu, result)`` is called the moment an operation returns, while the
    others are still wherever they stopped. Named work (``(WORK, name, count)``) is
    not a step: it is never an interleaving point, so adding it to table code leaves
    every schedule as it was.
    """

    def __init__(self, executor: DirectExecutor) -> None:
        self.executor = executor
        self.steps: list[int] = []

    def run(
        self,
        programs: Sequence[Operation],
        *,
        schedule: Sequence[int] = (),
        seed: int | None = None,
        on_return: Callable[[int, Any], None] | None = None,
        max_steps: int = 10_000_000,
    ) -> list[Any]:
        ex = self.executor
        n = len(programs)
        pending: list[Transaction | None] = [None] * n
        results: list[Any] = [None] * n
        done = [False] * n
        self.steps = []

        def advance(cpu: int, value: Any) -> None:
            try:
                pending[cpu] = _send_past_named_work(programs[cpu], value)
            except StopIteration as stop:
                done[cpu] = True
                pending[cpu] = None
                results[cpu] = stop.value
                if on_return is not None:
                    on_return(cpu, stop.value)

        def runnable(cpu: int) -> bool:
            tx = pending[cpu]
            return not done[cpu] and tx is not None and not ex.would_block(tx, cpu)

        def step(cpu: int) -> None:
            tx = pending[cpu]
            assert tx is not None
            self.steps.append(cpu)
            advance(cpu, ex.execute(tx, cpu))

        for cpu in range(n):
            advance(cpu, None)

        for k, cpu in enumerate(schedule):
            if not 0 <= cpu < n:
                raise ValueError(f"schedule step {k} names CPU {cpu}; there are {n}")
            if done[cpu]:
                raise ValueError(f"schedule step {k} names CPU {cpu}, which has finished")
            if not runnable(cpu):
                raise ValueError(f"schedule step {k} names CPU {cpu}, which waits for a lock")
            step(cpu)

        rng = random.Random(seed) if seed is not None else None
        while not all(done):
            if len(self.steps) >= max_steps:
                raise RuntimeError(f"no completion after {max_steps} transactions")
            ready = [cpu for cpu in range(n) if runnable(cpu)]
            if not ready:
                raise RuntimeError("deadlock: every unfinished CPU waits for a lock")
            step(rng.choice(ready) if rng is not None else ready[0])
        return results


class ViewExecutor:
    """Runs a read-only operation against one view's words, with no side effects.

    Used to ask what the hardware (DRAM) view holds, or what the CPU view holds
    without disturbing a timed cache model.
    """

    def __init__(self, words: PagedWords) -> None:
        self.words = words

    def run(self, op: Operation) -> Any:
        words = self.words
        pages = words.pages
        try:
            tx = next(op)
            while True:
                if tx[0] is LOAD:
                    pa = tx[1]
                    page = pages.get(pa >> 12)  # PagedWords.get inlined
                    if page is None or pa & 7:
                        tx = op.send(words.get(pa, 0))
                    else:
                        tx = op.send(page[(pa & 4095) >> 3])
                elif tx[0] is WORK:
                    tx = op.send(None)
                else:
                    raise RuntimeError(f"{tx[0]} in a read-only walk")
        except StopIteration as stop:
            return stop.value
