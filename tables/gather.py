"""The IOTLB gather and the driver's iotlb_sync (iommu core + driver glue).

A gather accumulates the IOVA range whose translations changed and the table pages
that may be freed only after the IOTLB and walk caches stopped pointing at them.
``iotlb_sync`` is what an IOMMU driver does with it: one range invalidation (the
leaf-only hint when no table was freed), a wait, then the frees.
"""

from __future__ import annotations

from .common import Common
from .iter import Gen
from .log2 import U64
from .pages import free_table
from .transactions import INVALIDATE_RANGE, WAIT_INVALIDATION
from .work import W_GATHER


class Gather:
    __slots__ = ("end", "freelist", "start")

    def __init__(self) -> None:
        self.start = U64  # ULONG_MAX: empty
        self.end = 0  # inclusive
        self.freelist: list[int] = []

    def reset(self) -> None:
        self.start = U64
        self.end = 0
        self.freelist = []

    @property
    def empty(self) -> bool:
        return self.start > self.end

    def add_range(self, iova: int, size: int) -> None:
        end = iova + size - 1
        self.start = min(self.start, iova)
        self.end = max(self.end, end)

    def is_disjoint(self, iova: int, size: int) -> bool:
        """Adjacent ranges are not disjoint; an empty gather is never disjoint."""
        return self.end != 0 and (iova + size < self.start or iova > self.end + 1)


def iotlb_sync(c: Common, gather: Gather) -> Gen:
    """iommu_iotlb_sync: invalidate [start, end], wait, free the gathered pages.

    The length is computed as drivers do, ``end - start + 1`` modulo 2**64, so an
    empty gather becomes a bogus two-byte invalidation at ULONG_MAX that removes
    nothing -- which is what the NO_GAPS gather bug (b48ca920) led to.
    """
    size = (gather.end - gather.start + 1) & U64
    yield (INVALIDATE_RANGE, c.domain, gather.start, size, not gather.freelist)
    yield (WAIT_INVALIDATION,)
    for pa in gather.freelist:
        yield from free_table(pa)
    gather.reset()


def gather_range_pages(c: Common, gather: Gather, iova: int, length: int, pages: list[int]) -> Gen:
    """Record a changed range and the table pages it freed.

    NO_GAPS: a range disjoint from what is gathered forces a sync first. The range
    is then always added (b48ca920); before that fix it was added only with
    FLUSH_RANGE, so a NO_GAPS-only table never recorded any range. With the
    ``free_after_sync`` fix off, the pages are freed at once instead of after the
    invalidation (a design hazard: walk caches may still point at them).
    """
    yield W_GATHER
    if c.no_gaps and gather.is_disjoint(iova, length):
        yield from iotlb_sync(c, gather)
        if c.fixes.gather_always_add_range:
            gather.add_range(iova, length)
    elif c.fixes.gather_always_add_range or c.flush_range:
        gather.add_range(iova, length)
    if c.fixes.free_after_sync:
        gather.freelist.extend(pages)
    else:
        for pa in pages:
            yield from free_table(pa)
