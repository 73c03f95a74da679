"""Single-entry walks: iova_to_phys, set_dirty, and a step-by-step software walk."""

from __future__ import annotations

from dataclasses import dataclass

from .common import Common
from .errors import EAGAIN, ENOENT, EPROTOTYPE
from .formats.base import EMPTY, ENTRY_TYPE_NAMES, TABLE
from .iter import (
    Gen,
    Range,
    State,
    check_range,
    descend,
    entry_oa_exact,
    entry_oa_lg2sz,
    item_pa,
    load_single_entry,
    make_range,
)
from .map import make_range_checked_len
from .transactions import CMPXCHG, LOAD
from .work import ITEM_EXAMINE, LEVEL, OP_CALL, work


def one_va_range(c: Common, iova: int, top: int | None = None) -> Gen:
    """make_range(iova, 1): (0 or -errno, range).

    ``top`` replaces the READ_ONCE of top_of_table: a walk of the hardware view
    starts from the root the hardware was given, not from the CPU's word.
    """
    err = make_range_checked_len(iova, 1)
    if err:
        return err, None
    if top is None:
        top = yield (LOAD, c.top_word_pa)
    rng = make_range(c, top, iova, iova)
    return check_range(rng), rng


def _iova_to_phys(rng: Range, res: list[int], level: int, table: int) -> Gen:
    if level < 0:
        return -EPROTOTYPE
    pts = State(rng, level, table)
    t = yield from load_single_entry(pts)
    yield work(ITEM_EXAMINE)
    if t == EMPTY:
        return -ENOENT
    if t == TABLE:
        yield work(LEVEL)
        ret = yield from descend(pts, _iova_to_phys, res)
        return ret
    res[0] = entry_oa_exact(pts)
    res[1] = entry_oa_lg2sz(pts)
    return 0


def iova_to_phys(c: Common, iova: int) -> Gen:
    """The kernel's iova_to_phys: the physical address, 0 when not mapped.

    Quirk kept from the kernel: when the IOVA is outside the table the negative
    errno is returned cast to phys_addr_t (-ERANGE becomes 0xFFFF...FFDE).
    """
    ret, found = yield from lookup(c, iova)
    if ret == 0:
        return found
    if ret in (-ENOENT, -EPROTOTYPE):
        return 0
    return ret & ((1 << 64) - 1)


def lookup(c: Common, iova: int, top: int | None = None) -> Gen:
    """(0, physical address) or (-errno, 0): iova_to_phys without the casts."""
    ret, phys, _ = yield from lookup_leaf(c, iova, top)
    return ret, phys


def lookup_leaf(c: Common, iova: int, top: int | None = None) -> Gen:
    """(0, physical address, lg2 size of the leaf that maps it) or (-errno, 0, 0).

    Every IOVA under one leaf takes the same walk, so a caller checking a whole range
    needs one walk per leaf, not one per page (the kunit port's check_iova)."""
    yield work(OP_CALL)
    err, rng = yield from one_va_range(c, iova, top)
    if err:
        return err, 0, 0
    res = [0, 0]
    ret = yield from _iova_to_phys(rng, res, rng.top_level, rng.top_table)
    return ret, res[0], res[1]


def _set_dirty(rng: Range, arg: None, level: int, table: int) -> Gen:
    pts = State(rng, level, table)
    t = yield from load_single_entry(pts)
    if t == EMPTY:
        return -ENOENT
    if t == TABLE:
        ret = yield from descend(pts, _set_dirty, arg)
        return ret
    dirtied = yield from make_write_dirty(pts)
    return 0 if dirtied else -EAGAIN


def set_dirty(c: Common, iova: int) -> Gen:
    """The iommufd selftest's set_dirty: mark one leaf dirty (racy by design)."""
    err, rng = yield from one_va_range(c, iova)
    if err:
        return err
    ret = yield from _set_dirty(rng, None, rng.top_level, rng.top_table)
    return ret


def make_write_dirty(pts: State) -> Gen:
    """cmpxchg the current item from pts.entry to its dirty value; True on success."""
    c = pts.range.common
    new = c.fmt.item_make_dirty(c, pts.entry)
    if new is None:
        return False  # ARMv8 without DBM on the item: cannot be made dirty
    found = yield (CMPXCHG, item_pa(pts), pts.entry, new)
    if found == pts.entry:
        pts.entry = new
        return True
    pts.entry = found
    return False


@dataclass(frozen=True)
class WalkStep:
    """One level of a software walk, top to leaf."""

    level: int
    table_pa: int
    index: int
    entry_pa: int
    raw: int
    kind: str  # "empty", "table" or "oa"


def walk_steps(c: Common, iova: int, top: int | None = None) -> Gen:
    """The entries a software walk of ``iova`` reads, as WalkStep records."""
    err, rng = yield from one_va_range(c, iova, top)
    if err:
        return []
    steps: list[WalkStep] = []
    level, table = rng.top_level, rng.top_table
    while level >= 0:
        pts = State(rng, level, table)
        t = yield from load_single_entry(pts)
        kind = ENTRY_TYPE_NAMES[t]
        steps.append(WalkStep(level, table, pts.index, item_pa(pts), pts.entry, kind))
        if t != TABLE:
            break
        level, table = level - 1, pts.table_lower
    return steps
