"""A DMA device's requests in one pipeline: SimPy's event order without a process each.

The reference model of a device (``hwmodels.dma``) is one SimPy process per request in
flight. With several requests in flight the exact look-ahead (``hwmodels.sim``) almost
never applies: the other requests' waits are always in SimPy's queue, often at the same
cycle, so every wait costs an event. A pipeline runs the same model with the device's
waits in a queue of its own:

- Every wait of one of the device's requests becomes an entry of the pipeline's heap
  with the key SimPy would have given its timeout, ``(cycle, priority, event id)`` --
  the id is taken from SimPy's own counter at the same moment. The processes' start
  (``Initialize``, urgent) and end events and the ``all_of`` that waits for them are
  entries too. So the union of SimPy's queue and the pipeline's heap is, entry for
  entry, the queue of the reference model, and the pipeline processes its entries in
  exactly that order: an entry runs when its key is below the first key in SimPy's
  queue; otherwise the pipeline sleeps.
- While entries remain, a ``Wake`` sits in SimPy's queue at the key of the earliest
  one: everyone else's look-ahead sees the device's next event as it saw the worker's
  timeout. A wake that became early (an entry added later with a smaller key gets its
  own wake) only wakes the pipeline to find nothing due: a step, no event id, nothing
  else changes. Wakes never use a new id, so ``sim.events`` is unchanged.
- A wait whose end comes before every entry of both queues is skipped, as look-ahead
  does (``advance`` hands the pipeline's requests to ``Pipeline.wait``).
- Waits on real events (a walker slot, a DRAM channel, a walk of the same page, a feed,
  a DMA's ``after``) stay SimPy events: the request is resumed from the event's
  callbacks, at the place in its callback list the process would have had.

The requests of a stream run as state machines (``hwmodels.stream``); list and feed
requests, a stream's walks and contended DRAM accesses run as generators (``Task``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

import simpy
from simpy.events import NORMAL, URGENT

from .dma import DmaFeed, DmaStream, StreamCursor

if TYPE_CHECKING:
    from .dma import DmaDevice, DmaRequest

# Kinds of heap entries. Stream workers' kinds (hwmodels.stream) start at WORKER.
RESUME = 0  # a task's wait (or its Initialize) is over: resume its generator
END = 1  # a task's process-end event: tell the all_of waiting for it
COND = 2  # an all_of's event: resume the task that waits on it
WORKER = 3

WAIT = object()
"""What a task's generator yields (from ``advance``) while it waits in the heap."""

Entry = tuple[int, int, int, int, Any]  # (cycle, priority, event id, kind, object)


class Wake:
    """The pipeline's place in SimPy's queue: a triggered event at the key of its
    earliest entry (the same key: the entry's event id is not reused by anything)."""

    __slots__ = ("_ok", "_value", "callbacks", "env", "owner")

    def __init__(self, pipeline: Pipeline) -> None:
        self.env = pipeline.env
        self.callbacks: list[Callable[[Any], None]] | None = [pipeline.wake]
        self._ok = True
        self._value = None
        self.owner = pipeline


class Task:
    """A generator the pipeline drives as SimPy drives a process. ``then`` takes its
    return value instead of an end event (a stream worker's walk, within its request)."""

    __slots__ = ("gen", "pipeline", "processed", "then", "waiters")

    def __init__(self, pipeline: Pipeline, gen: Generator[Any, Any, Any],
                 then: Callable[[Any], None] | None = None) -> None:
        self.pipeline = pipeline
        self.gen = gen
        self.then = then
        self.processed = False  # its end event was processed (SimPy: callbacks is None)
        self.waiters: list[Group] = []

    def resume(self, event: simpy.Event) -> None:
        """The callback a real event calls (SimPy's Process._resume)."""
        self.pipeline.step(self, event)


class Group:
    """``env.all_of`` over the pipeline's own processes (tasks and stream workers)."""

    __slots__ = ("pending", "pipeline", "task")

    def __init__(self, pipeline: Pipeline, children: list[Any]) -> None:
        self.pipeline = pipeline
        self.task: Task | None = None
        self.pending = 0
        for child in children:
            if not child.processed:
                child.waiters.append(self)
                self.pending += 1
        if not self.pending:  # SimPy's Condition succeeds at once: its event is due now
            pipeline.push_now(NORMAL, COND, self)

    def child_done(self) -> None:
        self.pending -= 1
        if not self.pending:
            self.pipeline.push_now(NORMAL, COND, self)


class Pipeline:
    """All requests of one ``DmaDevice``; ``done`` is the device's process event."""

    def __init__(self, device: DmaDevice,
                 workload: list[DmaRequest] | Any | DmaStream | DmaFeed) -> None:
        self.device = device
        self.env = env = device.env
        self.heap: list[Entry] = []
        self._wakes: list[tuple[int, int, int]] = []  # keys of this pipeline's wakes
        self.looping = False
        self._current: Task | None = None
        self.streams: list[Any] = []
        self.done = simpy.Event(env)
        # Only this device's requests act while run() works through the heap: the
        # walker may memoise the truth check meanwhile (walker.Iommu.hold_truth).
        self._hold_truth: Callable[[bool], None] | None = getattr(
            device.translator, "hold_truth", None)
        if isinstance(workload, DmaStream):
            gen = device._stream(workload, self._worker, self.all_of)
        elif isinstance(workload, DmaFeed):
            gen = device._feed(workload, self.spawn, self.all_of)
        else:
            gen = device._list(workload, self.spawn, self.all_of)
        self.spawn(gen, then=self._finished)

    # --- the processes of the reference model -------------------------------------------
    def spawn(self, gen: Generator[Any, Any, Any],
              then: Callable[[Any], None] | None = None) -> Task:
        """``env.process(gen)``: its Initialize is due now, urgent."""
        task = Task(self, gen, then)
        self.push_now(URGENT, RESUME, task)
        return task

    def all_of(self, children: list[Any]) -> Group:
        return Group(self, children)

    def _worker(self, s: DmaStream, cursor: StreamCursor) -> Any:
        """One of a stream's workers: a state machine when the translator can run a
        request phase by phase (walker.Iommu), else the worker's generator."""
        if hasattr(self.device.translator, "walk_path"):
            from .stream import Stream  # the stream engine builds on this module

            if not self.streams or self.streams[-1].cursor is not cursor:
                self.streams.append(Stream(self, s, cursor))
            return self.streams[-1].worker()
        return self.spawn(self.device.stream_worker(s, cursor))

    def _finished(self, value: Any) -> None:
        """The device's process ended: its event is scheduled as SimPy would."""
        env, done = self.env, self.done
        done._ok = True
        done._value = value
        heappush(env._queue, (env._now, NORMAL, next(env._eid), done))

    def end(self, process: Any) -> None:
        """A process of the pipeline returned: its end event is due now."""
        self.push_now(NORMAL, END, process)

    # --- the heap and SimPy's queue ---------------------------------------------------
    def push_now(self, priority: int, kind: int, obj: Any) -> None:
        env = self.env
        self.push((env._now, priority, next(env._eid), kind, obj))

    def push(self, entry: Entry) -> None:
        heappush(self.heap, entry)
        if not self.looping:
            self.arm()

    def arm(self) -> None:
        """Make sure a wake sits in SimPy's queue at or before the earliest entry."""
        heap = self.heap
        if not heap:
            return
        first = heap[0]
        key = (first[0], first[1], first[2])
        wakes = self._wakes
        if wakes and wakes[0] <= key:
            return
        heappush(wakes, key)
        heappush(self.env._queue, (*key, Wake(self)))

    def wait(self, cycles: int) -> object | None:
        """``advance`` for the running task: skip the wait when it ends before every
        entry of both queues (look-ahead), else queue it in the heap."""
        env = self.env
        due = env._now + cycles
        if not env._waking_several and env.skipped < env.skip_limit:
            queue, heap = env._queue, self.heap
            if (not queue or due < queue[0][0]) and (not heap or due < heap[0][0]):
                env._now = due
                env.skipped += 1
                return None
        self.push((due, NORMAL, next(env._eid), RESUME, self._current))
        return WAIT

    def wake(self, _event: Any) -> None:
        """A wake was processed by SimPy: run what is due."""
        heappop(self._wakes)
        self.run()

    def run(self) -> None:
        """Process the heap's entries while each comes before SimPy's next event (the
        loop that replaces SimPy's steps for this device). Inlined: the hot loop of
        pipelined DMA simulation."""
        env, heap, wakes = self.env, self.heap, self._wakes
        queue = env._queue
        self.looping = True
        hold = self._hold_truth
        if hold is not None:
            hold(True)
        try:
            while heap:
                while queue:  # this pipeline's own wakes stand for entries of its heap
                    event = queue[0][3]
                    if event.__class__ is not Wake or event.owner is not self:
                        break
                    heappop(queue)
                    heappop(wakes)
                first = heap[0]
                if queue:
                    other = queue[0]
                    if other[0] < first[0] or (other[0] == first[0] and (
                        other[1] < first[1] or (other[1] == first[1] and other[2] < first[2])
                    )):
                        break
                if env.skipped >= env.skip_limit:
                    break
                heappop(heap)
                env._now = first[0]
                env.skipped += 1
                env.pipelined += 1
                kind = first[3]
                if kind == RESUME:
                    self.step(first[4], None)
                elif kind >= WORKER:
                    first[4].stream.run(first[4], kind)
                elif kind == END:
                    process = first[4]
                    process.processed = True
                    for group in process.waiters:
                        group.child_done()
                else:  # COND
                    self.step(first[4].task, None)
        finally:
            self.looping = False
            if hold is not None:
                hold(False)
            self.arm()

    def step(self, task: Task, event: simpy.Event | None) -> None:
        """Run ``task`` until it waits again (SimPy's Process._resume, with the
        pipeline's own waits and groups)."""
        env = self.env
        outer, outer_task = env._pipeline, self._current
        env._pipeline, self._current = self, task
        try:
            while True:
                try:
                    if event is None:
                        target = task.gen.send(None)
                    elif event._ok:
                        target = task.gen.send(event._value)
                    else:
                        event._defused = True  # type: ignore[attr-defined]
                        exc = type(event._value)(*event._value.args)
                        exc.__cause__ = event._value
                        target = task.gen.throw(exc)
                except StopIteration as stop:
                    if task.then is not None:
                        task.then(stop.value)
                    else:
                        self.end(task)
                    return
                if target is WAIT:
                    return
                if target.__class__ is Group:
                    target.task = task
                    return
                if target.callbacks is not None:
                    target.callbacks.append(task.resume)
                    return
                event = target  # already processed: go on at once, as SimPy does
        finally:
            env._pipeline, self._current = outer, outer_task
