"""The IOTLB: cached translations, tagged with domain and page size.

Entries are set-associative (``entries`` / ``ways`` sets; ``ways: 0`` is fully
associative). An entry for a page of
2**lg2 bytes at IOVA ``iova`` lives under the key ``(domain, lg2, iova >> lg2)`` in set
``(iova >> lg2) % sets``. A lookup probes once per page size currently cached (smallest
first), so any cached size can hit and a lookup never scans a set. With
``negative_caching`` a walk that found nothing may be cached as ``NEGATIVE`` (VT-d
caching mode, AMD NpCache). The IOTLB holds leaf translations only, so the leaf-only
invalidation hint does not change what it drops.

The value of an entry is whatever the walker stores (its translation record); the
IOTLB only needs it not to be None. Lookup latency (``hit``) is charged by the caller.
"""

from __future__ import annotations

from typing import Any

from .assoc import AssocArray
from .component import component_rng
from .config import IotlbConfig
from .trace import Tracer

NEGATIVE = "not-present"
"""The value of a negative entry: the page was not present when it was walked."""


def size_label(lg2: int) -> str:
    """4K, 2M, 1G, ... for statistics keys."""
    for unit, shift in (("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if lg2 >= shift:
            return f"{1 << (lg2 - shift)}{unit}"
    return f"{1 << lg2}B"


class Iotlb:
    """Set-associative translation cache with domain and page-size tags."""

    def __init__(
        self,
        cfg: IotlbConfig,
        *,
        seed: int = 0,
        tracer: Tracer | None = None,
        name: str = "iommu.iotlb",
    ) -> None:
        self.cfg = cfg
        self.name = name
        self._tracer = tracer
        self._sets = cfg.entries // cfg.associativity
        self._array = AssocArray(
            self._sets, cfg.associativity, cfg.replacement, component_rng(seed, name)
        )
        self._sizes: dict[int, int] = {}  # page size lg2 -> entries of that size
        self._order: tuple[int, ...] = ()  # the cached page sizes, smallest first
        self._size_hits: dict[int, int] = {}
        self.lookups = 0
        self.hits = 0
        self.negative_hits = 0
        self.misses = 0
        self.fills = 0
        self.evictions = 0
        self.invalidations = 0
        self.invalidated = 0

    def __len__(self) -> int:
        return self._array.size

    def lookup(self, domain: int, iova: int) -> Any:
        """The cached value covering ``iova`` in ``domain`` (or ``NEGATIVE``), else None."""
        self.lookups += 1
        array, sets = self._array, self._sets
        for lg2 in self._order:
            vpn = iova >> lg2
            value = array.get(vpn % sets, (domain, lg2, vpn))
            if value is not None:
                if value is NEGATIVE:
                    self.negative_hits += 1
                else:
                    self.hits += 1
                    self._size_hits[lg2] = self._size_hits.get(lg2, 0) + 1
                return value
        self.misses += 1
        return None

    def peek(self, domain: int, iova: int) -> Any:
        """What ``lookup`` would return now, without counting it or updating recency (a
        device pipeline predicting a hit before the lookup's cycle)."""
        array, sets = self._array, self._sets
        for lg2 in self._order:
            vpn = iova >> lg2
            value = array.peek(vpn % sets, (domain, lg2, vpn))
            if value is not None:
                return value
        return None

    def hits_again(self, domain: int, iova: int, times: int) -> None:
        """Count ``times`` more lookups hitting the entry that the last ``lookup`` of
        ``iova`` hit: a run of hits on one page, one after the other, leaves recency as
        the first left it (a device pipeline advancing a run of hits at once)."""
        array, sets = self._array, self._sets
        for lg2 in self._order:
            vpn = iova >> lg2
            if array.peek(vpn % sets, (domain, lg2, vpn)) is not None:
                self.lookups += times
                self.hits += times
                self._size_hits[lg2] = self._size_hits.get(lg2, 0) + times
                return
        raise ValueError(f"no IOTLB entry covers {iova:#x} in domain {domain}")

    def fill(self, domain: int, iova: int, size_lg2: int, value: Any) -> None:
        """Cache the translation of the 2**size_lg2 page holding ``iova``."""
        if value is None:
            raise ValueError("an IOTLB value must not be None")
        vpn = iova >> size_lg2
        s = vpn % self._sets
        key = (domain, size_lg2, vpn)
        self.fills += 1
        new = (s, key) not in self._array
        victim = self._array.put(s, key, value)
        if new:
            self._count(size_lg2, 1)
        if victim is not None:
            self.evictions += 1
            self._count(victim[1], -1)
        if self._tracer is not None:
            self._tracer.emit(
                self.name, "fill", domain=domain, iova=iova, size_lg2=size_lg2,
                negative=value is NEGATIVE, evicted=victim is not None, entries=len(self),
            )

    def fill_negative(self, domain: int, iova: int, size_lg2: int) -> None:
        """Cache "not present" for the page holding ``iova``, if negative caching is on."""
        if self.cfg.negative_caching:
            self.fill(domain, iova, size_lg2, NEGATIVE)

    def invalidate_range(self, domain: int, iova: int, size: int) -> int:
        """Drop every entry of ``domain`` overlapping ``[iova, iova + size)``."""
        removed = 0
        array, sets = self._array, self._sets
        for lg2 in self._order if size > 0 else ():
            first, last = iova >> lg2, (iova + size - 1) >> lg2
            if last - first < self.cfg.entries:  # probing costs less than a scan
                keys = [(domain, lg2, vpn) for vpn in range(first, last + 1)]
                gone = [key for key in keys if array.remove(key[2] % sets, key)]
            else:
                gone = array.remove_where(
                    lambda k, lg2=lg2, first=first, last=last: k[0] == domain
                    and k[1] == lg2
                    and first <= k[2] <= last
                )
            removed += self._forget(gone)
        return self._invalidated("range", removed, domain=domain, iova=iova, size=size)

    def invalidate_domain(self, domain: int) -> int:
        """Drop every entry of ``domain``."""
        removed = self._forget(self._array.remove_where(lambda k: k[0] == domain))
        return self._invalidated("domain", removed, domain=domain)

    def invalidate_all(self) -> int:
        """Drop every entry."""
        removed = self._forget(self._array.remove_where(lambda k: True))
        return self._invalidated("all", removed)

    def _forget(self, keys: list[Any]) -> int:
        for key in keys:
            self._count(key[1], -1)
        return len(keys)

    def _invalidated(self, how: str, removed: int, **fields: Any) -> int:
        self.invalidations += 1
        self.invalidated += removed
        if self._tracer is not None:
            self._tracer.emit(self.name, "invalidate", how=how, removed=removed,
                              entries=len(self), **fields)
        return removed

    def _count(self, lg2: int, delta: int) -> None:
        n = self._sizes.get(lg2, 0) + delta
        if n:
            self._sizes[lg2] = n
        else:
            del self._sizes[lg2]
        if (n == 0) or (n == delta):
            self._order = tuple(sorted(self._sizes))

    def stats(self) -> dict[str, float]:
        stats = {
            "lookups": self.lookups,
            "hits": self.hits,
            "negative_hits": self.negative_hits,
            "misses": self.misses,
            "fills": self.fills,
            "evictions": self.evictions,
            "invalidations": self.invalidations,
            "invalidated": self.invalidated,
            "entries": len(self),
        }
        for lg2 in sorted(self._size_hits):
            stats[f"hits_{size_label(lg2)}"] = self._size_hits[lg2]
        return stats
