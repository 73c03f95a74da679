"""Timing helpers shared by the benchmark entries."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import simpy

Prepared = Callable[[], int]
"""The timed part of a benchmark: does the work, returns how many items it did."""


def best_rate(prepare: Callable[[], Prepared], repeats: int = 3) -> float:
    """Items per second of the timed part (set-up excluded), best of ``repeats``."""
    best = 0.0
    for _ in range(repeats):
        run = prepare()
        start = time.perf_counter()
        items = run()
        best = max(best, items / (time.perf_counter() - start))
    return best


def raw_simpy(n: int = 200_000) -> Prepared:
    """A bare SimPy process yielding ``n`` one-cycle timeouts: the reference rate."""
    env = simpy.Environment()

    def loop() -> Generator[simpy.Event, None, None]:
        timeout = env.timeout
        for _ in range(n):
            yield timeout(1)

    env.process(loop())

    def run() -> int:
        env.run()
        return n

    return run
