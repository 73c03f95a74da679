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
from typing import Any

import simpy


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
