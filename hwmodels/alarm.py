"""Calls back at scheduled cycles without a process per pending deadline.

Used for things that happen "N cycles later" to many items at once -- write-buffer
drains, random dirty-line evictions -- so that pending items cost a heap entry each and
a SimPy timeout per distinct due cycle, and nothing at all per elapsed cycle.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

import simpy


class Alarm:
    """Rings ``ring(key)`` at each scheduled cycle, in (cycle, scheduling order) order.

    Only the earliest deadline has a SimPy timeout armed. Scheduling an earlier one
    arms another timeout; a timeout that no longer matches the earliest deadline does
    nothing when it fires.
    """

    def __init__(self, env: simpy.Environment, ring: Callable[[Any], None]) -> None:
        self._env = env
        self._ring = ring
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = itertools.count()
        self._armed: float = math.inf

    def at(self, cycle: int, key: Any) -> None:
        """Ring ``key`` at ``cycle`` (not before the current cycle)."""
        heapq.heappush(self._heap, (cycle, next(self._seq), key))
        if cycle < self._armed:
            self._arm(cycle)

    def _arm(self, cycle: int) -> None:
        self._armed = cycle
        self._env.timeout(cycle - self._env.now).callbacks.append(self._fire)

    def _fire(self, _event: simpy.Event) -> None:
        now = self._env.now
        if now != self._armed:
            return
        heap = self._heap
        while heap and heap[0][0] <= now:
            self._ring(heapq.heappop(heap)[2])
        self._armed = math.inf
        if heap:
            self._arm(heap[0][0])
