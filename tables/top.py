"""Growing the top of a DYNAMIC_TOP table (increase_top, check_map_range).

New top levels are built off to the side, each linking the previous top at index 0,
flushed once, and published under the driver's top lock: the hardware root first
(``CHANGE_TOP``), then the software ``top_of_table`` word. Two versions exist:
the fixed one (152c862c) and the original, selected by the ``increase_top`` switch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import Common, top_set
from .errors import EAGAIN, ERANGE
from .iter import (
    Gen,
    Range,
    State,
    check_range,
    install_table,
    load_single_entry,
    make_range,
    top_range,
)
from .pages import ALLOC_DEFER_COHERENT_FLUSH, free_table, start_incoherent, table_alloc
from .transactions import CHANGE_TOP, LOAD, LOCK, STORE, UNLOCK
from .work import ITEM_WRITE, work

if TYPE_CHECKING:
    from .map import MapArgs

# What the original code passed to change_top when its loop allocated nothing: the
# locals were never written. We model the uninitialised values as zeros.
UNINITIALISED_TABLE = 0
UNINITIALISED_LEVEL = 0


def top_lock(c: Common) -> str:
    return f"domain{c.domain}.top_lock"


def top_memsize_lg2(c: Common, level: int) -> int:
    """pt_top_memsize_lg2: the allocation size of a top table at ``level``."""
    fmt = c.fmt
    items_lg2 = c.max_vasz_lg2 - fmt.isz[level]
    if level != fmt.max_top_level and c.dynamic_top:
        items_lg2 = min(items_lg2, fmt.num_items_lg2(c, level))
    return max(fmt.top_min_lg2(), items_lg2 + 3)


def increase_top(c: Common, rng: Range, m: MapArgs) -> Gen:
    """Add top levels until ``rng`` fits; 0, -EAGAIN (lost a race) or -errno."""
    fixed = c.fixes.increase_top
    fmt = c.fmt
    old_top = yield (LOAD, c.top_word_pa)
    new_top = old_top
    pages: list[tuple[int, int]] = []  # (table, level) of every new top
    table_mem = UNINITIALISED_TABLE
    new_level = UNINITIALISED_LEVEL
    ret = 0
    while True:
        tr = top_range(c, new_top)
        level = tr.top_level
        tr.va = rng.va
        tr.last_va = rng.last_va
        if check_range(tr) == 0 and m.leaf_level <= level:
            if fixed:
                new_level = level
            break
        level += 1
        if level > fmt.max_top_level or fmt.isz[level] >= c.max_vasz_lg2:
            ret = -ERANGE
            break
        if not fixed:
            new_level = level
        table_mem = yield from table_alloc(c, top_memsize_lg2(c, level), ALLOC_DEFER_COHERENT_FLUSH)
        if table_mem < 0:
            if not fixed:
                return table_mem  # the original returned here, leaking every new top
            ret = table_mem
            break
        pages.append((table_mem, level))
        # The new top points at the previous one from index 0.
        tr.va = 0
        tr.top_level = level
        pts = State(tr, level, table_mem)
        pts.table_lower = tr.top_table
        yield from load_single_entry(pts)
        c.warn_on(pts.index != 0, "new top links the old one away from index 0")
        yield work(ITEM_WRITE)
        yield from install_table(pts, pts.table_lower)
        new_top = top_set(table_mem, level)
    if not ret:
        ret = yield from publish_top(c, pages, old_top, new_top, table_mem, new_level)
        if not ret:
            return 0
    for pa, _ in pages:
        yield from free_table(pa)
    return ret


def publish_top(
    c: Common,
    pages: list[tuple[int, int]],
    old_top: int,
    new_top: int,
    table_mem: int,
    new_level: int,
) -> Gen:
    """Flush the new tops once, then switch hardware and software under the lock.

    Returns -EAGAIN when another CPU changed the top meanwhile (or, fixed, when
    nothing was built: the range already fits a top someone else installed).
    """
    for pa, level in pages:
        yield from start_incoherent(c, pa, top_memsize_lg2(c, level))
    lock = top_lock(c)
    yield (LOCK, lock)
    current = yield (LOAD, c.top_word_pa)
    if current != old_top or (c.fixes.increase_top and old_top == new_top):
        yield (UNLOCK, lock)
        return -EAGAIN
    # Hardware first, then software, so no mapper uses a level the walker does not
    # know yet. No IOTLB flush: a new level above changes nothing that was cached.
    yield (CHANGE_TOP, c.domain, table_mem, new_level)
    yield (STORE, c.top_word_pa, new_top)
    yield (UNLOCK, lock)
    return 0


def check_map_range(c: Common, rng: Range, m: MapArgs) -> Gen:
    """Make sure the top covers ``rng`` at the leaf level; returns (ret, range)."""
    while True:
        ret = check_range(rng)
        if not c.dynamic_top:
            return ret, rng
        if ret == 0 and m.leaf_level <= rng.top_level:
            break
        ret = yield from increase_top(c, rng, m)
        if ret and ret != -EAGAIN:
            return ret, rng
        top = yield (LOAD, c.top_word_pa)
        rng = make_range(c, top, rng.va, rng.last_va)
        if not ret:
            break
    c.warn_on(check_range(rng) != 0, "range still outside the table after growth")
    return 0, rng
