"""Removing translations: unmap_range (S6) with the historical variants.

Unmap never splits a leaf: a range starting inside a leaf unmaps nothing there, one
ending inside a leaf removes the whole leaf (and reports more bytes than asked).
The walk stops at the first hole. A table is freed only when the range covers all
of it; freed tables go to the gather and are released after the IOTLB sync.
"""

from __future__ import annotations

from .common import Common
from .errors import EINVAL
from .formats.base import ITEM_WORD_LG2, OA, TABLE
from .gather import Gather, gather_range_pages
from .iter import (
    Gen,
    Range,
    State,
    check_range,
    clear_entries,
    descend,
    entry_fully_covered,
    entry_oa_lg2sz,
    index_to_va,
    isz,
    iter_first,
    make_range,
    num_contig_lg2,
    table_pa,
)
from .map import make_range_checked_len
from .pages import flush_writes_range
from .transactions import CAUSE_UNMAP, LOAD
from .work import ITEM_EXAMINE, ITEM_WRITE, W_CONTIG_SETUP, W_ITEM_EXAMINE, W_LEVEL, W_OP_CALL, work


class UnmapArgs:
    __slots__ = ("free_list", "unmapped")

    def __init__(self) -> None:
        self.free_list: list[int] = []
        self.unmapped = 0


def unmap_level(rng: Range, u: UnmapArgs, level: int, table: int) -> Gen:
    """__unmap_range: clear leaves and fully covered tables at this level."""
    pts = State(rng, level, table)
    yield W_CONTIG_SETUP  # this level's loop over the table's items
    iter_first(pts)
    start_index = pts.index
    flush_start = flush_end = None  # the span of items this level changed
    num_oas = 0
    ret = 0
    examined = 1
    tables_cleared = 0
    # load_entry_raw inlined here and in the loop (a generator fewer per item loaded).
    entry_type = rng.common.fmt.entry_type
    pts.entry = raw = yield (LOAD, pts.table + (pts.index << ITEM_WORD_LG2))
    pts.type = t = entry_type(level, raw)
    if t == OA and rng.va & ((1 << entry_oa_lg2sz(pts)) - 1):
        yield W_ITEM_EXAMINE
        return -EINVAL  # starts inside a leaf: nothing is unmapped here
    while True:
        if t == OA:
            n = num_contig_lg2(pts)
            yield from clear_entries(pts, n)
            num_oas += 1 << n
            if flush_start is None or pts.index < flush_start:
                flush_start = pts.index
            pts.index += 1 << n
            flush_end = pts.index
        elif t == TABLE:
            if pts.index != start_index:
                index_to_va(pts)
            pts.table_lower = table_pa(pts)
            fully_covered = entry_fully_covered(pts, isz(pts))
            yield W_LEVEL
            ret = yield from descend(pts, unmap_level, u)
            if ret:
                break
            # The item is cleared only once everything below it was.
            if fully_covered:
                u.free_list.append(pts.table_lower)
                yield from clear_entries(pts, 0)
                tables_cleared += 1
                if flush_start is None or pts.index < flush_start:
                    flush_start = pts.index
                flush_end = pts.index + 1
            pts.index += 1
        else:
            ret = -EINVAL  # a hole ends the walk
            break
        if pts.index >= pts.end_index:
            break
        pts.entry = raw = yield (LOAD, pts.table + (pts.index << ITEM_WORD_LG2))
        pts.type = t = entry_type(level, raw)
        examined += 1

    u.unmapped += num_oas << isz(pts)
    yield from finish_level(pts, start_index, examined, num_oas + tables_cleared,
                            (flush_start, flush_end))
    return ret


def finish_level(pts: State, start_index: int, examined: int, cleared: int,
                 changed: tuple[int | None, int | None]) -> Gen:
    """The end of one unmap level: one work charge for its loop (tables.work: every
    item loaded was examined; the leaves and fully covered table items were
    cleared), then its flush of the ``changed`` span."""
    yield work(ITEM_EXAMINE, examined)
    if cleared:
        yield work(ITEM_WRITE, cleared)
    flush_start, flush_end = changed
    if pts.range.common.fixes.unmap_flush_changed_only:
        if flush_start is not None and flush_end is not None and flush_start != flush_end:
            yield from flush_writes_range(pts, flush_start, flush_end, CAUSE_UNMAP)
    else:
        # Before 5815d930: flush every item the walk visited, changed or not.
        yield from flush_writes_range(pts, start_index, pts.index, CAUSE_UNMAP)


def unmap_range(c: Common, iova: int, length: int, gather: Gather) -> Gen:
    """pt_iommu unmap_range: bytes unmapped (0 on a bad range); never an errno."""
    yield W_OP_CALL
    if make_range_checked_len(iova, length):
        return 0
    top = yield (LOAD, c.top_word_pa)
    rng = make_range(c, top, iova, iova + length - 1)
    if check_range(rng):
        return 0
    u = UnmapArgs()
    yield from unmap_level(rng, u, rng.top_level, rng.top_table)
    # The short-gather fix: gather what was really unmapped, which is more than
    # asked when the range ends inside a large leaf.
    gathered = u.unmapped if c.fixes.gather_unmapped_length else length
    yield from gather_range_pages(c, gather, iova, gathered, u.free_list)
    return u.unmapped
