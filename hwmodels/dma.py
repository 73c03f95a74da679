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

How it runs. The reference model is one SimPy process per request in flight (a worker
per ``outstanding`` slot of a stream, a process per listed or fed request). On a
``SimEnvironment`` with look-ahead the same model runs inside one pipeline per device
(``hwmodels.pipeline``): the requests' waits live in the device's own queue, ordered
exactly as SimPy would order them, so look-ahead keeps applying with many requests in
flight, and runs of IOTLB hits advance without a wait each. Both give the same
results, trace and figures (tests/hwmodels/test_pipeline.py, tests/scenarios/
test_lookahead.py).

Statistics are streaming (``hwmodels.stats``): counts, a latency histogram per path;
``records`` (one ``DmaRecord`` per request) only when ``keep_records`` is set, as unit
tests do -- a scenario run keeps none, so its memory does not grow with its length.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import simpy

from .component import component_rng
from .dram import Dram
from .sim import SimEnvironment, advance
from .stats import Histogram, KeyedCounts
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
class StreamCursor:
    """What the workers of one stream share: how many requests were issued, the
    earliest cycle the next one may be, and offsets already drawn for the next ones
    (a pipeline that looked ahead at a random stream draws them early, in order)."""

    not_before: int
    issued: int = 0
    drawn: list[int] | None = None


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


Spawn = Callable[[Generator[Any, Any, Any]], Any]  # env.process, or a pipeline's
AllOf = Callable[[list[Any]], Any]  # env.all_of, or a pipeline's
RecordListener = Callable[[DmaRecord], None]


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
        keep_records: bool = True,
    ) -> None:
        self.env = env
        self.name = name
        self.domain = domain
        self.translator = translator
        self.dram = dram
        self._tracer = tracer
        self._rng = component_rng(seed, name)
        self.records: list[DmaRecord] | None = [] if keep_records else None  # completion order
        self.listeners: list[RecordListener] = []  # told of every completed request
        self.completed = 0
        self.ok = 0
        self.failed = 0
        self.latency_total = 0
        self.latency_max = 0
        self.keyed = KeyedCounts()  # path.<path>, fault.<reason>, in first-seen order
        self.ok_paths: dict[str, int] = {}  # requests translated, by path
        self.latency: dict[str, Histogram] = {}  # by path, faults under "fault"
        self.pipeline: Any = None
        if isinstance(env, SimEnvironment) and env.lookahead:
            from .pipeline import Pipeline  # the pipeline builds on this module

            self.pipeline = Pipeline(self, workload)
            self.done: simpy.Event = self.pipeline.done
            return
        if isinstance(workload, DmaStream):
            run = self._stream(workload, self._stream_process, env.all_of)
        elif isinstance(workload, DmaFeed):
            run = self._feed(workload, env.process, env.all_of)
        else:
            run = self._list(workload, env.process, env.all_of)
        self.done = env.process(run)

    # --- the workloads, written once for SimPy processes and for a pipeline ---------------
    def _list(self, requests: Sequence[DmaRequest], spawn: Spawn,
              all_of: AllOf) -> Generator[Any, Any, None]:
        procs = [spawn(self._scheduled(i, r)) for i, r in enumerate(requests)]
        yield all_of(procs)

    def _feed(self, feed: DmaFeed, spawn: Spawn, all_of: AllOf) -> Generator[Any, Any, None]:
        """Each fed request in a process of its own; the end waits for those still
        running (an ``all_of`` counts the processed ones at once: leaving them out of
        it changes nothing, and a long feed keeps no list of all its requests)."""
        procs: list[Any] = []
        index = 0
        while True:
            request = yield feed.store.get()
            if request is None:
                break
            procs.append(spawn(self._scheduled(index, request)))
            index += 1
            if len(procs) >= 64 and index % 64 == 0:
                procs = [p for p in procs if not p.processed]
        yield all_of(procs)

    def _scheduled(self, index: int, r: DmaRequest) -> Generator[simpy.Event, Any, None]:
        if r.after is not None:
            yield r.after
        if r.at is not None and r.at > self.env.now:
            yield self.env.timeout(r.at - self.env.now)
        yield from self._request(index, r.iova, r.size, r.is_write)

    def _stream(self, s: DmaStream, worker: Callable[[DmaStream, StreamCursor], Any],
                all_of: AllOf) -> Generator[Any, Any, None]:
        """``outstanding`` workers, each issuing the stream's next request as soon as
        its previous one completed, all issues at least ``gap`` apart."""
        env = self.env
        if s.start > env.now:
            yield env.timeout(s.start - env.now)
        cursor = StreamCursor(env.now)
        workers = [worker(s, cursor) for _ in range(s.outstanding)]
        yield all_of(workers)

    def _stream_process(self, s: DmaStream, cursor: StreamCursor) -> simpy.Process:
        return self.env.process(self.stream_worker(s, cursor))

    def stream_worker(
        self, s: DmaStream, cursor: StreamCursor
    ) -> Generator[simpy.Event, Any, None]:
        env = self.env
        while cursor.issued < s.count:
            if cursor.not_before > env.now:
                wait = advance(env, cursor.not_before - env.now)
                if wait is not None:
                    yield wait
                continue  # another worker may have taken the last request meanwhile
            index, iova = self.take(s, cursor)
            yield from self._request(index, iova, s.size, s.is_write)

    def take(self, s: DmaStream, cursor: StreamCursor) -> tuple[int, int]:
        """The stream's next request (index, iova), issued now."""
        index = cursor.issued
        cursor.issued += 1
        cursor.not_before = self.env.now + s.gap
        if s.pattern == "random":
            drawn = cursor.drawn
            slot = drawn.pop() if drawn else self._rng.randrange(s.length // s.size)
            return index, s.base + slot * s.size
        return index, s.base + index % (s.length // s.size) * s.size

    def _request(
        self, index: int, iova: int, size: int, is_write: bool
    ) -> Generator[simpy.Event, Any, None]:
        issue = self.env.now
        if self._tracer is not None:
            self._tracer.emit(
                self.name, "request", index=index, iova=iova, size=size, is_write=is_write
            )
        tr = yield from self.translator.translate(self.name, self.domain, iova, size, is_write)
        if tr.outcome == OK:
            yield from self.dram.access(is_write)
        self.complete(index, iova, size, is_write, issue, tr)

    # --- completion and statistics ------------------------------------------------------
    def complete(self, index: int, iova: int, size: int, is_write: bool, issue: int,
                 tr: Translation) -> None:
        """A request finished now: count it, record it if asked, trace it."""
        end = self.env.now
        self.count(tr, end - issue)
        if self.records is not None or self.listeners:
            self.tell(DmaRecord(self.name, index, iova, size, is_write, issue, end, tr))
        if self._tracer is not None:
            self._tracer.emit(
                self.name, "complete", index=index, outcome=tr.outcome, pa=tr.pa, path=tr.path,
                reason=tr.reason, level=tr.level, latency=end - issue,
            )

    def tell(self, record: DmaRecord) -> None:
        if self.records is not None:
            self.records.append(record)
        for listener in self.listeners:
            listener(record)

    def count(self, tr: Translation, latency: int, times: int = 1) -> None:
        """Count ``times`` requests that completed with ``tr`` after ``latency`` cycles."""
        self.completed += times
        self.latency_total += latency * times
        if latency > self.latency_max:
            self.latency_max = latency
        path = tr.path
        self.keyed.add("path." + path, times)
        if tr.outcome == OK:
            self.ok += times
            self.ok_paths[path] = self.ok_paths.get(path, 0) + times
            group = path
        else:
            self.failed += times
            group = "fault"
        if tr.reason is not None:
            self.keyed.add("fault." + tr.reason, times)
        hist = self.latency.get(group)
        if hist is None:
            hist = self.latency[group] = Histogram()
        hist.add(latency, times)

    def stats(self) -> dict[str, float]:
        stats: dict[str, Any] = {
            "requests": self.completed,
            "ok": self.ok,
            "faults": self.failed,
            "latency_total": self.latency_total,
            "latency_max": self.latency_max,
        }
        stats.update(self.keyed.counts)
        return stats


def latency_groups(devices: Iterable[DmaDevice]) -> dict[str, Histogram]:
    """DMA latency by how requests were served (faults under "fault"), all devices."""
    out: dict[str, Histogram] = {}
    for dev in devices:
        for group, hist in dev.latency.items():
            out.setdefault(group, Histogram()).merge(hist)
    return out
