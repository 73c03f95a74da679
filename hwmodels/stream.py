"""A DMA stream's workers inside a device pipeline, as state machines.

The reference worker (``DmaDevice.stream_worker``) is a generator: take the stream's
next request, translate it (``walker.Iommu.translate``: link, IOTLB lookup, hit
latency, the translation or a walk, link back, truth check), access DRAM, record, and
loop. Here each worker is a small object whose heap entries name the phase it waits
in, and ``Stream.run`` carries it from phase to phase calling the walker's own phase
methods (``decide``, ``walk_path``, ``check_truth``) in the generator's order: the
same side effects at the same cycles, the same waits, each queued with the key its
timeout would have had. A request's walk (or a DRAM access that may wait for a
channel) runs as a generator (a pipeline ``Task``: the walker's ``walk_path``); the
worker goes on here when it returns.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from simpy.events import NORMAL, URGENT

from .dma import OK, DmaStream, StreamCursor, Translation
from .pipeline import WORKER, Pipeline, Task

if TYPE_CHECKING:
    from .pipeline import Group

TOP = WORKER  # at the top of the loop: its Initialize, or a wait for the gap
LOOKUP = WORKER + 1  # the link to the IOMMU is crossed: look the request up
DECIDE = WORKER + 2  # the hit latency passed: the lookup's answer
FINISH = WORKER + 3  # the link back is crossed: truth check, then DRAM
DONE = WORKER + 4  # the DRAM access is over: complete
WALKED = WORKER + 5  # a walk answered (never queued: the link back is waited at once)
# An eager request (see Stream._eager) waits the same waits without acting:
G_LINK = WORKER + 6  # its link is crossed
G_HIT = WORKER + 7  # its hit latency passed
G_BACK = WORKER + 8  # its link back is crossed
G_DONE = WORKER + 9  # its DRAM access is over: complete
IDLE_KINDS = frozenset((TOP, G_LINK, G_HIT, G_BACK, G_DONE))  # no exact request waits


class Worker:
    """One ``outstanding`` slot of a stream: a process of the reference model."""

    __slots__ = ("index", "iova", "issue", "lookup", "processed", "stream", "tr", "waiters")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.processed = False
        self.waiters: list[Group] = []
        self.index = 0
        self.iova = 0
        self.issue = 0
        self.lookup: Any = None
        self.tr: Translation | None = None


class Stream:
    """The workers of one ``DmaStream`` and what they share."""

    def __init__(self, pipeline: Pipeline, s: DmaStream, cursor: StreamCursor) -> None:
        self.pipeline = pipeline
        self.env = pipeline.env
        self.s = s
        self.cursor = cursor
        self.device = dev = pipeline.device
        self.iommu = iommu = dev.translator
        self.name = dev.name
        self.domain = dev.domain
        self.size = s.size
        self.is_write = s.is_write
        self.link = iommu.cfg.link  # type: ignore[attr-defined]
        self.hit = iommu.cfg.iotlb.hit  # type: ignore[attr-defined]
        self.lookup = iommu.iotlb.lookup  # type: ignore[attr-defined]
        self.dram = dev.dram
        self.tracer = dev._tracer
        # Requests acting at their own cycles whose lookup has yet to be answered by a
        # translation (or fault) without a walk: an eager request must not pass them.
        self.blocking = 0
        self.pushes = 0  # waits queued in the heap (each took an event id)
        dram = dev.dram.cfg
        self.dram_latency = dram.write if s.is_write else dram.read
        self.latency = 2 * self.link + self.hit + self.dram_latency  # an IOTLB hit's
        # Requests run eagerly (below) only where nothing can watch them act early.
        self.eager = self.tracer is None and not dram.channels and hasattr(iommu, "hit_pa")
        self.has_truth = getattr(iommu, "truth", None) is not None
        self.hit_tr = Translation(OK, None, "iotlb")
        from .hitrun import HitRuns  # the arithmetic runs build on this module

        self.runs = HitRuns(self)

    def worker(self) -> Worker:
        """A new worker process: its Initialize is due now (urgent)."""
        w = Worker(self)
        self.pipeline.push_now(URGENT, TOP, w)
        return w

    def _wait(self, w: Worker, cycles: int, kind: int) -> bool:
        """Wait ``cycles`` in phase ``kind``: False when skipped (go on now), True when
        queued (the pipeline resumes the worker). The rule of ``Pipeline.wait``."""
        env = self.env
        due = env._now + cycles
        if not env._waking_several and env.skipped < env.skip_limit:
            queue, heap = env._queue, self.pipeline.heap
            if (not queue or due < queue[0][0]) and (not heap or due < heap[0][0]):
                env._now = due
                env.skipped += 1
                return False
        self.pipeline.push((due, NORMAL, next(env._eid), kind, w))
        self.pushes += 1
        return True

    def run(self, w: Worker, kind: int) -> None:
        """Carry ``w`` on from the phase ``kind`` until it waits again. Inlined phase
        by phase: this is the hot path of a pipelined stream."""
        while True:
            if kind >= G_LINK:  # an eager request: the same waits, nothing else
                if kind == G_LINK:
                    if self._wait(w, self.hit, G_HIT):
                        return
                    kind = G_HIT
                if kind == G_HIT:
                    if self._wait(w, self.link, G_BACK):
                        return
                    kind = G_BACK
                if kind == G_BACK and self._wait(w, self.dram_latency, G_DONE):
                    return
                assert w.tr is not None
                self.device.complete(w.index, w.iova, self.size, self.is_write, w.issue, w.tr)
                w.tr = None
                kind = TOP
            if kind == TOP:
                kind = self._top(w)
                if not kind:
                    return
                if kind >= G_LINK:
                    continue
            if kind == LOOKUP:
                w.lookup = self.lookup(self.domain, w.iova)
                if self._wait(w, self.hit, DECIDE):
                    return
                kind = DECIDE
            if kind == DECIDE:
                tr = self.iommu.decide(self.name, self.domain, w.iova, self.is_write, w.lookup)
                w.lookup = None
                if tr is None:  # walk (or wait for a walk) as a generator, then on here
                    self._slow(w, self.iommu.walk_path(  # type: ignore[attr-defined]
                        self.name, self.domain, w.iova, self.is_write), WALKED)
                    return
                self.blocking -= 1
                w.tr = tr
                if self._wait(w, self.link, FINISH):
                    return
                kind = FINISH
            if kind == WALKED:
                if self._wait(w, self.link, FINISH):
                    return
                kind = FINISH
            if kind == FINISH:
                tr = w.tr
                assert tr is not None
                self.iommu.check_truth(self.name, self.domain, w.iova, w.issue, tr)
                if tr.outcome == OK:
                    latency = self.dram.uncontended(self.is_write)
                    if latency is None:
                        self._slow(w, self.dram.access(self.is_write), DONE)
                        return
                    if self._wait(w, latency, DONE):
                        return
                kind = DONE
            # DONE
            assert w.tr is not None
            self.device.complete(w.index, w.iova, self.size, self.is_write, w.issue, w.tr)
            w.tr = None
            kind = TOP

    def _top(self, w: Worker) -> int:
        """The top of the worker's loop: end, wait for the gap, or issue the next
        request and cross the link. Returns the phase to go on with (0: it waits)."""
        env, s, cursor = self.env, self.s, self.cursor
        while True:
            if cursor.issued >= s.count:
                self.pipeline.end(w)
                return 0
            if cursor.not_before > env._now:
                if self._wait(w, cursor.not_before - env._now, TOP):
                    return 0
                continue
            eager = self.eager and not self.blocking and self.pipeline.looping
            if eager:
                self.runs.at_top()  # may advance whole periods of hits at once
            w.index, w.iova = self.device.take(s, cursor)
            w.issue = env._now
            if eager and self._eager(w):
                if self._wait(w, self.link, G_LINK):
                    return 0
                return G_LINK
            self.blocking += 1
            self.runs.exact_issues += 1
            if self.tracer is not None:
                self.tracer.emit(self.name, "request", index=w.index, iova=w.iova,
                                 size=self.size, is_write=self.is_write)
            if self._wait(w, self.link, LOOKUP):
                return 0
            return LOOKUP

    def _eager(self, w: Worker) -> bool:
        """Run ``w``'s new request now, if it is an IOTLB hit that must come out as it
        would at its own cycles: the hit is usable (no fault, no walk), the truth check
        passes, its DRAM access cannot wait, it completes before anything outside this
        device can act (SimPy's next event), and no request of this stream acting at
        its own cycles is in flight. Then nothing can come between its acts but this
        stream's own: later eager hits (their lookups follow this one, in index order,
        as at their cycles), issues (which touch the cursor only) and the walks of
        requests issued later (their lookups and fills follow this lookup, their A/D
        writes cannot change where this request's page maps). So its lookup, DRAM count
        and translation are done now; it then waits the same waits, queued as before,
        and completes -- counted and recorded -- at its own cycle."""
        env = self.env
        queue = env._queue
        if queue and env._now + self.latency >= queue[0][0]:
            return False
        iova = w.iova
        pa = self.iommu.hit_pa(self.domain, iova, self.is_write)  # type: ignore[attr-defined]
        if pa is None or (self.has_truth and self.iommu.true_pa(  # type: ignore[attr-defined]
                self.domain, iova) != pa):
            return False
        self.lookup(self.domain, iova)
        self.dram.uncontended(self.is_write)
        w.tr = Translation(OK, pa, "iotlb")
        return True

    # --- the rest of a request as a generator -----------------------------------------
    def _slow(self, w: Worker, gen: Generator[Any, Any, Any], then: int) -> None:
        """Run ``gen`` (a walk, or a DRAM access that may wait for a channel) as a task;
        when it returns, carry the worker on at phase ``then`` in the same breath."""
        def done(value: Any) -> None:
            if then == WALKED:  # the request has its answer: it no longer blocks
                self.blocking -= 1
                w.tr = value
            self.run(w, then)

        self.pipeline.step(Task(self.pipeline, gen, done), None)
