"""Constant memory per run (issue 17): what a run keeps does not grow with the number of
its operations -- statistics are histograms and counters, not records.

The same scenario runs with N and 10 N CPU operations and DMAs (maps and unmaps of one
page, a DMA stream and a device following the CPU); the peak of memory allocated by
Python during the run (tracemalloc: a proxy for RSS that does not depend on the
allocator) must stay within a small margin.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from iommusim.experiment.assembly import simulate
from iommusim.experiment.runner import prepare

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "constant-memory.yaml"


def peak_bytes(rounds: int) -> tuple[int, dict[str, float]]:
    [(_, exp)] = prepare(SCENARIO, [f"cpus.0.ops.2.repeat.count={rounds}",
                                    f"devices.0.stream.count={10 * rounds}"])
    tracemalloc.start()
    try:
        result = simulate(exp, 1)
        return tracemalloc.get_traced_memory()[1], result.metrics
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_run() -> None:
    peak_bytes(6)  # first-use allocations (caches, lazy imports) out of the way
    small, m_small = peak_bytes(60)
    large, m_large = peak_bytes(600)
    assert m_large["cpu.map.count"] == 10 * m_small["cpu.map.count"] - 9  # + the first map
    assert m_large["dma.requests"] == 10 * m_small["dma.requests"] - 9  # a follower per map
    assert m_large["sim.finished"] == 1
    assert m_large["dma.faults"] == m_large["dma.stale_translations"] == 0  # nothing to list
    # With a record per operation the large run peaks 2.5 MB above the small one. What
    # may still grow here is bounded: the invalidation queue's log of the last 1024
    # invalidations (hwmodels/invalidation.py), histograms of distinct latencies.
    assert large - small < 256 * 1024, (small, large)
