"""DMA devices: translation requests and data accesses driven by a workload.

A device knows the IOMMU only through the ``Translator`` interface, which the walker
(``walker/``) implements: a generator that takes simulated time and returns a
``Translation`` -- never an exception for a fault. A request is translated once for
its whole ``[iova, iova + size)``; if the translation succeeds the device makes one
DRAM access (read or write, contending for DRAM channels with walker reads). The data
itself is not modelled: a request records where it went, not what it moved.

Workloads:

- an explicit list of ``DmaRequest``: each is issued independently, after its
  ``after`` event fires (if any) and not before cycle ``at`` (if any);
- a ``DmaFeed``: requests handed over while the simulation runs (a device that
  follows a CPU's maps);
- a ``DmaStream``: ``count`` requests of ``size`` bytes over ``[base, base + length)``,
  sequential (wrapping) or uniformly random (size-aligned, seeded), at most
  ``outstanding`` in flight, each issued at least ``gap`` cycles after the previous one,
  the first at cycle ``start``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import simpy

from .component import component_rng
from .dram import Dram
from .sim import advance
from .trace import Tracer

OK = "ok"
FAULT = "fault"


class Translation(NamedTuple):
    """The IOMMU's answer to one request."""

    outcome: str  # OK or FAULT
    pa: int | None = None  # the physical address of iova (OK)
    path: str = ""  # what served it: "iotlb", "walk_cache", "walk", ...
    reason: str | None = None  # FAULT: why ("not_present", "permission", ...)
    level: int | None = None  # FAULT: the table level where the walk stopped


class Translator(Protocol):
    def translate(
        self, device: str, domain: int, iova: int, size: int, is_write: bool
    ) -> Generator[simpy.Event, Any, Translation]:
        """Translate ``[iova, iova + size)`` for ``device`` (``yield from``)."""
        ...


@dataclass(frozen=True, slots=True)
class DmaRequest:
    iova: int
    size: int
    is_write: bool = False
    at: int | None = None  # not before this cycle
    after: simpy.Event | None = None  # not before this event fired


@dataclass(frozen=True, slots=True)
class DmaStream:
    base: int
    length: int  # bytes of the region, a multiple of size
    size: int  # bytes per request
    count: int
    outstanding: int = 1
    gap: int = 0  # minimum cycles between two issues
    pattern: Literal["sequential", "random"] = "sequential"
    is_write: bool = False
    start: int = 0  # cycle of the first issue

    def __post_init__(self) -> None:
        if self.size <= 0 or self.length <= 0 or self.length % self.size:
            raise ValueError("a stream needs size > 0 and a length that is a multiple of it")
        if self.count < 0 or self.outstanding < 1 or self.gap < 0 or self.start < 0:
            raise ValueError("count, gap and start must be >= 0, outstanding >= 1")


class DmaFeed:
    """Requests handed to a device while the simulation runs; ``close`` ends the feed.

    This is how a device follows a CPU: each time the CPU maps a buffer, the driver
    hands the device a request for it.
    """

    def __init__(self, env: simpy.Environment) -> None:
        self.store: simpy.Store = simpy.Store(env)

    def put(self, request: DmaRequest) -> None:
        self.store.put(request)

    def close(self) -> None:
        self.store.put(None)


@dataclass(slots=True)
class _StreamCursor:
    """What the workers of one stream share: how many requests were issued, and the
    earliest cycle the next one may be."""

    not_before: int
    issued: int = 0


@dataclass(slots=True)
class DmaRecord:
    device: str
    index: int  # position in the workload
    iova: int
    size: int
    is_write: bool
    issue: int
    end: int
    translation: Translation

    @property
    def latency(self) -> int:
        return self.end - self.issue


class DmaDevice:
    """Issues its workload's requests; ``done`` fires when all of them completed."""

    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        *,
        domain: int,
        translator: Translator,
        dram: Dram,
        workload: Sequence[DmaRequest] | DmaStream | DmaFeed,
        seed: int = 0,
        tracer: Tracer | None = None,
    ) -> None:
        self.env = env
        self.name = name
        self.domain = domain
        self.translator = translator
        self.dram = dram
        self._tracer = tracer
        self._rng = component_rng(seed, name)
        self.records: list[DmaRecord] = []  # in completion order
        if isinstance(workload, DmaStream):
            run = self._stream(workload)
        elif isinstance(workload, DmaFeed):
            run = self._feed(workload)
        else:
            run = self._list(workload)
        self.done = env.process(run)

    def _list(self, requests: Sequence[DmaRequest]) -> Generator[simpy.Event, Any, None]:
        procs = [self.env.process(self._scheduled(i, r)) for i, r in enumerate(requests)]
        yield self.env.all_of(procs)

    def _feed(self, feed: DmaFeed) -> Generator[simpy.Event, Any, None]:
        procs = []
        while True:
            request = yield feed.store.get()
            if request is None:
                break
            procs.append(self.env.process(self._scheduled(len(procs), request)))
        yield self.env.all_of(procs)

    def _scheduled(self, index: int, r: DmaRequest) -> Generator[simpy.Event, Any, None]:
        if r.after is not None:
            yield r.after
        if r.at is not None and r.at > self.env.now:
            yield self.env.timeout(r.at - self.env.now)
        yield from self._request(index, r.iova, r.size, r.is_write)

    def _stream(self, s: DmaStream) -> Generator[simpy.Event, Any, None]:
        """``outstanding`` workers, each issuing the stream's next request as soon as
        its previous one completed, all issues at least ``gap`` apart."""
        env = self.env
        if s.start > env.now:
            yield env.timeout(s.start - env.now)
        cursor = _StreamCursor(env.now)
        workers = [env.process(self._stream_worker(s, cursor)) for _ in range(s.outstanding)]
        yield env.all_of(workers)

    def _stream_worker(
        self, s: DmaStream, cursor: _StreamCursor
    ) -> Generator[simpy.Event, Any, None]:
        env = self.env
        slots_in_region = s.length // s.size
        while cursor.issued < s.count:
            if cursor.not_before > env.now:
                wait = advance(env, cursor.not_before - env.now)
                if wait is not None:
                    yield wait
                continue  # another worker may have taken the last request meanwhile
            index = cursor.issued
            cursor.issued += 1
            cursor.not_before = env.now + s.gap
            if s.pattern == "random":
                offset = self._rng.randrange(slots_in_region) * s.size
            else:
                offset = index % slots_in_region * s.size
            yield from self._request(index, s.base + offset, s.size, s.is_write)

    def _request(
        self, index: int, iova: int, size: int, is_write: bool
    ) -> Generator[simpy.Event, Any, None]:
        env = self.env
        issue = env.now
        if self._tracer is not None:
            self._tracer.emit(
                self.name, "request", index=index, iova=iova, size=size, is_write=is_write
            )
        tr = yield from self.translator.translate(self.name, self.domain, iova, size, is_write)
        if tr.outcome == OK:
            yield from self.dram.access(is_write)
        self.records.append(DmaRecord(self.name, index, iova, size, is_write, issue, env.now, tr))
        if self._tracer is not None:
            self._tracer.emit(
                self.name, "complete", index=index, outcome=tr.outcome, pa=tr.pa, path=tr.path,
                reason=tr.reason, level=tr.level, latency=env.now - issue,
            )

    def stats(self) -> dict[str, float]:
        stats: dict[str, Any] = {
            "requests": len(self.records),
            "ok": sum(r.translation.outcome == OK for r in self.records),
            "faults": sum(r.translation.outcome == FAULT for r in self.records),
            "latency_total": sum(r.latency for r in self.records),
            "latency_max": max((r.latency for r in self.records), default=0),
        }
        for r in self.records:
            key = f"path.{r.translation.path}"
            stats[key] = stats.get(key, 0) + 1
            if r.translation.reason is not None:
                key = f"fault.{r.translation.reason}"
                stats[key] = stats.get(key, 0) + 1
        return stats
