"""Dirty tracking: read_and_clear_dirty and the per-format dirty-bit helpers.

AMDv1's and ARMv8's dirty state is the OR over a contiguous block and cleaning
cleans every item; VT-d's is per item. What "dirty" means is the format's
(``item_is_dirty``: a set D bit, or ARMv8's writable DBM item). No cache flush, as in
the kernel (only ARMv8 offers dirty tracking and DMA_INCOHERENT together).
"""

from __future__ import annotations

from .common import Common
from .errors import EOPNOTSUPP
from .formats.base import OA, TABLE
from .gather import Gather
from .iter import (
    Gen,
    Range,
    State,
    check_range,
    descend,
    isz,
    iter_first,
    load_entry,
    make_range,
    next_entry,
    num_contig_lg2,
)
from .map import make_range_checked_len
from .transactions import LOAD, STORE
from .work import CONTIG_SETUP, GATHER, ITEM_EXAMINE, ITEM_WRITE, LEVEL, OP_CALL, work


class DirtyArgs:
    __slots__ = ("gather", "no_clear", "runs")

    def __init__(self, gather: Gather, no_clear: bool) -> None:
        self.gather = gather
        self.no_clear = no_clear
        self.runs: list[tuple[int, int]] = []

    def record(self, iova: int, length: int) -> None:
        """iova_bitmap_set: adjacent runs merge."""
        if self.runs and sum(self.runs[-1]) == iova:
            start, prev = self.runs[-1]
            self.runs[-1] = (start, prev + length)
        else:
            self.runs.append((iova, length))


def _block(pts: State) -> range:
    """The items whose D bits make up this entry's dirty state."""
    c = pts.range.common
    n = num_contig_lg2(pts) if c.fmt.dirty_whole_block else 0
    first = pts.index & ~((1 << n) - 1)
    return range(first, first + (1 << n))


def is_write_dirty(pts: State) -> Gen:
    """Read the D bits from memory (the walker sets them there, not in pts.entry)."""
    c = pts.range.common
    for index in _block(pts):
        value = yield (LOAD, pts.table + index * 8)
        if c.fmt.item_is_dirty(c, value):
            return True
    return False


def make_write_clean(pts: State) -> Gen:
    c = pts.range.common
    for index in _block(pts):
        pa = pts.table + index * 8
        value = yield (LOAD, pa)
        yield (STORE, pa, c.fmt.item_make_clean(c, value))


def record_dirty(pts: State, dirty: DirtyArgs, n: int) -> Gen:
    """Report one dirty entry and, unless NO_CLEAR, clean it and gather its range.

    Quirk kept from the kernel: for a contiguous block the length is computed from
    an inclusive last index against the exclusive end index, so a block wholly
    inside the range reports one item less than its size.
    """
    if n:
        last_index = pts.index | ((1 << n) - 1)
        end = min(last_index, pts.end_index)
        length = (end - pts.index) << isz(pts)
    else:
        length = 1 << isz(pts)
    dirty.record(pts.range.va, length)
    if not dirty.no_clear:
        yield from make_write_clean(pts)
        dirty.gather.add_range(pts.range.va, length)


def _read_and_clear_dirty(rng: Range, dirty: DirtyArgs, level: int, table: int) -> Gen:
    pts = State(rng, level, table)
    yield work(CONTIG_SETUP)  # this level's loop over the table's items
    iter_first(pts)
    examined = cleaned = recorded = ret = 0
    while pts.index < pts.end_index:
        t = yield from load_entry(pts)
        examined += 1
        if t == TABLE:
            yield work(LEVEL)
            ret = yield from descend(pts, _read_and_clear_dirty, dirty)
            if ret:
                break
        elif t == OA:
            block = len(_block(pts))
            examined += block  # the D bits of the block, read from memory
            is_dirty = yield from is_write_dirty(pts)
            if is_dirty:
                yield from record_dirty(pts, dirty, num_contig_lg2(pts))
                recorded += 1
                cleaned += 0 if dirty.no_clear else block
        next_entry(pts)
    # One charge per level for the whole loop (tables.work).
    yield work(ITEM_EXAMINE, examined)
    if cleaned:
        yield work(ITEM_WRITE, cleaned)
    if recorded and not dirty.no_clear:
        yield work(GATHER, recorded)
    return ret


def read_and_clear_dirty(c: Common, iova: int, size: int, dirty: DirtyArgs) -> Gen:
    """0 or -errno; dirty runs go to ``dirty.runs``, cleaned ranges to its gather."""
    yield work(OP_CALL)
    if not c.fmt.dirty_supported(c):
        return -EOPNOTSUPP
    err = make_range_checked_len(iova, size)
    if err:
        return err
    top = yield (LOAD, c.top_word_pa)
    rng = make_range(c, top, iova, iova + size - 1)
    err = check_range(rng)
    if err:
        return err
    ret = yield from _read_and_clear_dirty(rng, dirty, rng.top_level, rng.top_table)
    c.warn_on(ret != 0, "dirty walk failed")
    return ret
