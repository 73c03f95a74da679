"""Table-page life cycle and CPU cache maintenance (iommu-pages, flush_writes_*).

On x86 the incoherent primitives are clflush-based: ``start_incoherent`` flushes the
whole zeroed page, ``stop_incoherent`` does nothing, freeing is freeing. Every flush
is skipped unless the table is DMA_INCOHERENT and the ``cache_flush`` fix is on.
"""

from __future__ import annotations

from .common import Common
from .errors import ENOMEM
from .iter import Gen, State
from .memory import PAGE_LG2
from .transactions import (
    ALLOC_TABLE,
    CAUSE_TABLE_START,
    FLUSH,
    FREE_TABLE,
)

ALLOC_NORMAL = 0
ALLOC_DEFER_COHERENT_FLUSH = 1  # increase_top flushes its new tops once, at the end


def flush_writes_range(pts: State, start_index: int, end_index: int, cause: str) -> Gen:
    if pts.range.common.flushing:
        yield (FLUSH, pts.table + start_index * 8, (end_index - start_index) * 8, cause)


def flush_writes_item(pts: State, cause: str) -> Gen:
    if pts.range.common.flushing:
        yield (FLUSH, pts.table + pts.index * 8, 8, cause)


def start_incoherent(c: Common, table_pa: int, size_lg2: int) -> Gen:
    """Make a freshly zeroed table visible to a non-snooping walker."""
    if c.flushing:
        yield (FLUSH, table_pa, 1 << max(size_lg2, PAGE_LG2), CAUSE_TABLE_START)


def table_alloc(c: Common, size_lg2: int, mode: int) -> Gen:
    """_table_alloc: a zeroed table's physical address, or -ENOMEM.

    With the ``table_alloc_error`` fix off (before 7a089c5d) a failed allocation
    gives NULL, which callers take for a valid table: physical address 0 here.
    """
    pa = yield (ALLOC_TABLE, size_lg2)
    if pa is None:
        if c.fixes.table_alloc_error:
            return -ENOMEM
        pa = 0
    if mode == ALLOC_NORMAL:
        yield from start_incoherent(c, pa, size_lg2)
    return pa


def free_table(pa: int) -> Gen:
    """iommu_pages_free_incoherent / iommu_put_pages_list for one page."""
    yield (FREE_TABLE, pa)
