"""The walk cache (paging-structure caches): table pointers, per level.

An entry at level L is an item of a level-L table that points to the next, level L-1,
table. It is keyed by the domain and the VA bits above the range that next table
translates (``iova >> item_lg2``, where 2**item_lg2 bytes is what one level-L item
covers) and holds the next table's physical address, so a walk that hits at level L
starts at that table instead of the root. Only non-leaf items are cached.

Each configured level is a fully associative LRU array of ``entries[level]`` entries
(levels numbered as in genpt: 0 is the lowest table). As in gem5, the walker probes
from its deepest cached level upwards, paying ``probe`` cycles per probe, and fills
each level on its way down. Invalidation drops every entry whose range overlaps the
invalidated one (a walk cache level is small, so this scans it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .assoc import AssocArray
from .config import WalkCacheConfig
from .trace import Tracer

_COUNTERS = ("lookups", "hits", "misses", "fills", "evictions", "invalidated")


class WalkCache:
    """Per-level caches of (domain, level, VA tag) -> next table's physical address."""

    def __init__(
        self,
        cfg: WalkCacheConfig,
        *,
        tracer: Tracer | None = None,
        name: str = "iommu.walk_cache",
    ) -> None:
        self.cfg = cfg
        self.name = name
        self._tracer = tracer
        self._arrays = {
            level: AssocArray(1, n, "lru") for level, n in sorted(cfg.entries.items()) if n
        }
        self.levels: tuple[int, ...] = tuple(sorted(self._arrays))
        """The cached levels, lowest (deepest in a walk) first."""
        self._counts = {level: dict.fromkeys(_COUNTERS, 0) for level in self.levels}

    def lookup(self, domain: int, level: int, iova: int, item_lg2: int) -> int | None:
        """The next table's address cached at ``level`` for ``iova``; None on a miss.

        A level that is not cached always misses and counts nothing.
        """
        array = self._arrays.get(level)
        if array is None:
            return None
        counts = self._counts[level]
        counts["lookups"] += 1
        table_pa = array.get(0, (domain, item_lg2, iova >> item_lg2))
        counts["hits" if table_pa is not None else "misses"] += 1
        return table_pa

    def fill(self, domain: int, level: int, iova: int, item_lg2: int, table_pa: int) -> None:
        """Remember that the level-``level`` item for ``iova`` points to ``table_pa``."""
        array = self._arrays.get(level)
        if array is None:
            return
        counts = self._counts[level]
        counts["fills"] += 1
        if array.put(0, (domain, item_lg2, iova >> item_lg2), table_pa) is not None:
            counts["evictions"] += 1
        if self._tracer is not None:
            self._tracer.emit(
                self.name, "fill", domain=domain, level=level, iova=iova, table_pa=table_pa
            )

    def invalidate_range(self, domain: int, iova: int, size: int) -> int:
        """Drop the entries of ``domain`` whose range overlaps ``[iova, iova + size)``."""
        if size <= 0:
            return 0

        def overlaps(key: Any) -> bool:
            d, lg2, tag = key
            return d == domain and iova >> lg2 <= tag <= (iova + size - 1) >> lg2

        return self._invalidate(overlaps, "range", domain=domain, iova=iova, size=size)

    def invalidate_domain(self, domain: int) -> int:
        return self._invalidate(lambda key: key[0] == domain, "domain", domain=domain)

    def invalidate_all(self) -> int:
        return self._invalidate(lambda key: True, "all")

    def _invalidate(self, match: Callable[[Any], bool], how: str, **fields: Any) -> int:
        removed = 0
        for level, array in self._arrays.items():
            n = len(array.remove_where(match))
            self._counts[level]["invalidated"] += n
            removed += n
        if self._tracer is not None:
            self._tracer.emit(self.name, "invalidate", how=how, removed=removed, **fields)
        return removed

    def stats(self) -> dict[str, float]:
        stats = {key: sum(c[key] for c in self._counts.values()) for key in _COUNTERS}
        for level in self.levels:
            for key, value in self._counts[level].items():
                stats[f"level{level}.{key}"] = value
        return stats
