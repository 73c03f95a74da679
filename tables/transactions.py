"""Transactions: the only way page-table code touches memory, locks or the IOMMU.

Every operation in ``tables`` is a generator that yields transactions and receives
their results. An executor decides what a transaction means: the direct executor
performs it at once on one memory, a simulated CPU core charges it cycles through a
cache model, an explorer chooses which CPU's transaction runs next.

A transaction is a plain tuple whose first element is its kind. Tuples rather than
small classes because a CPU core executes millions of them: creating a tuple costs a
third of creating a slotted object (46 ns against 141 ns per yield, measured).

=====================  ===========================================  ====================
kind                   tuple                                        result sent back
=====================  ===========================================  ====================
``LOAD``               ``(LOAD, pa)``                               the 64-bit word
``STORE``              ``(STORE, pa, value)``                       None
``CMPXCHG``            ``(CMPXCHG, pa, expected, new)``             the word found; the
                                                                    swap happened iff it
                                                                    equals ``expected``
``FLUSH``              ``(FLUSH, pa, nbytes, cause)``               None
``FENCE``              ``(FENCE,)``                                 None
``ALLOC_TABLE``        ``(ALLOC_TABLE, size_lg2)``                  the table's physical
                                                                    address, or None when
                                                                    the allocation failed
``FREE_TABLE``         ``(FREE_TABLE, pa)``                         None
``LOCK``               ``(LOCK, name)``                             None (once held)
``UNLOCK``             ``(UNLOCK, name)``                           None
``WORK``               ``(WORK, cycles)`` or ``(WORK, name, count)`` None
``INVALIDATE_RANGE``   ``(INVALIDATE_RANGE, domain, iova, size,     None
                       leaf_only)``
``INVALIDATE_ALL``     ``(INVALIDATE_ALL, domain)``                 None
``FLUSH_WRITE_BUFFER`` ``(FLUSH_WRITE_BUFFER,)``                    None (once flushed)
``WAIT_INVALIDATION``  ``(WAIT_INVALIDATION,)``                     None (once every
                                                                    earlier command took
                                                                    effect)
``CHANGE_TOP``         ``(CHANGE_TOP, domain, root_pa, top_level)`` None
=====================  ===========================================  ====================

``WORK`` is instruction time that touches no shared state. Table code names its work
(``(WORK, name, count)``, see ``tables.work``; the hardware config gives each name its
cycles as ``cpu.work.<name>``) and a core folds it into the wait before the next
transaction, so charging work never adds a point where another CPU may interleave.
``(WORK, cycles)`` is a plain timed step (tests and synthetic workloads).

``FLUSH`` is x86 ``clflush_cache_range``: it writes back and invalidates every cache
line that overlaps ``[pa, pa + nbytes)``, so a non-snooping walker can see them.
``cause`` says why the code flushed (one of ``FLUSH_CAUSES``), for flush statistics.

``ALLOC_TABLE`` returns memory that is zero in the CPU view only: like the kernel's
page allocator it zeroes through the CPU cache, so a non-snooping walker still sees
the page's old content until the page is flushed (``iommu_pages_start_incoherent``).

The IOMMU commands are what the driver glue sends to the hardware: they enter the
invalidation queue in order; ``WAIT_INVALIDATION`` completes once all earlier commands
have taken effect. ``CHANGE_TOP`` programs a domain's root pointer and top level; it
is also how a domain is attached the first time.
"""

from __future__ import annotations

from typing import Any

LOAD = "load"
STORE = "store"
CMPXCHG = "cmpxchg"
FLUSH = "flush"
FENCE = "fence"
ALLOC_TABLE = "alloc_table"
FREE_TABLE = "free_table"
LOCK = "lock"
UNLOCK = "unlock"
WORK = "work"
INVALIDATE_RANGE = "invalidate_range"
INVALIDATE_ALL = "invalidate_all"
FLUSH_WRITE_BUFFER = "flush_write_buffer"
WAIT_INVALIDATION = "wait_invalidation"
CHANGE_TOP = "change_top"

MEMORY_KINDS = frozenset({LOAD, STORE, CMPXCHG, FLUSH, FENCE})
TABLE_MEMORY_KINDS = frozenset({ALLOC_TABLE, FREE_TABLE})
LOCK_KINDS = frozenset({LOCK, UNLOCK})
IOMMU_COMMAND_KINDS = frozenset(
    {INVALIDATE_RANGE, INVALIDATE_ALL, FLUSH_WRITE_BUFFER, WAIT_INVALIDATION, CHANGE_TOP}
)
TX_FIELDS: dict[str, tuple[str, ...]] = {
    LOAD: ("pa",),
    STORE: ("pa", "value"),
    CMPXCHG: ("pa", "expected", "new"),
    FLUSH: ("pa", "nbytes", "cause"),
    FENCE: (),
    ALLOC_TABLE: ("size_lg2",),
    FREE_TABLE: ("pa",),
    LOCK: ("name",),
    UNLOCK: ("name",),
    WORK: ("cycles",),  # the named form (WORK, name, count) is never traced
    INVALIDATE_RANGE: ("domain", "iova", "size", "leaf_only"),
    INVALIDATE_ALL: ("domain",),
    FLUSH_WRITE_BUFFER: (),
    WAIT_INVALIDATION: (),
    CHANGE_TOP: ("domain", "root_pa", "top_level"),
}
"""The names of each kind's fields, in tuple order (trace records use them)."""

ALL_KINDS = MEMORY_KINDS | TABLE_MEMORY_KINDS | LOCK_KINDS | IOMMU_COMMAND_KINDS | {WORK}

# Why a FLUSH was issued (the flush plots stack lines by these).
CAUSE_TABLE_START = "table_start"  # a new (zeroed) table page made walker-visible
CAUSE_INSTALL = "install"  # the installer flushes the parent item it just wrote
CAUSE_HELPER = "helper"  # a mapper flushes a table pointer another CPU installed
CAUSE_LEAF = "leaf"  # leaf items written by map
CAUSE_CLEAR = "clear"  # a table item cleared to make room for a large leaf
CAUSE_UNMAP = "unmap"  # items cleared by unmap
FLUSH_CAUSES = (
    CAUSE_TABLE_START,
    CAUSE_INSTALL,
    CAUSE_HELPER,
    CAUSE_LEAF,
    CAUSE_CLEAR,
    CAUSE_UNMAP,
)

Transaction = tuple[Any, ...]
