"""What the cross-implementation suites share: which old drivers exist, their genpt twins,
a LegacyTable that answers the questions the genpt test helpers ask, and the table of
named differences between old and new code.

``IMPLEMENTATIONS`` (tables/iopgtable/table.py) pairs each genpt format with the code
it replaced. A suite parametrised with ``legacy_params()`` runs once per pair; a pair
whose driver module (or genpt format) is not in the tree yet is skipped with a reason
saying so, never silently.

The twin of an old driver is the genpt ``PageTable`` of the same format and geometry
(the kunit_iommu_cmp.h fixture's ``ref_table``). ``LegacyView`` decodes the old
driver's memory with the twin's format code: the formats are hardware layouts, so this
is exactly how the IOMMU reads the old tables, and it lets census, check_iova and
count_valids -- written for genpt -- read them unchanged.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import pytest

from iommusim.tables import FORMATS, PageTable
from iommusim.tables.common import top_set
from iommusim.tables.iopgtable import IMPLEMENTATIONS, LegacyTable

# genpt format -> PageTable keyword arguments with the old driver's default geometry.
TWINS: dict[str, dict[str, Any]] = {
    "amdv1": {},  # mode 3 (level 2) at the start, grows to 6 levels / 64 bits
    "x86_64": {"vasz_lg2": 48, "top_level": 3, "features": {"sign_extend"}},  # 4 levels
    "vtdss": {"vasz_lg2": 48, "top_level": 3},  # agaw 2: 4 levels, 48 bits
    "armv8": {"vasz_lg2": 48},  # stage 1, 4K granule, ias 48: 4 levels
}


def missing(fmt: str) -> str | None:
    """Why the pair of ``fmt`` cannot run yet, or None."""
    module = IMPLEMENTATIONS[fmt][1].split(":")[0]
    if importlib.util.find_spec(f"iommusim.tables.iopgtable.{module}") is None:
        return f"tables/iopgtable/{module}.py ({IMPLEMENTATIONS[fmt][0]}) is not written yet"
    if fmt not in FORMATS:
        return f"the genpt format {fmt!r} is not written yet"
    return None


def legacy_params(formats: tuple[str, ...] = tuple(IMPLEMENTATIONS)) -> list[Any]:
    """One pytest param per (format, old implementation), id = the implementation."""
    params = []
    for fmt in formats:
        reason = missing(fmt)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(fmt, id=IMPLEMENTATIONS[fmt][0], marks=marks))
    return params


@pytest.fixture(params=legacy_params())
def legacy_fmt(request: pytest.FixtureRequest) -> str:
    """The genpt format whose old implementation the test runs (every pair)."""
    return request.param


GEOMETRY = ("vasz_lg2", "oasz_lg2", "top_level", "features")


def twin(fmt: str, **kwargs: Any) -> PageTable:
    """The genpt table an old driver is compared with; geometry keywords given to the
    old table (``GEOMETRY``) override the default twin's."""
    return PageTable(fmt, **{**TWINS[fmt], **kwargs})


class LegacyView(LegacyTable):
    """A LegacyTable plus the ``PageTable`` attributes genpt's test helpers read.

    ``common`` is the twin's: format, geometry and features for decoding. The top is
    the root the driver programmed the hardware with (its last CHANGE_TOP), packed as
    genpt packs ``top_of_table``, so every genpt walk given ``top`` reads the old
    driver's tables.
    """

    def __init__(self, fmt: str, **kwargs: Any) -> None:
        super().__init__(fmt, **kwargs)
        self.twin = twin(fmt, **{k: v for k, v in kwargs.items() if k in GEOMETRY})
        self.common = self.twin.common

    @property
    def top_table_pa(self) -> int:
        return self.executor.roots[self.drv.domain][0]

    @property
    def top_level(self) -> int:
        return self.executor.roots[self.drv.domain][1]

    @property
    def top_of_table(self) -> int:
        return top_set(self.top_table_pa, self.top_level)

    @property
    def vasz_lg2(self) -> int:
        return self.common.max_vasz_lg2

    @property
    def oasz_lg2(self) -> int:
        return self.common.max_oasz_lg2


# --- the named differences -------------------------------------------------------------------
# Operations are classified on the state before them (the leaves both tables hold):
MAP_OVER_MAPPED = "map over a mapped range"
UNMAP_HOLE = "unmap reaching a hole"
UNMAP_INSIDE = "unmap starting inside a leaf"
UNMAP_SPLIT = "unmap smaller than the leaf it starts"
UNMAP_ENDS_INSIDE = "unmap of several leaves ending inside the last"
# ... and where tables differ with equal translations:
EMPTY_TABLES_KEPT = "empty tables kept after unmap"
TABLE_DIRTY = "dirty bit in table items"
READ_ONLY_DIRTY = "dirty bit in read-only leaves"

EXCLUDE = "exclude"  # the op is not applied to either table: their answers differ
MEMORY = "memory"  # an adjustment of the table comparison


@dataclass(frozen=True)
class Difference:
    """One place where an old implementation legitimately differs from genpt."""

    impl: str
    case: str
    action: str
    old: str  # what the old code does, and in which kernel function
    new: str  # what genpt does, and where


# fmt: off
DIFFERENCES = [
    # --- AMD v1 (drivers/iommu/amd/io_pgtable.c) vs genpt amdv1
    Difference("amd-v1", MAP_OVER_MAPPED, EXCLUDE,
               "iommu_v1_map_pages / alloc_pte: tears down what is there and maps",
               "__map_range / clear_contig: -EADDRINUSE, nothing changed"),
    Difference("amd-v1", UNMAP_HOLE, EXCLUDE,
               "fetch_pte skips the present test at level 0: holes are zeroed and counted",
               "__unmap_range: stops at the first hole"),
    Difference("amd-v1", UNMAP_INSIDE, EXCLUDE,
               "iommu_v1_unmap_pages: fetch_pte finds the leaf, all of it is removed",
               "__unmap_range: a leaf not starting at va is kept, 0 bytes"),
    Difference("amd-v1", EMPTY_TABLES_KEPT, MEMORY,
               "iommu_v1_unmap_pages frees no table (until free_pgtable)",
               "__unmap_range frees every fully covered table (gather, after the sync)"),
    # --- AMD v2 (drivers/iommu/amd/io_pgtable_v2.c, 2024) vs genpt x86_64
    Difference("amd-v2", MAP_OVER_MAPPED, EXCLUDE,
               "iommu_v2_map_pages / v2_alloc_pte: clears the way, frees what was there",
               "__map_range / clear_contig: -EADDRINUSE, nothing changed"),
    Difference("amd-v2", UNMAP_HOLE, EXCLUDE,
               "iommu_v2_unmap_pages: fetch_pte never tests the leaf: holes counted",
               "__unmap_range: stops at the first hole"),
    Difference("amd-v2", UNMAP_INSIDE, EXCLUDE,
               "iommu_v2_unmap_pages: the whole leaf under va is removed",
               "__unmap_range: a leaf not starting at va is kept, 0 bytes"),
    Difference("amd-v2", EMPTY_TABLES_KEPT, MEMORY,
               "iommu_v2_unmap_pages frees no table (until v2_free_pgtable)",
               "__unmap_range frees every fully covered table (gather, after the sync)"),
    Difference("amd-v2", TABLE_DIRTY, MEMORY,
               "set_pgtable_attr (2024) sets IOMMU_PAGE_DIRTY in pointer items",
               "x86_64 table_entry: P|RW|U|A only"),
    Difference("amd-v2", READ_ONLY_DIRTY, MEMORY,
               "set_pte_attr sets IOMMU_PAGE_DIRTY in every leaf",
               "x86_64 set_prot: D only with IOMMU_WRITE (1978fac2)"),
    # --- VT-d second stage (drivers/iommu/intel/iommu.c) vs genpt vtdss
    Difference("vtd", MAP_OVER_MAPPED, EXCLUDE,
               "__domain_mapping: WARN 'already set', the old leaf stays, returns 0",
               "__map_range / clear_contig: -EADDRINUSE, nothing changed"),
    Difference("vtd", UNMAP_HOLE, EXCLUDE,
               "intel_iommu_unmap / dma_pte_clear_level: holes skipped, the size reported",
               "__unmap_range: stops at the first hole"),
    Difference("vtd", UNMAP_INSIDE, EXCLUDE,
               "dma_pte_clear_level recurses into a partly covered superpage as a table",
               "__unmap_range: a leaf not starting at va is kept, 0 bytes"),
    Difference("vtd", UNMAP_ENDS_INSIDE, EXCLUDE,
               "intel_iommu_unmap widens only a request smaller than its first leaf; "
               "dma_pte_clear_level then walks a partly covered superpage as a table",
               "__unmap_range: the last leaf is removed whole"),
    # --- ARM LPAE (drivers/iommu/io-pgtable-arm.c) vs genpt armv8
    Difference("arm-lpae", MAP_OVER_MAPPED, EXCLUDE,
               "arm_lpae_init_pte / __arm_lpae_map: WARN, -EEXIST",
               "__map_range / clear_contig: -EADDRINUSE"),
    Difference("arm-lpae", UNMAP_HOLE, EXCLUDE,
        "__arm_lpae_unmap: a chunk as large as a table item's block clears that table "
        "item and frees the table whole, holes and all (io_pgtable_tlb_flush_walk, "
        "__arm_lpae_free_pgtable); elsewhere it stops at the hole with a WARN",
        "__unmap_range: stops at the first hole"),
    Difference("arm-lpae", UNMAP_INSIDE, EXCLUDE,
        "__arm_lpae_unmap: 0 bytes as genpt, but WARN_ONCE 'partial large IOPTE'",
        "__unmap_range: 0 bytes, no warning"),
    Difference("arm-lpae", UNMAP_SPLIT, EXCLUDE,
               "__arm_lpae_unmap: WARN 'partial large IOPTE', 0 bytes (33729a5fc0ca)",
               "__unmap_range: the leaf starting at va is removed whole"),
    Difference("arm-lpae", UNMAP_ENDS_INSIDE, EXCLUDE,
               "__arm_lpae_unmap: the core's smaller chunk in the last block unmaps "
               "nothing (WARN), so the request stops before it",
               "__unmap_range: the last leaf is removed whole"),
]
# fmt: on


def differences(impl: str) -> dict[str, Difference]:
    """The named differences of one old implementation, by case."""
    return {d.case: d for d in DIFFERENCES if d.impl == impl}


def classify_unmap(leaves: dict[int, tuple[int, int]], va: int, size: int) -> str | None:
    """Which named case an unmap of [va, va + size) is, given the leaves {start:
    (size, pa)} mapped before it; None when every implementation must agree (whole
    leaves from va, no hole before the end)."""
    covering = [s for s, (sz, _) in leaves.items() if s < va < s + sz]
    if covering:
        return UNMAP_INSIDE
    cur, last, n = va, va + size - 1, 0
    while cur <= last:
        if cur not in leaves:
            return UNMAP_HOLE
        n += 1
        cur += leaves[cur][0]
    if cur - 1 == last:
        return None
    return UNMAP_SPLIT if n == 1 else UNMAP_ENDS_INSIDE
