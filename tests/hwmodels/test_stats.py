"""Streaming statistics (hwmodels.stats): a histogram's mean and percentiles are numpy's
over the samples, bit for bit (results files must not change by an ulp)."""

from __future__ import annotations

import random

import numpy as np

from iommusim.hwmodels.stats import Histogram, KeyedCounts


def test_histogram_figures_are_numpys() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        n = rng.choice([1, 2, 3, 99, 100, 101, rng.randrange(1, 3000)])
        spread = rng.choice([1, 3, 50, 1000, 10**9])
        values = [rng.randrange(spread) for _ in range(n)]
        hist = Histogram(values)
        arr = np.asarray(values, dtype=float)
        assert (hist.n, hist.total, hist.max) == (n, sum(values), max(values))
        assert repr(hist.mean()) == repr(float(arr.mean()))
        for q in (1, 25, 50, 90, 99, 99.9):
            assert repr(hist.percentile(q)) == repr(float(np.percentile(arr, q)))
        assert list(hist) == sorted(values)


def test_histogram_merge_and_repeats() -> None:
    a, b = Histogram([5, 1, 5]), Histogram()
    b.add(7, times=3)
    a.merge(b)
    assert a.as_dict() == {1: 1, 5: 2, 7: 3}
    assert (a.n, a.total, a.max) == (6, 32, 7)
    assert Histogram().percentile(50) == 0.0 and Histogram().mean() == 0.0


def test_keyed_counts_keep_first_seen_order() -> None:
    k = KeyedCounts()
    for key in ("path.walk", "path.iotlb", "path.walk", "fault.not_present"):
        k.add(key)
    assert list(k.counts.items()) == [("path.walk", 2), ("path.iotlb", 1),
                                      ("fault.not_present", 1)]
