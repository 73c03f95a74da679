"""Named CPU work: the instruction cost the C code spends between memory accesses.

Table code yields ``work(NAME, count)`` where the kernel's C code does work that is
not a page-table memory access. The names are the keys of the hardware config's
``cpu.work`` node, which gives each its cycles (with where the number comes from);
the direct executor ignores work, a simulated core waits for it.

How to count, so that the old drivers and genpt charge alike for alike:

- ``CORE_CALL`` once per iommu core entry (``iommu_map``, ``iommu_unmap``,
  ``read_and_clear_dirty``); ``OP_CALL`` once per call into the page-table op;
  ``PGSIZE_SPLIT`` once per page-size choice (``iommu_pgsize`` in the old core,
  ``pt_compute_best_pgsize`` + ``pt_pgsz_count`` in genpt's map).
- ``LEVEL`` once per step from a table item down to its child table (a walk that
  starts again from the root pays its steps again). Its cost is dominated by the
  load-to-use latency of the dependent load that follows: see ``hwmodels.config``.
- ``ITEM_EXAMINE`` once per item loaded and checked, the table items a walk follows
  down included; ``ITEM_WRITE`` once per item written (a contiguous block counts
  each of its items).
- ``CONTIG_SETUP`` once per loop over a table's items: each level of a range walk (a
  recursive walker sets up its index, end and bookkeeping per level; genpt's unrolled
  single-page fast path has no such loop), a leaf run, a replicated block.
  ``GATHER`` once per gather bookkeeping call.

Where the C code is a tight loop over items, one ``work(NAME, n)`` is yielded for
the whole run, not one per item: a yield per level or per run keeps the Python hot
path fast, and the total charged is the same.
"""

from __future__ import annotations

from .transactions import WORK, Transaction

CORE_CALL = "core_call"
OP_CALL = "op_call"
LEVEL = "level"
ITEM_EXAMINE = "item_examine"
ITEM_WRITE = "item_write"
CONTIG_SETUP = "contig_setup"
PGSIZE_SPLIT = "pgsize_split"
GATHER = "gather"

WORK_NAMES: dict[str, str] = {
    CORE_CALL: "entry and exit of an iommu core call (iommu_map / iommu_unmap), checks included",
    OP_CALL: "entry and exit of the driver's page-table op (map_pages / unmap_pages / map_range)",
    LEVEL: "descending one table level (index arithmetic, the call or loop step)",
    ITEM_EXAMINE: "examining one item that was loaded (decode, type and bound checks)",
    ITEM_WRITE: "building one item to write (encoding address and attributes)",
    CONTIG_SETUP: "setting up a run of contiguous items or a leaf-table batch",
    PGSIZE_SPLIT: "the iommu core choosing one (pgsize, count) chunk (iommu_pgsize)",
    GATHER: "gather bookkeeping for one range or freed table",
}
"""Every name a table operation may charge, with what it stands for."""


def work(name: str, count: int = 1) -> Transaction:
    """The WORK transaction charging ``count`` times the cost named ``name``."""
    return (WORK, name, count)


# Each name charged once, built once: the hot paths yield these constants instead of
# calling work(NAME) (the same tuple, without a call and an allocation per charge).
W_CORE_CALL = work(CORE_CALL)
W_OP_CALL = work(OP_CALL)
W_LEVEL = work(LEVEL)
W_ITEM_EXAMINE = work(ITEM_EXAMINE)
W_ITEM_WRITE = work(ITEM_WRITE)
W_CONTIG_SETUP = work(CONTIG_SETUP)
W_PGSIZE_SPLIT = work(PGSIZE_SPLIT)
W_GATHER = work(GATHER)
