"""Streaming statistics: what a run reports about its operations, in constant memory.

A run used to keep one record per CPU operation and per DMA and compute its figures at
the end; a long run then grew without bound (about 750 B per map, 400 B per DMA).
Every figure it reports is a count, a sum, a maximum or a percentile of integer
latencies, so an integer histogram (value -> how many) holds all of it **exactly**:
its size is the number of distinct values, not the number of operations.

``Histogram.percentile`` reproduces ``numpy.percentile`` (method "linear", the
default) bit for bit from the histogram: the same virtual index ``(n - 1) * q / 100``,
the same two neighbouring order statistics and the same interpolation formula in
IEEE doubles (numpy's ``_lerp``), so results files do not change by an ulp. ``mean``
is ``total / n``, which equals numpy's pairwise float sum divided by ``n`` while the
total stays below 2**53 (integers are exact in doubles up to there).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from math import floor


class Histogram:
    """Counts of integer values: exact count, total, maximum, mean and percentiles."""

    __slots__ = ("counts", "max", "n", "total")

    def __init__(self, values: Iterable[int] = ()) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0
        self.max: int | None = None
        for value in values:
            self.add(value)

    def add(self, value: int, times: int = 1) -> None:
        """Count ``value`` ``times`` times."""
        counts = self.counts
        counts[value] = counts.get(value, 0) + times
        self.n += times
        self.total += value * times
        if self.max is None or value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        for value, times in other.counts.items():
            self.add(value, times)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        """Every counted value, in increasing order (as ``sorted`` of the samples)."""
        for value in sorted(self.counts):
            for _ in range(self.counts[value]):
                yield value

    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def percentile(self, q: float) -> float:
        """``numpy.percentile(samples, q)`` (linear), exactly; 0.0 when empty."""
        n = self.n
        if not n:
            return 0.0
        virtual = (n - 1) * (q / 100)
        if virtual >= n - 1:
            return float(self.max)  # type: ignore[arg-type]
        below = floor(virtual)
        a, b = self._order_stats(below)
        gamma = virtual - below
        diff = b - a
        if gamma >= 0.5:
            return b - diff * (1 - gamma)
        return a + diff * gamma

    def _order_stats(self, rank: int) -> tuple[float, float]:
        """The samples at sorted positions ``rank`` and ``rank + 1`` (0-based)."""
        seen = 0
        first: float | None = None
        for value in sorted(self.counts):
            seen += self.counts[value]
            if first is None and seen > rank:
                first = float(value)
            if seen > rank + 1:
                assert first is not None
                return first, float(value)
        raise AssertionError("rank + 1 must be below the sample count")

    def as_dict(self) -> dict[int, int]:
        """value -> count, by value (what results files store as a distribution)."""
        return {value: self.counts[value] for value in sorted(self.counts)}


class KeyedCounts:
    """Named counters that keep the order in which each name first counted: a block's
    ``stats()`` keys come out in the order the records once produced them."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, times: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + times

    def get(self, key: str) -> int:
        return self.counts.get(key, 0)
