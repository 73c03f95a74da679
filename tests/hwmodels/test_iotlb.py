"""The IOTLB: tags, page sizes, set indexing, replacement, negative entries, invalidation."""

from __future__ import annotations

import random

import pytest

from iommusim.hwmodels.config import IotlbConfig
from iommusim.hwmodels.iotlb import NEGATIVE, Iotlb, size_label

K4, M2 = 12, 21


def iotlb(**cfg) -> Iotlb:
    return Iotlb(IotlbConfig(**cfg))


def test_miss_fill_then_hit_with_domain_tag():
    t = iotlb()
    assert t.lookup(1, 0x5000) is None
    t.fill(1, 0x5123, K4, "pa5")
    assert t.lookup(1, 0x5FFF) == "pa5"
    assert t.lookup(2, 0x5000) is None
    assert t.lookup(1, 0x6000) is None
    assert {k: t.stats()[k] for k in ("lookups", "hits", "misses", "fills")} == {
        "lookups": 4, "hits": 1, "misses": 3, "fills": 1
    }


def test_any_cached_page_size_hits_smallest_first():
    t = iotlb()
    t.fill(1, 0x20_0000, M2, "big")
    assert t.lookup(1, 0x3F_F000) == "big"
    t.fill(1, 0x20_1000, K4, "small")  # a stale overlap: the smaller page wins
    assert t.lookup(1, 0x20_1000) == "small"
    assert t.lookup(1, 0x20_2000) == "big"
    assert t.stats()["hits_4K"] == 1
    assert t.stats()["hits_2M"] == 2


def test_set_index_is_the_page_number_modulo_the_sets():
    t = iotlb(entries=8, ways=2, replacement="lru")  # 4 sets
    for page in (0, 4, 1):
        t.fill(1, page << K4, K4, page)
    t.fill(1, 8 << K4, K4, 8)  # set 0 is full (pages 0, 4): evicts page 0
    assert [t.lookup(1, p << K4) for p in (0, 4, 1, 8)] == [None, 4, 1, 8]
    assert t.evictions == 1


def test_lru_eviction_order():
    t = iotlb(entries=4, ways=4, replacement="lru")
    for page in range(4):
        t.fill(1, page << K4, K4, page)
    t.lookup(1, 0)  # page 0 becomes most recent
    t.fill(1, 4 << K4, K4, 4)  # evicts page 1
    t.fill(1, 5 << K4, K4, 5)  # evicts page 2
    assert [t.lookup(1, p << K4) for p in range(6)] == [0, None, None, 3, 4, 5]


def test_round_robin_eviction_order_ignores_use():
    t = iotlb(entries=4, ways=4, replacement="rr")
    for page in range(4):
        t.fill(1, page << K4, K4, page)
    t.lookup(1, 0)
    t.fill(1, 4 << K4, K4, 4)  # way 0: page 0
    t.fill(1, 5 << K4, K4, 5)  # way 1: page 1
    assert [t.lookup(1, p << K4) for p in range(6)] == [None, None, 2, 3, 4, 5]


def test_random_replacement_draws_ways_from_the_seeded_stream():
    t = Iotlb(IotlbConfig(entries=4, ways=4, replacement="random"), seed=7)
    rng = random.Random("7/iommu.iotlb")
    ways = list(range(4))  # page p sits in way p
    for page in range(4):
        t.fill(1, page << K4, K4, page)
    for page in range(4, 12):
        way = rng.randrange(4)
        t.fill(1, page << K4, K4, page)
        ways[way] = page
    assert sorted(p for p in range(12) if t.lookup(1, p << K4) is not None) == sorted(ways)


def test_negative_entries_only_with_negative_caching():
    off, on = iotlb(), iotlb(negative_caching=True)
    for t in (off, on):
        t.fill_negative(1, 0x7000, K4)
    assert off.lookup(1, 0x7000) is None
    assert on.lookup(1, 0x7000) is NEGATIVE
    assert (on.hits, on.negative_hits) == (0, 1)


def test_invalidate_range_drops_overlapping_entries_of_the_domain():
    t = iotlb(entries=16, ways=16)
    for page in range(4):
        t.fill(1, page << K4, K4, page)
        t.fill(2, page << K4, K4, page)
    t.fill(1, 0x20_0000, M2, "big")
    assert t.invalidate_range(1, 0x1800, 0x1000) == 2  # pages 1 and 2
    assert t.invalidate_range(1, 0x3F_F000, 1) == 1  # the last byte of the 2M page
    assert [t.lookup(1, p << K4) for p in range(4)] == [0, None, None, 3]
    assert all(t.lookup(2, p << K4) == p for p in range(4))
    assert t.invalidated == 3
    assert t.invalidate_range(1, 0, 0) == 0


def test_invalidate_huge_range_scans_instead_of_probing():
    t = iotlb(entries=8, ways=8)
    t.fill(1, 0x5000, K4, "a")
    t.fill(1, 1 << 40, K4, "b")
    t.fill(3, 0x5000, K4, "c")
    assert t.invalidate_range(1, 0, 1 << 40) == 1
    assert (t.lookup(1, 0x5000), t.lookup(1, 1 << 40), t.lookup(3, 0x5000)) == (None, "b", "c")


def test_invalidate_domain_and_all():
    t = iotlb()
    t.fill(1, 0, K4, "a")
    t.fill(1, 0x20_0000, M2, "b")
    t.fill(2, 0, K4, "c")
    assert t.invalidate_domain(1) == 2
    assert len(t) == 1
    assert t.invalidate_all() == 1
    assert len(t) == 0
    t.fill(2, 0, K4, "d")  # page sizes are tracked again after emptying
    assert t.lookup(2, 0) == "d"


def test_refill_of_a_cached_page_replaces_without_evicting():
    t = iotlb(entries=2, ways=2)
    t.fill(1, 0, K4, "a")
    t.fill(1, 0, K4, "b")
    assert (t.lookup(1, 0), len(t), t.evictions) == ("b", 1, 0)


def test_geometry_and_values_are_checked():
    with pytest.raises(ValueError):
        IotlbConfig(entries=10, ways=4)
    with pytest.raises(ValueError):
        iotlb().fill(1, 0, K4, None)


def test_size_labels():
    assert [size_label(n) for n in (12, 16, 21, 30, 39)] == ["4K", "64K", "2M", "1G", "512G"]
