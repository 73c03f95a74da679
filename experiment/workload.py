"""CPU and device workloads of a scenario, as SimPy processes on the machine.

Named events (``signal`` / ``wait`` / ``after``) are SimPy events shared by all CPUs
and devices. A CPU runs its ops in order, each page-table op on its timed core;
``map_range_random`` picks free, aligned places in its region (seeded per CPU) and
``unmap_all`` removes everything that CPU mapped.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import simpy

from ..hwmodels.cpu import CpuCore
from ..hwmodels.dma import DmaDevice, DmaFeed, DmaRequest, DmaStream
from ..hwmodels.dram import Dram
from ..hwmodels.sim import RunLimit
from ..hwmodels.trace import Tracer
from ..scenarios.schema import CpuSpec, DeviceSpec, MapRandomSpec, Op, prot_bits
from ..walker import Iommu
from .table import Table

Events = Generator[simpy.Event, Any, None]


class Signals:
    """Named events, created on first use."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._events: dict[str, simpy.Event] = {}

    def __getitem__(self, name: str) -> simpy.Event:
        event = self._events.get(name)
        if event is None:
            event = self._events[name] = self.env.event()
        return event

    def fire(self, name: str) -> None:
        event = self[name]
        if not event.triggered:
            event.succeed()


def wait_start(env: simpy.Environment, signals: Signals, start: int, after: str | None) -> Events:
    """Wait until cycle ``start`` and, if named, the event ``after``."""
    if after is not None:
        yield signals[after]
    if start > env.now:
        yield env.timeout(start - env.now)


class Barriers:
    """Named barriers: each use waits until every CPU that uses the name arrived.

    A barrier is reusable: inside a ``repeat`` it synchronises every round.
    """

    def __init__(self, env: simpy.Environment, parties: dict[str, int]) -> None:
        self.env = env
        self.parties = parties
        self._arrived: dict[str, int] = {}
        self._events: dict[str, simpy.Event] = {}

    def wait(self, name: str) -> simpy.Event:
        event = self._events.get(name)
        if event is None:
            event = self._events[name] = self.env.event()
        self._arrived[name] = self._arrived.get(name, 0) + 1
        if self._arrived[name] == self.parties[name]:
            del self._events[name]
            self._arrived[name] = 0
            event.succeed()
        return event


def barrier_parties(cpus: list[CpuSpec]) -> dict[str, int]:
    """How many CPUs use each barrier name."""
    parties: dict[str, int] = {}

    def names(ops: list[Op]) -> set[str]:
        found = {op.barrier for op in ops if op.barrier is not None}
        for op in ops:
            if op.repeat is not None:
                found |= names(op.repeat.ops)
        return found

    for cpu in cpus:
        for name in names(cpu.ops):
            parties[name] = parties.get(name, 0) + 1
    return parties


class Placer:
    """Chooses non-overlapping, size-aligned places for random maps (shared by CPUs)."""

    def __init__(self) -> None:
        self.used: list[tuple[int, int]] = []

    def place(self, rng: random.Random, spec: MapRandomSpec, size: int) -> int | None:
        slots = spec.region.size // size
        for _ in range(64):
            iova = spec.region.base + rng.randrange(slots) * size
            if all(iova + size <= a or b <= iova for a, b in self.used):
                self.used.append((iova, iova + size))
                return iova
        return None

    def release(self, iova: int, size: int) -> None:
        self.used.remove((iova, iova + size))


MapListener = Callable[[int, int, int], None]  # (iova, pa, size) of a completed map


class Mapped:
    """The (iova, size) a CPU mapped, in order, for ``unmap_all``: kept as runs of equal
    sizes at a constant stride (a ``repeat`` of maps is one run), so a long run of
    maps does not grow the list."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []  # [first iova, size, stride, count]

    def append(self, item: tuple[int, int]) -> None:
        iova, size = item
        if self.runs:
            run = self.runs[-1]
            if run[1] == size and (run[3] == 1 or iova == run[0] + run[2] * run[3]):
                if run[3] == 1:
                    run[2] = iova - run[0]
                run[3] += 1
                return
        self.runs.append([iova, size, 0, 1])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for first, size, stride, count in self.runs:
            for k in range(count):
                yield first + k * stride, size

    def __len__(self) -> int:
        return sum(run[3] for run in self.runs)

    def clear(self) -> None:
        self.runs.clear()


def scans_dirty(ops: list[Op]) -> bool:
    """Whether a CPU's ops read and clear dirty bits (the dirty-log oracle watches)."""
    return any(op.kind == "read_and_clear_dirty"
               or (op.kind == "repeat" and scans_dirty(op.body.ops)) for op in ops)


@dataclass(frozen=True, slots=True)
class DirtyScan:
    """One read_and_clear_dirty: when it ran, what it covered, the runs it reported."""

    start: int
    end: int
    iova: int
    size: int
    runs: tuple[tuple[int, int], ...]  # (iova, length) reported dirty


class CpuRunner:
    """Everything one scenario CPU does, in order, on its timed core.

    ``listeners`` hear of every successful map as it returns (devices that follow
    this CPU, the visibility oracle); ``unmap_listeners`` of every unmap as it returns
    (iova, bytes it removed from there, start cycle), its IOTLB sync included;
    ``closers`` run when the CPU has no more work.
    """

    def __init__(
        self,
        spec: CpuSpec,
        core: CpuCore,
        pt: Table,
        signals: Signals,
        barriers: Barriers,
        placer: Placer,
        rng: random.Random,
    ) -> None:
        self.spec = spec
        self.barriers = barriers
        self.core = core
        self.pt = pt
        self.signals = signals
        self.placer = placer
        self.rng = rng
        self.listeners: list[MapListener] = []
        self.unmap_listeners: list[Callable[[int, int, int], None]] = []
        self.closers: list[Callable[[], None]] = []
        self.mapped = Mapped()
        self.op_size = 0  # bytes of the map or unmap executing (statistics group by it)
        # Told of every read_and_clear_dirty that succeeded, as it returns.
        self.scan_listeners: list[Callable[[DirtyScan], None]] = []
        self.scans_dirty = scans_dirty(spec.ops)
        # The run limit (set by assembly.build) and how far the CPU got, for the
        # message when it stops early: operations started, what it waits for.
        self.limit: RunLimit | None = None
        self.ops_done = 0
        self.ops_total = count_ops(spec.ops)
        self.op_kind = ""
        self.waiting: str | None = None
        self._still_at = -1
        self._still_ops = 0
        self._transactions = 0

    def program(self) -> Events:
        spec = self.spec
        try:
            yield from wait_start(self.core.env, self.signals, spec.start, spec.after)
            yield from self.run_ops(spec.ops, 0)
        finally:
            for close in self.closers:
                close()

    def _map(self, iova: int, pa: int, size: int, prot: str) -> Events:
        self.op_size = size
        ret = yield from self.core.execute(self.pt.map_op(iova, pa, size, prot_bits(prot)), "map")
        if ret == 0:
            self.mapped.append((iova, size))
            for listener in self.listeners:
                listener(iova, pa, size)
        return ret

    def _unmap(self, iova: int, size: int) -> Events:
        start = self.core.env.now
        self.op_size = size
        ret = yield from self.core.execute(self.pt.unmap_op(iova, size), "unmap")
        gone = ret if isinstance(ret, int) and ret > size else size  # a whole large leaf
        for listener in self.unmap_listeners:
            listener(iova, gone, start)
        return ret

    def progress(self) -> str:
        """How far the CPU got: "operation 3 of 5: wait, waiting for 'done'"."""
        where = f"operation {self.ops_done:,} of {self.ops_total:,}"
        where += f": {self.op_kind}" if self.op_kind else ""
        return f"{where}, {self.waiting}" if self.waiting else where

    def _tick(self, kind: str) -> bool:
        """Count one operation (and the transactions before it) against the run limit;
        True when the run must stop here. A CPU that runs ``limit.still`` operations
        without the clock moving is named as the one that kept it still."""
        self.ops_done += 1
        self.op_kind = kind
        limit = self.limit
        if limit is None:
            return False
        now = self.core.env.now
        if now != self._still_at:
            self._still_at, self._still_ops = now, 0
        self._still_ops += 1
        transactions = self.core.transactions
        limit.used += 1 + transactions - self._transactions
        self._transactions = transactions
        if self._still_ops > limit.still:
            limit.stop(f"{self.spec.name} kept the clock at cycle {now:,} for "
                       f"{limit.still:,} operations ({self.progress()})")
        return limit.spent()

    def _wait(self, event: simpy.Event, what: str) -> Events:
        self.waiting = what
        yield event
        self.waiting = None

    def run_ops(self, ops: list[Op], offset: int) -> Events:
        core, pt, env = self.core, self.pt, self.core.env
        for op in ops:
            kind, body = op.kind, op.body
            if kind != "repeat" and self._tick(kind):
                assert self.limit is not None
                yield self.limit.halt  # the run is over: wait for nothing
            if kind == "map":
                yield from self._map(body.iova + offset, body.pa + offset, body.size, body.prot)
            elif kind == "unmap":
                yield from self._unmap(body.iova + offset, body.size)
            elif kind == "signal":
                self.signals.fire(body)
            elif kind == "wait":
                yield from self._wait(self.signals[body], f"waiting for {body!r}")
            elif kind == "barrier":
                yield from self._wait(self.barriers.wait(body), f"at barrier {body!r}")
            elif kind == "delay":
                yield env.timeout(body)
            elif kind == "map_range_random":
                yield from self._map_random(body)
            elif kind == "unmap_all":
                for iova, size in self.mapped:
                    yield from self._unmap(iova, size)
                self.mapped.clear()
            elif kind == "read_and_clear_dirty":
                iova, start = body.iova + offset, env.now
                op_gen = pt.read_and_clear_dirty_op(iova, body.size, body.no_clear)
                ret, runs = yield from core.execute(op_gen, "read_and_clear_dirty")
                if ret == 0:
                    scan = DirtyScan(start, env.now, iova, body.size, tuple(runs))
                    for listener in self.scan_listeners:
                        listener(scan)
            elif kind == "repeat":
                for k in range(body.count):
                    yield from self.run_ops(body.ops, offset + k * body.stride)

    def _map_random(self, spec: MapRandomSpec) -> Events:
        for i in range(spec.count):
            if i and self._tick("map_range_random"):
                assert self.limit is not None
                yield self.limit.halt
            size = self.rng.choice(spec.sizes)
            iova = self.placer.place(self.rng, spec, size)
            if iova is None:
                break  # the region is full
            pa = spec.pa_base + (iova - spec.region.base)
            ret = yield from self._map(iova, pa, size, spec.prot)
            if ret != 0:
                self.placer.release(iova, size)


def count_ops(ops: list[Op]) -> int:
    """Operations a CPU runs: a ``repeat`` counts its ops ``count`` times, a
    ``map_range_random`` its maps."""
    total = 0
    for op in ops:
        if op.kind == "repeat":
            total += op.body.count * count_ops(op.body.ops)
        elif op.kind == "map_range_random":
            total += op.body.count
        else:
            total += 1
    return total


def device_program(
    spec: DeviceSpec,
    env: simpy.Environment,
    signals: Signals,
    iommu: Iommu,
    dram: Dram,
    domain: int,
    seed: int,
    tracer: Tracer | None,
    devices: list[DmaDevice],
    feed: DmaFeed | None = None,
    watch: Callable[[DmaDevice], None] | None = None,
    keep_records: bool = False,
) -> Events:
    """Start a device's explicit DMAs, its stream and its follower feed once the
    device itself starts (each a DMA engine of its own, named after the device,
    keeping statistics but no records; ``watch`` sees each engine as it starts)."""
    yield from wait_start(env, signals, spec.start, spec.after)
    done = []

    def engine(workload: Any) -> None:
        dev = DmaDevice(env, spec.name, domain=domain, translator=iommu, dram=dram,
                        workload=workload, seed=seed, tracer=tracer,
                        keep_records=keep_records)
        if watch is not None:
            watch(dev)
        devices.append(dev)
        done.append(dev.done)

    if feed is not None:
        engine(feed)
    if spec.dma:
        engine([
            DmaRequest(d.iova, d.size, d.access == "write", at=d.at,
                       after=signals[d.after] if d.after is not None else None)
            for d in spec.dma
        ])
    if spec.stream is not None:
        st = spec.stream
        yield from wait_start(env, signals, st.start, st.after)
        engine(DmaStream(
            st.region.base, st.region.size, st.size, st.count, outstanding=st.outstanding,
            gap=st.gap, pattern=st.pattern, is_write=st.access == "write", start=env.now,
        ))
    if done:
        yield env.all_of(done)
