"""Installing translations: map_range (S6 behaviour) and its helpers.

One call may emit leaves of several page sizes: ``map_range_leaf`` installs up to
``num_leaves`` leaves of the current size, then computes the next size and asks its
caller to walk again (-EAGAIN). Tables are created lock-free: a new table is
installed by cmpxchg; the loser frees its page and walks the winner's table.

On a DMA_INCOHERENT table every write is flushed before the map returns, and the
SW_BIT_CACHE_FLUSH_DONE protocol makes a mapper flush a table pointer that another
CPU installed but has not flushed yet (generic_pt.md 5.3-5.4).
"""

from __future__ import annotations

from .common import Common
from .errors import EADDRINUSE, EAGAIN, EINVAL, ENXIO, EOVERFLOW, EPROTOTYPE, ERANGE
from .formats.base import EMPTY, ITEM_WORD_LG2, TABLE
from .gather import Gather, gather_range_pages, iotlb_sync
from .iter import (
    Gen,
    Range,
    State,
    clear_entries,
    descend,
    index_to_va,
    install_leaf_entry,
    install_table,
    isz,
    iter_first,
    load_entry,
    load_single_entry,
    make_range,
    next_entry,
    table_pa,
    walk_descend_all,
)
from .log2 import U64, ffs, fls
from .pages import ALLOC_NORMAL, flush_writes_item, flush_writes_range, free_table, table_alloc
from .prot import RW
from .top import check_map_range
from .transactions import (
    CAUSE_CLEAR,
    CAUSE_HELPER,
    CAUSE_INSTALL,
    CAUSE_LEAF,
    CMPXCHG,
    FENCE,
    LOAD,
)
from .work import (
    ITEM_EXAMINE,
    ITEM_WRITE,
    W_CONTIG_SETUP,
    W_ITEM_EXAMINE,
    W_ITEM_WRITE,
    W_LEVEL,
    W_OP_CALL,
    W_PGSIZE_SPLIT,
    work,
)

PAGE_SHIFT = 12
SW_BIT_CACHE_FLUSH_DONE = 0


class MapArgs:
    __slots__ = ("attrs", "gather", "leaf_level", "leaf_pgsize_lg2", "num_leaves", "oa")

    def __init__(self, gather: Gather, attrs: int, oa: int) -> None:
        self.gather = gather
        self.attrs = attrs
        self.oa = oa
        self.leaf_pgsize_lg2 = 0
        self.leaf_level = 0
        self.num_leaves = 0


class CollectArgs:
    __slots__ = ("check_mapped", "free_list")

    def __init__(self, check_mapped: bool) -> None:
        self.check_mapped = check_mapped
        self.free_list: list[int] = []


# --- page-size arithmetic (pure) ------------------------------------------------------
def compute_best_pgsize(c: Common, bitmap: int, va: int, last_va: int, oa: int) -> int:
    """pt_compute_best_pgsize: the largest size aligned for va and oa that fits."""
    if c.warn_on(va >= last_va, "best page size of an empty range"):
        return 0
    length = last_va - va + 1
    mask = va | oa | (1 << (fls(length) - 1))
    best = ffs(mask)
    if best < 63:
        bitmap &= (1 << (best + 1)) - 1
    pgsz = fls(bitmap)
    if not pgsz:
        return 0
    pgsz -= 1
    size = 1 << pgsz
    c.warn_on(va & (size - 1) != 0, "best page size: va misaligned")
    c.warn_on(oa & (size - 1) != 0, "best page size: oa misaligned")
    c.warn_on(va + size - 1 > last_va, "best page size overruns the range")
    return pgsz


def pgsz_count(bitmap: int, va: int, last_va: int, oa: int, pgsize_lg2: int) -> int:
    """pt_pgsz_count: leaves of this size until a larger size becomes usable."""
    length = last_va - va + 1
    bigger = bitmap & ~((1 << (pgsize_lg2 + 1)) - 1)
    if bigger:
        n = ffs(bigger)
        if (va ^ oa) & ((1 << n) - 1) == 0:
            length = min(length, (va | ((1 << n) - 1)) - va + 1)
    return length >> pgsize_lg2


def best_pgsize_here(pts: State, oa: int) -> int:
    """compute_best_pgsize for the leaf sizes of this level only."""
    c = pts.range.common
    if not c.fmt.can_have_leaf(pts.level):
        return 0
    bitmap = c.fmt.possible_sizes(c, pts.level) & c.pgsize_bitmap
    return compute_best_pgsize(c, bitmap, pts.range.va, pts.range.last_va, oa)


# --- SW bits --------------------------------------------------------------------------
def test_sw_bit_acquire(pts: State, bitnr: int) -> Gen:
    """smp_mb(), then test the bit in the entry this CPU already loaded."""
    yield (FENCE,)
    c = pts.range.common
    return bool(pts.entry & c.fmt.sw_bit(bitnr))


def set_sw_bit_release(pts: State, bitnr: int) -> Gen:
    """OR a SW bit into the item with a cmpxchg loop starting from pts.entry."""
    c = pts.range.common
    mask = c.fmt.sw_bit(bitnr)
    pa = pts.table + pts.index * 8
    while True:
        found = yield (CMPXCHG, pa, pts.entry, pts.entry | mask)
        if found == pts.entry:
            pts.entry |= mask
            return
        pts.entry = found


# --- tables ---------------------------------------------------------------------------
def collect_tables(rng: Range, collect: CollectArgs, level: int, table: int) -> Gen:
    """__collect_tables: list every table below; in check mode any leaf is EADDRINUSE."""
    if not collect.check_mapped and level == 0:
        return 0
    pts = State(rng, level, table)
    yield W_CONTIG_SETUP
    iter_first(pts)
    examined = 0
    ret = 0
    while pts.index < pts.end_index:
        t = yield from load_entry(pts)
        examined += 1
        if t == TABLE:
            collect.free_list.append(pts.table_lower)
            yield W_LEVEL
            ret = yield from descend(pts, collect_tables, collect)
            if ret:
                break
        elif t != EMPTY and collect.check_mapped:
            ret = -EADDRINUSE
            break
        next_entry(pts)
    yield work(ITEM_EXAMINE, examined)
    return ret


def new_table(pts: State, attrs: int) -> Gen:
    """pt_iommu_new_table: allocate, install by cmpxchg, flush, mark FLUSH_DONE."""
    c = pts.range.common
    if c.warn_on(pts.level == 0, "new table at level 0"):
        return -ENXIO
    size_lg2 = c.fmt.num_items_lg2(c, pts.level - 1) + 3
    pa = yield from table_alloc(c, size_lg2, ALLOC_NORMAL)
    if pa < 0:
        return pa
    yield W_ITEM_WRITE
    installed = yield from install_table(pts, pa)
    if not installed:
        yield from free_table(pa)  # another CPU won: walk its table instead
        return -EAGAIN
    if c.flushing:
        yield from flush_writes_item(pts, CAUSE_INSTALL)
        if c.fixes.flush_done_sw_bit:
            yield from set_sw_bit_release(pts, SW_BIT_CACHE_FLUSH_DONE)
    if c.debug:
        # The format may not be able to store this address (kunit on odd CPUs).
        yield from load_single_entry(pts)
        if c.warn_on(table_pa(pts) != pa, "table address not representable"):
            yield from clear_entries(pts, 0)
            yield from free_table(pa)
            return -EINVAL
    pts.table_lower = pa
    return 0


def clear_contig(start: State, gather: Gather, step: int) -> Gen:
    """Make room for a leaf of ``step`` items: free empty tables, refuse leaves."""
    c = start.range.common
    rng = start.range.copy()
    pts = State(rng, start.level, start.table)
    pts.index = start.index
    pts.end_index = start.index + step
    yield work(ITEM_EXAMINE, step)  # the C loop checks every item of the block
    while pts.index < pts.end_index:
        t = yield from load_entry(pts)
        if t == TABLE:
            collect = CollectArgs(check_mapped=True)
            yield W_LEVEL
            ret = yield from walk_descend_all(pts, collect_tables, collect)
            if ret:
                return ret
            # Clear the item before the gather may free what it pointed to.
            yield W_ITEM_WRITE
            yield from clear_entries(pts, 0)
            yield from flush_writes_item(pts, CAUSE_CLEAR)
            collect.free_list.append(table_pa(pts))
            yield from gather_range_pages(c, gather, rng.va, 1 << isz(pts), collect.free_list)
        elif t != EMPTY:
            return -EADDRINUSE
        next_entry(pts)
    return 0


# --- the walk -------------------------------------------------------------------------
def install_leaves(pts: State, m: MapArgs, step: int, start_index: int) -> Gen:
    """The loop of __map_range_leaf: (0 or -errno, the OA after the last leaf)."""
    c = pts.range.common
    entry_type = c.fmt.entry_type
    leaf_lg2 = m.leaf_pgsize_lg2
    need_contig = step > 1
    oa = m.oa
    ret = 0
    examined = written = 0
    while True:
        # load_entry_raw inlined (a generator fewer per item loaded; the same LOAD).
        pts.entry = raw = yield (LOAD, pts.table + (pts.index << ITEM_WORD_LG2))
        pts.type = t = entry_type(pts.level, raw)
        examined += 1
        if t != EMPTY or need_contig:
            if pts.index != start_index:
                index_to_va(pts)
            ret = yield from clear_contig(pts, m.gather, step)
            if ret:
                break
        if c.debug:
            index_to_va(pts)
            c.warn_on(best_pgsize_here(pts, oa) != leaf_lg2, "leaf size is not the best one")
        yield from install_leaf_entry(pts, oa, leaf_lg2, m.attrs)
        written += step
        oa += 1 << leaf_lg2
        pts.index += step
        if pts.index >= pts.end_index:
            break
    # One charge for the whole run: the C loop is tight (see tables.work).
    yield work(ITEM_EXAMINE, examined)
    if written:
        yield work(ITEM_WRITE, written)
    return ret, oa


def next_leaf_size(pts: State, m: MapArgs, step: int, start_index: int, orig_end: int) -> Gen:
    """The leaves of this size are used up: 0 when the request is done or the table
    is finished, -EAGAIN to walk this table again with the next size (set in m)."""
    rng = pts.range
    c = rng.common
    leaf_lg2 = m.leaf_pgsize_lg2
    pts.index -= step
    index_to_va(pts)
    pts.index += step
    va_after = rng.va + (1 << leaf_lg2)
    if va_after - 1 == rng.last_va:
        c.warn_on(pts.index != orig_end, "map finished inside a table")
        return 0
    bitmap = c.pgsize_bitmap
    yield W_PGSIZE_SPLIT
    m.leaf_pgsize_lg2 = compute_best_pgsize(c, bitmap, va_after, rng.last_va, m.oa)
    m.leaf_level = c.fmt.pgsz_lg2_to_level(m.leaf_pgsize_lg2)
    m.num_leaves = pgsz_count(bitmap, va_after, rng.last_va, m.oa, m.leaf_pgsize_lg2)
    if pts.index != orig_end:
        if pts.index != start_index:
            index_to_va(pts)
        return -EAGAIN  # walk this table again with the new size
    return 0


def map_range_leaf(rng: Range, m: MapArgs, level: int, table: int) -> Gen:
    """__map_range_leaf: install leaves of m.leaf_pgsize_lg2 in this table."""
    c = rng.common
    fmt = c.fmt
    pts = State(rng, level, table)
    c.warn_on(m.leaf_level != level, "leaf walker at the wrong level")
    c.warn_on(not fmt.can_have_leaf(level), "leaf at a level without leaves")
    step_lg2 = m.leaf_pgsize_lg2 - fmt.isz[level]
    step = 1 << step_lg2

    iter_first(pts)
    start_index = pts.index
    orig_end = pts.end_index
    avail = (pts.end_index - pts.index) >> step_lg2
    if m.num_leaves <= avail:
        pts.end_index = pts.index + (m.num_leaves << step_lg2)
        remaining = 0
    else:
        remaining = m.num_leaves - avail

    yield W_CONTIG_SETUP
    ret, oa = yield from install_leaves(pts, m, step, start_index)
    yield from flush_writes_range(pts, start_index, pts.index, CAUSE_LEAF)
    m.oa = oa
    m.num_leaves = remaining
    if ret or remaining:
        return ret
    ret = yield from next_leaf_size(pts, m, step, start_index, orig_end)
    return ret


def map_range_level(rng: Range, m: MapArgs, level: int, table: int) -> Gen:
    """__map_range: walk down, creating tables, to the level of the leaves."""
    c = rng.common
    pts = State(rng, level, table)
    c.warn_on(m.leaf_level == level, "table walker at the leaf level")
    c.warn_on(level == 0, "table walker at level 0")
    yield W_CONTIG_SETUP  # this level's loop over the table's items
    iter_first(pts)
    entry_type = c.fmt.entry_type
    while True:
        # load_entry_raw inlined (a generator fewer per level walked; the same LOAD).
        pts.entry = raw = yield (LOAD, pts.table + (pts.index << ITEM_WORD_LG2))
        pts.type = t = entry_type(level, raw)
        yield W_ITEM_EXAMINE
        if t != TABLE:
            if t != EMPTY:
                return -EADDRINUSE
            ret = yield from new_table(pts, m.attrs)
            if ret:
                return ret  # -EAGAIN: the caller walks this level again
        else:
            pts.table_lower = table_pa(pts)
            # Another CPU may still be about to flush the pointer it installed;
            # flush it too so that everything on our path is visible on return.
            if c.flushing and c.fixes.flush_done_sw_bit:
                done = yield from test_sw_bit_acquire(pts, SW_BIT_CACHE_FLUSH_DONE)
                if not done:
                    yield from flush_writes_item(pts, CAUSE_HELPER)
        while True:
            fn = map_range_leaf if m.leaf_level == level - 1 else map_range_level
            yield W_LEVEL
            ret = yield from descend(pts, fn, m)
            if ret != -EAGAIN:
                break
        if ret:
            return ret
        pts.index += 1
        index_to_va(pts)
        if pts.index >= pts.end_index:
            break
        if m.leaf_level == level:
            return -EAGAIN  # the leaves moved up to this level: use the leaf walker
    return 0


def map_single_page(rng: Range, m: MapArgs, level: int, table: int) -> Gen:
    """__map_single_page: one 4 KiB leaf into existing tables, no flush, no alloc."""
    if level < 0:
        return -EPROTOTYPE
    pts = State(rng, level, table)
    t = yield from load_single_entry(pts)
    yield W_ITEM_EXAMINE
    if level == 0:
        if t != EMPTY:
            return -EADDRINUSE
        yield W_ITEM_WRITE
        yield from install_leaf_entry(pts, m.oa, PAGE_SHIFT, m.attrs)
        m.oa += 1 << PAGE_SHIFT
        return 0
    if t == TABLE:
        yield W_LEVEL
        ret = yield from descend(pts, map_single_page, m)
        return ret
    return -EAGAIN


def do_map(rng: Range, c: Common, single_page: bool, m: MapArgs) -> Gen:
    # The fast path has no cache flushing; S0 (no cache maintenance) always used it.
    if single_page and not c.flushing:
        ret = yield from map_single_page(rng, m, rng.top_level, rng.top_table)
        if ret != -EAGAIN:
            return ret
    while True:
        fn = map_range_leaf if m.leaf_level == rng.top_level else map_range_level
        ret = yield from fn(rng, m, rng.top_level, rng.top_table)
        if ret != -EAGAIN:
            return ret


def make_range_checked_len(iova: int, length: int) -> int:
    """make_range_no_check's argument checks: 0 or -errno."""
    if iova > U64 or length > U64:
        return -EOVERFLOW
    if length == 0:
        return -EINVAL
    if iova + length - 1 > U64:
        return -EOVERFLOW
    return 0


def map_range(c: Common, iova: int, paddr: int, length: int, prot: int, mapped: list[int]) -> Gen:
    """pt_iommu map_range: 0 or -errno; bytes installed are added to mapped[0]."""
    yield W_OP_CALL
    prot = int(prot)
    if not prot & RW:
        c.warnings.append("map without READ or WRITE")  # a WARN_ON in every build
        return -EINVAL
    if paddr > U64 or (c.max_oasz_lg2 != 64 and paddr >> c.max_oasz_lg2):
        return -ERANGE
    err, attrs = c.fmt.set_prot(c, prot)
    if err:
        return err
    err = make_range_checked_len(iova, length)
    if err:
        return err
    top = yield (LOAD, c.top_word_pa)
    rng = make_range(c, top, iova, iova + length - 1)
    gather = Gather()
    m = MapArgs(gather, attrs, paddr)
    bitmap = c.pgsize_bitmap
    page = 1 << PAGE_SHIFT
    single_page = False
    if c.fmt.has_system_page_size() and length == page and bitmap & page:
        if (iova | paddr) & (page - 1):
            return -ENXIO
        m.leaf_pgsize_lg2 = PAGE_SHIFT
        m.leaf_level = 0
        m.num_leaves = 1
        single_page = True
    else:
        yield W_PGSIZE_SPLIT
        m.leaf_pgsize_lg2 = compute_best_pgsize(c, bitmap, rng.va, rng.last_va, paddr)
        if not m.leaf_pgsize_lg2:
            return -ENXIO
        m.leaf_level = c.fmt.pgsz_lg2_to_level(m.leaf_pgsize_lg2)
        m.num_leaves = pgsz_count(bitmap, rng.va, rng.last_va, paddr, m.leaf_pgsize_lg2)

    ret, rng = yield from check_map_range(c, rng, m)
    if ret:
        return ret
    c.warn_on(m.leaf_level > rng.top_level, "leaf above the top")
    ret = yield from do_map(rng, c, single_page, m)
    # Tables replaced by large leaves may still be in walk caches: flush, then free.
    if gather.freelist:
        yield from iotlb_sync(c, gather)
    c.warn_on(not ret and m.oa - paddr != length, "map installed a different length")
    mapped[0] += m.oa - paddr
    return ret
