"""The walk cache: per-level capacity, tags, invalidation."""

from __future__ import annotations

from iommusim.hwmodels.config import WalkCacheConfig
from iommusim.hwmodels.walk_cache import WalkCache

# x86 4-level: a level-L item covers 2**(12 + 9L) bytes
ITEM = {1: 21, 2: 30, 3: 39}


def cache(entries=None) -> WalkCache:
    return WalkCache(WalkCacheConfig(entries=entries or {3: 4, 2: 8, 1: 32}))


def test_lookup_by_domain_level_and_tag():
    wc = cache()
    wc.fill(1, 2, 0x4000_0000, ITEM[2], 0xA000)
    assert wc.lookup(1, 2, 0x7FFF_FFFF, ITEM[2]) == 0xA000  # same 1G item
    assert wc.lookup(1, 2, 0x8000_0000, ITEM[2]) is None
    assert wc.lookup(2, 2, 0x4000_0000, ITEM[2]) is None
    assert wc.lookup(1, 1, 0x4000_0000, ITEM[1]) is None
    stats = wc.stats()
    assert (stats["level2.lookups"], stats["level2.hits"], stats["level1.misses"]) == (3, 1, 1)
    assert (stats["lookups"], stats["hits"], stats["misses"]) == (4, 1, 3)


def test_levels_have_their_own_lru_capacity():
    wc = cache({2: 2, 1: 0})
    assert wc.levels == (2,)
    for i in range(3):
        wc.fill(1, 2, i << 30, ITEM[2], i)
    assert [wc.lookup(1, 2, i << 30, ITEM[2]) for i in range(3)] == [None, 1, 2]
    assert wc.stats()["level2.evictions"] == 1
    wc.fill(1, 1, 0, ITEM[1], 5)  # an uncached level: ignored, counts nothing
    assert wc.lookup(1, 1, 0, ITEM[1]) is None
    assert "level1.lookups" not in wc.stats()


def test_invalidate_range_drops_overlapping_entries_at_every_level():
    wc = cache()
    wc.fill(1, 3, 0, ITEM[3], 0x1000)  # covers [0, 512G)
    wc.fill(1, 2, 0, ITEM[2], 0x2000)  # [0, 1G)
    wc.fill(1, 1, 0x20_0000, ITEM[1], 0x3000)  # [2M, 4M)
    wc.fill(1, 1, 0x40_0000, ITEM[1], 0x4000)  # [4M, 6M)
    wc.fill(2, 1, 0x20_0000, ITEM[1], 0x5000)
    assert wc.invalidate_range(1, 0x3F_F000, 0x1000) == 3  # last page of [2M, 4M)
    assert wc.lookup(1, 1, 0x40_0000, ITEM[1]) == 0x4000
    assert wc.lookup(2, 1, 0x20_0000, ITEM[1]) == 0x5000
    assert wc.stats()["level1.invalidated"] == 1
    assert wc.invalidate_domain(2) == 1
    assert wc.invalidate_all() == 1
