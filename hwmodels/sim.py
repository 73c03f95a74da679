"""Exact look-ahead: waiting without a SimPy event when nobody else can act meanwhile.

A component that must wait ``c`` cycles normally yields ``env.timeout(c)``: one event
scheduled, popped and dispatched. But when the earliest event anyone else has
scheduled (``env.peek()``) lies strictly after ``now + c``, nothing can happen in
between, so moving the clock to ``now + c`` at once and carrying on gives exactly the
same simulation -- same event order, same times -- for a fraction of the cost.

``advance(env, c)`` does that on a ``SimEnvironment`` with look-ahead on and returns
None; otherwise (a tie or an earlier event is pending, look-ahead is off, or the
environment is a plain or controlled SimPy one) it returns the timeout to yield::

    wait = advance(env, cycles)
    if wait is not None:
        yield wait

Equal times are never skipped: SimPy orders same-time events by creation, so a wait
that ends exactly when another event is due must stay an event. Nor is anything
skipped while an event that wakes several processes is being dispatched: the later
wake-ups are not in the queue yet (they are the event's remaining callbacks), so
``peek`` reports them as due now.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import simpy
from simpy.core import EmptySchedule, StopSimulation


class SimEnvironment(simpy.Environment):
    """SimPy with exact look-ahead, and a count of the waits it skipped."""

    def __init__(self, initial_time: int = 0, *, lookahead: bool = True) -> None:
        super().__init__(initial_time)
        self.lookahead = lookahead
        self.skipped = 0
        """Waits taken by moving the clock: each stands for one timeout event."""
        self.skip_limit: float = math.inf
        """No more waits are skipped past this count: ``run_bounded`` sets it so that a
        process skipping wait after wait (a long DMA stream on an idle machine) hands
        control back to the run loop, which can then stop the run."""
        self._waking_several = False
        self._pipeline: Any = None
        """The device pipeline (hwmodels.pipeline) whose request is running, if any:
        its waits go to the pipeline's own queue (see ``advance``)."""
        self.pipelined = 0
        """Events a device pipeline processed from its own queue without a step: each
        is counted in ``skipped`` too (the run limit counts it as work) and was counted
        by its event id when it was scheduled, hence subtracted by events_processed."""

    def step(self) -> None:
        queue = self._queue
        self._waking_several = bool(queue) and len(queue[0][3].callbacks or ()) > 1
        try:
            super().step()
        finally:
            self._waking_several = False

    def peek(self) -> float:
        """The time of the next event; now while an event still wakes other processes."""
        return self._now if self._waking_several else super().peek()


def advance(env: simpy.Environment, cycles: int) -> simpy.Timeout | None:
    """Wait ``cycles``: None if the clock was moved at once, else the event to yield
    (inside a device pipeline's request: the pipeline's marker for its own queue)."""
    if getattr(env, "lookahead", False):
        pipeline = env._pipeline
        if pipeline is not None:
            return pipeline.wait(cycles)  # type: ignore[no-any-return]
        if not env._waking_several:
            # env.peek() inlined: this is the simulator's hottest call.
            due = env._now + cycles
            queue = env._queue
            if (not queue or due < queue[0][0]) and env.skipped < env.skip_limit:
                env._now = due
                env.skipped += 1
                return None
    return env.timeout(cycles)


def events_processed(env: simpy.Environment) -> int:
    """Events a run scheduled, counting each skipped wait as the event it replaced,
    so the figure is the same with look-ahead on and off (and with device pipelines:
    an event one processed from its own queue was counted by its id)."""
    return next(env._eid) + getattr(env, "skipped", 0) - getattr(env, "pipelined", 0)


# --- bounding a run ---------------------------------------------------------------------------
STILL_LIMIT = 100_000
"""Events (or one CPU's operations) at one cycle before a run counts as stuck: a loop
that never lets time advance (``repeat`` of ``delay: 0`` or of ``signal``)."""
_CHUNK = 1024  # events between two looks at the budget


class RunLimit:
    """The work one run may do: ``max_events`` events, skipped waits and CPU transactions
    and operations together (``used``), and at most ``still`` of them at one cycle.

    Whoever exceeds it calls ``stop`` with a sentence naming the culprit; a CPU then
    waits on ``halt`` (an event that never fires) and ``run_bounded`` returns."""

    def __init__(self, env: simpy.Environment, max_events: int, still: int = STILL_LIMIT):
        self.env = env
        self.max_events = max_events
        self.still = still
        self.used = 0
        self.reason: str | None = None
        self.halt = env.event()
        # Fired by ``stop``: ends ``run_bounded`` at the current cycle, after the events
        # already due then (as ``env.run(until=...)`` ends at its event).
        self._stopper = env.event()
        self._stopper.callbacks.append(StopSimulation.callback)

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._stopper.succeed()

    def spent(self) -> bool:
        """Over the total: stop with the generic reason (the caller may have named one)."""
        if self.used >= self.max_events:
            self.stop(f"stopped at cycle {self.env.now:,} after {self.used:,} events and "
                      f"operations (run.max_events = {self.max_events:,})")
        return self.reason is not None


def run_bounded(env: simpy.Environment, done: simpy.Event, limit: RunLimit,
                owner: Callable[[simpy.Event], str | None] | None = None) -> None:
    """``env.run(until=done)`` within ``limit``: returns when ``done`` was processed,
    when the queue is empty or a controlled environment stops itself, or when the
    limit is spent (``limit.reason`` says why). ``owner`` names whose event is next,
    for the message when the clock stood still."""
    if done.callbacks is None:
        return  # processed already
    done.callbacks.append(StopSimulation.callback)  # as env.run(until=done) does
    step = env.step
    sim = env if isinstance(env, SimEnvironment) else None
    still_at, still = env.now, 0
    try:
        while limit.reason is None:
            skipped = sim.skipped if sim is not None else 0
            if sim is not None:
                sim.skip_limit = skipped + max(0, limit.max_events - limit.used)
            for _ in range(_CHUNK):  # nothing but the step: the simulator's main loop
                step()
            limit.used += _CHUNK + (sim.skipped - skipped if sim is not None else 0)
            if env.now != still_at:
                still_at, still = env.now, 0
                limit.spent()
                continue
            still += _CHUNK
            if still >= limit.still:
                who = _next_owner(env, owner)
                limit.stop(f"the clock stood at cycle {env.now:,} for {still:,} events"
                           + (f", kept there by {who}" if who else ""))
            limit.spent()
    except (EmptySchedule, StopSimulation):
        pass
    finally:
        if sim is not None:
            sim.skip_limit = math.inf


def _next_owner(env: simpy.Environment,
                owner: Callable[[simpy.Event], str | None] | None) -> str | None:
    queue = getattr(env, "_queue", ())
    for item in sorted(queue)[:64] if owner is not None else ():
        name = owner(item[3])
        if name:
            return name
    return None
