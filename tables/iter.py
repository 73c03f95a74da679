"""Ranges, per-level walk state and index arithmetic (the kernel's pt_iter.h).

A ``Range`` is an inclusive VA span plus a snapshot of the top of the table; its
``va`` moves lazily as a walk advances. A ``State`` is one level of a walk. Only
the functions that read or write table items are generators (they yield LOADs and
STOREs); the index arithmetic is plain Python.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .common import TOP_LEVEL_MASK, Common
from .errors import EINVAL, ERANGE
from .formats.base import EMPTY, ITEM_WORD_LG2, OA, TABLE
from .log2 import U64, div_eq, mod_eq_max, set_mod, set_mod_max
from .transactions import CMPXCHG, LOAD, STORE

Gen = Generator[tuple[Any, ...], Any, Any]


class Range:
    __slots__ = ("common", "last_va", "max_vasz_lg2", "top_level", "top_table", "va")

    def __init__(
        self,
        common: Common,
        top_table: int,
        top_level: int,
        va: int,
        last_va: int,
        max_vasz_lg2: int,
    ) -> None:
        self.common = common
        self.top_table = top_table
        self.top_level = top_level
        self.va = va
        self.last_va = last_va
        self.max_vasz_lg2 = max_vasz_lg2

    def copy(self, va: int | None = None, last_va: int | None = None) -> Range:
        return Range(
            self.common,
            self.top_table,
            self.top_level,
            self.va if va is None else va,
            self.last_va if last_va is None else last_va,
            self.max_vasz_lg2,
        )


class State:
    __slots__ = ("end_index", "entry", "index", "level", "range", "table", "table_lower", "type")

    def __init__(self, rng: Range, level: int, table: int) -> None:
        self.range = rng
        self.table = table
        self.level = level
        self.table_lower = 0
        self.entry = 0
        self.type = EMPTY
        self.index = 0
        self.end_index = 0


# --- ranges ---------------------------------------------------------------------------
def top_range(c: Common, top_of_table: int) -> Range:
    """_pt_top_range: the span the given top can translate (lower half if sign-extended)."""
    level = top_of_table & TOP_LEVEL_MASK
    fmt = c.fmt
    vasz = c.max_vasz_lg2
    if c.dynamic_top and level != fmt.max_top_level:
        vasz = min(vasz, fmt.num_items_lg2(c, level) + fmt.isz[level])
    span = vasz - 1 if c.sign_extend else vasz
    return Range(c, top_of_table & ~TOP_LEVEL_MASK, level, 0, set_mod_max(0, span), vasz)


def make_range(c: Common, top_of_table: int, va: int, last_va: int) -> Range:
    """pt_make_range: the top range with va/last replaced; not checked."""
    rng = top_range(c, top_of_table)
    rng.va = va
    rng.last_va = last_va
    return rng


def all_range(c: Common, top_of_table: int) -> Range:
    """pt_all_range: the whole table; with SIGN_EXTEND pretend it is linear from 0."""
    rng = top_range(c, top_of_table)
    if c.sign_extend:
        rng.last_va = set_mod_max(0, rng.max_vasz_lg2)
    return rng


def upper_range(c: Common, top_of_table: int) -> Range:
    """pt_upper_range: the sign-extended upper half (the whole table otherwise)."""
    rng = top_range(c, top_of_table)
    if c.sign_extend:
        rng.va = set_mod(U64, 0, rng.max_vasz_lg2 - 1)
        rng.last_va = U64
    return rng


def check_range(rng: Range) -> int:
    """pt_check_range: 0, or -ERANGE when va/last_va lie outside the table.

    Only bits above max_vasz are compared with the sign prefix taken from va, so an
    upper-half va with bit N-1 clear passes (generic_pt.md 1.7, a faithful quirk).
    """
    c = rng.common
    vasz = rng.max_vasz_lg2
    if c.debug:
        c.warn_on(not vasz, "range without a VA size")
    if c.sign_extend:
        if c.debug:
            c.warn_on(c.max_vasz_lg2 != vasz, "sign-extended range of a partial top")
        prefix = U64 if rng.va >> (vasz - 1) else 0
    else:
        prefix = 0
    if not div_eq(rng.va, prefix, vasz) or not div_eq(rng.last_va, prefix, vasz):
        return -ERANGE
    return 0


# --- index arithmetic -----------------------------------------------------------------
def table_oa_lg2sz(pts: State) -> int:
    rng = pts.range
    if rng.top_level == pts.level:
        return rng.max_vasz_lg2
    c = rng.common
    return min(c.max_vasz_lg2, c.fmt.num_items_lg2(c, pts.level) + c.fmt.isz[pts.level])


def range_to_index(pts: State) -> int:
    rng = pts.range
    c = rng.common
    isz = c.fmt.isz[pts.level]
    if c.debug:
        c.warn_on(pts.level > rng.top_level, "level above the top")
    if rng.top_level == pts.level:
        return (rng.va & ((1 << rng.max_vasz_lg2) - 1)) >> isz
    return (rng.va >> isz) & ((1 << c.fmt.num_items_lg2(c, pts.level)) - 1)


def range_to_end_index(pts: State) -> int:
    rng = pts.range
    c = rng.common
    isz = c.fmt.isz[pts.level]
    if rng.va == rng.last_va:
        return pts.index + 1
    if rng.top_level == pts.level:
        return ((rng.last_va & ((1 << rng.max_vasz_lg2) - 1)) >> isz) + 1
    n = c.fmt.num_items_lg2(c, pts.level)
    if div_eq(rng.va, rng.last_va, n + isz):
        return ((rng.last_va >> isz) & ((1 << n) - 1)) + 1
    return 1 << n


def iter_first(pts: State) -> None:
    """range_to_index and range_to_end_index, inlined: every table a walk visits
    starts here (one format lookup, no helper calls)."""
    rng = pts.range
    c = rng.common
    level = pts.level
    fmt = c.fmt
    isz = fmt.isz[level]
    if c.debug:
        c.warn_on(level > rng.top_level, "level above the top")
    va = rng.va
    last_va = rng.last_va
    if rng.top_level == level:
        mask = (1 << rng.max_vasz_lg2) - 1
        index = (va & mask) >> isz
        end = index + 1 if va == last_va else ((last_va & mask) >> isz) + 1
    else:
        n = fmt.num_items_lg2(c, level)
        index = (va >> isz) & ((1 << n) - 1)
        if va == last_va:
            end = index + 1
        elif ((va ^ last_va) >> (n + isz)) == 0:  # div_eq(va, last_va, n + isz)
            end = ((last_va >> isz) & ((1 << n) - 1)) + 1
        else:
            end = 1 << n
    pts.index = index
    pts.end_index = end
    if c.debug:
        c.warn_on(index > end, "walk starts past its end")


def index_to_va(pts: State) -> None:
    """Move range.va to the start of the current item (the lazy VA update);
    table_oa_lg2sz and set_mod inlined (once per item a range walk moves on)."""
    rng = pts.range
    level = pts.level
    c = rng.common
    fmt = c.fmt
    isz = fmt.isz[level]
    if rng.top_level == level:
        lg2 = rng.max_vasz_lg2
    else:
        lg2 = min(c.max_vasz_lg2, fmt.num_items_lg2(c, level) + isz)
    rng.va = ((rng.va & ~((1 << lg2) - 1)) | (pts.index << isz)) & U64


def next_entry(pts: State) -> None:
    """Advance past the current entry; a contiguous leaf skips to its block's end."""
    if pts.type == OA:
        n = num_contig_lg2(pts)
        pts.index = set_mod(pts.index + (1 << n), 0, n)
    else:
        pts.index += 1
    index_to_va(pts)


def entry_fully_covered(pts: State, oasz_lg2: int) -> bool:
    rng = pts.range
    if rng.va & ((1 << oasz_lg2) - 1):
        return False
    if not div_eq(rng.va, rng.last_va, oasz_lg2):
        return True
    return mod_eq_max(rng.last_va, oasz_lg2)


# --- entry decode helpers -------------------------------------------------------------
def item_pa(pts: State, index: int | None = None) -> int:
    return pts.table + ((pts.index if index is None else index) << ITEM_WORD_LG2)


def isz(pts: State) -> int:
    return pts.range.common.fmt.isz[pts.level]


def num_contig_lg2(pts: State) -> int:
    c = pts.range.common
    return c.fmt.entry_num_contig_lg2(c, pts.level, pts.entry)


def entry_oa_lg2sz(pts: State) -> int:
    return num_contig_lg2(pts) + isz(pts)


def entry_oa(pts: State) -> int:
    c = pts.range.common
    return c.fmt.entry_oa(c, pts.level, pts.entry)


def item_oa(pts: State) -> int:
    """OA of this item: entry OA ORed with the whole table index (generic_pt.md 1.8).

    Correct only for a block starting at index 0, as the kernel's default is.
    """
    return entry_oa(pts) | (pts.index << isz(pts))


def entry_oa_exact(pts: State) -> int:
    return entry_oa(pts) | (pts.range.va & ((1 << entry_oa_lg2sz(pts)) - 1))


def table_pa(pts: State) -> int:
    c = pts.range.common
    return c.fmt.table_pa(c, pts.entry)


# --- memory access (generators) -------------------------------------------------------
def load_entry_raw(pts: State) -> Gen:
    """pt_load_entry_raw: read the item at pts.index; returns its type."""
    pts.entry = raw = yield (LOAD, pts.table + (pts.index << ITEM_WORD_LG2))
    pts.type = t = pts.range.common.fmt.entry_type(pts.level, raw)
    return t


def load_entry(pts: State) -> Gen:
    """pt_load_entry: load_entry_raw plus the child table of a TABLE item."""
    t = yield from load_entry_raw(pts)
    if t == TABLE:
        pts.table_lower = table_pa(pts)
    return t


def load_single_entry(pts: State) -> Gen:
    pts.index = range_to_index(pts)
    t = yield from load_entry(pts)
    return t


def table_install(pts: State, entry: int) -> Gen:
    """pt_table_install64: cmpxchg-release against pts.entry; True when installed."""
    found = yield (CMPXCHG, pts.table + (pts.index << ITEM_WORD_LG2), pts.entry, entry)
    if found == pts.entry:
        pts.entry = entry
        return True
    return False


def install_table(pts: State, table_pa_: int) -> Gen:
    c = pts.range.common
    installed = yield from table_install(pts, c.fmt.table_entry(c, pts.level, table_pa_))
    return installed


def check_install_leaf_args(pts: State, oa: int, oasz_lg2: int) -> bool:
    """pt_check_install_leaf_args: the debug checks every leaf install makes."""
    c = pts.range.common
    if not c.debug:
        return True  # every warn_on below is false without debug
    size = isz(pts)
    if c.warn_on(oa & ((1 << oasz_lg2) - 1) != 0, "leaf OA not aligned to its size"):
        return False
    if c.fmt.possible_sizes_native:
        bad = size > oasz_lg2 or oasz_lg2 > size + c.fmt.num_items_lg2(c, pts.level)
    else:
        bad = oasz_lg2 != size and oasz_lg2 != size + c.fmt.contig_count_lg2(c, pts.level)
    if c.warn_on(bad, "leaf size not possible at this level"):
        return False
    return not c.warn_on(
        pts.index & ((1 << (oasz_lg2 - size)) - 1) != 0, "contiguous leaf index misaligned"
    )


def install_leaf_entry(pts: State, oa: int, oasz_lg2: int, attrs: int) -> Gen:
    """Write a leaf into every item of its block (2**(oasz_lg2 - isz) items)."""
    c = pts.range.common
    if not check_install_leaf_args(pts, oa, oasz_lg2):
        return
    entry = c.fmt.leaf_entry(c, pts.level, oa, oasz_lg2, attrs)
    base = pts.table + (pts.index << ITEM_WORD_LG2)
    n = 1 << (oasz_lg2 - isz(pts))
    # ARMv8 advances the OA in each item of a contiguous block; the others repeat it.
    stride = c.fmt.leaf_item_stride(c, pts.level) if n > 1 else 0
    for k in range(n):
        yield (STORE, base + (k << ITEM_WORD_LG2), entry + k * stride)
    # As armv8.h does, a contiguous install leaves pts.entry one stride past the block.
    pts.entry = entry + n * stride


def clear_entries(pts: State, num_contig_lg2_: int) -> Gen:
    """Zero 2**num_contig_lg2_ items from pts.index (must be aligned to the block)."""
    c = pts.range.common
    if c.debug:
        c.warn_on(pts.index & ((1 << num_contig_lg2_) - 1) != 0, "clear of a misaligned block")
    base = pts.table + (pts.index << ITEM_WORD_LG2)
    for k in range(1 << num_contig_lg2_):
        yield (STORE, base + (k << ITEM_WORD_LG2), 0)


def returning(value: Any) -> Gen:
    """A generator that yields nothing and returns ``value``."""
    return value
    yield  # pragma: no cover - makes this a generator


def descend(pts: State, fn: Any, arg: Any) -> Gen:
    """pt_descend: the walk of ``fn`` over the child table of the current item.

    It returns the child's generator rather than wrapping it, so a transaction the
    child yields does not pass through one more generator frame per level.
    """
    c = pts.range.common
    if c.debug and c.warn_on(not pts.table_lower, "descend into a NULL table"):
        return returning(-EINVAL)
    return fn(pts.range, arg, pts.level - 1, pts.table_lower)


def walk_descend_all(pts: State, fn: Any, arg: Any) -> Gen:
    """pt_walk_descend_all: walk the whole child table with a fresh child range."""
    c = pts.range.common
    size = isz(pts)
    child = pts.range.copy(set_mod(pts.range.va, 0, size), set_mod_max(pts.range.va, size))
    c.warn_on(child.last_va < child.va, "child range inverted")
    c.warn_on(check_range(child) != 0, "child range outside the table")
    if c.warn_on(pts.level == 0, "descend below level 0") or c.warn_on(
        not pts.table_lower, "descend into a NULL table"
    ):
        return -EINVAL
    ret = yield from fn(child, arg, pts.level - 1, pts.table_lower)
    return ret
