"""AMD IOMMU v1 before genpt (tables/iopgtable/amd_v1.py; legacy_pt.md section 2).

Counts are of page-table items (table memory) unless a test says otherwise; the
domain words (root, mode, seqcount) live in kernel data and are counted apart.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from iommusim.tables import PageTable, Prot, PTError
from iommusim.tables.common import DriverPolicy
from iommusim.tables.executor import DirectExecutor, Interleaver, without_named_work
from iommusim.tables.formats import amdv1 as genpt_amdv1
from iommusim.tables.iopgtable import LegacyTable
from iommusim.tables.iopgtable import amd_v1 as v1
from iommusim.tables.memory import TABLE_REGION_BASE, FaultInjector
from iommusim.tables.transactions import (
    ALLOC_TABLE,
    CHANGE_TOP,
    CMPXCHG,
    FENCE,
    FLUSH,
    FREE_TABLE,
    INVALIDATE_ALL,
    INVALIDATE_RANGE,
    LOAD,
    LOCK,
    STORE,
    UNLOCK,
    WAIT_INVALIDATION,
    WORK,
)
from iommusim.walker.hwformats import LEAF, TABLE, AmdV1Hw
from iommusim.walker.iommu import Iommu

RW = Prot.READ | Prot.WRITE
K, M, G = 1 << 12, 1 << 20, 1 << 30
CONFIG_A = v1.CONFIG_A_PGSIZES
TB = 1 << 40


class Recorder(DirectExecutor):
    """A direct executor that keeps every transaction it performed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log: list[tuple] = []

    def execute(self, tx: tuple, cpu: int = 0) -> Any:
        self.log.append(tx)
        return super().execute(tx, cpu)


def table(**kwargs: Any) -> LegacyTable:
    return LegacyTable("amdv1", executor=Recorder(), **kwargs)


def measure(t: LegacyTable, op: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    """Run ``op`` and tally its transactions: item loads/stores/cmpxchgs, domain-word
    loads, allocations, frees, and the kinds that must never appear."""
    log = t.executor.log
    log.clear()
    result = op()
    data = t.drv.cfg.data_pa
    items = [tx for tx in log if tx[0] in (LOAD, STORE, CMPXCHG) and tx[1] >= TABLE_REGION_BASE]
    tally = {
        "loads": sum(tx[0] == LOAD for tx in items),
        "stores": sum(tx[0] == STORE for tx in items),
        "cas": sum(tx[0] == CMPXCHG for tx in items),
        "meta": sum(tx[0] == LOAD and data <= tx[1] < data + 64 for tx in log),
        "allocs": sum(tx[0] == ALLOC_TABLE for tx in log),
        "frees": sum(tx[0] == FREE_TABLE for tx in log),
        "flushes": sum(tx[0] in (FLUSH, FENCE) for tx in log),
    }
    return result, tally


def commands(t: LegacyTable, kinds: tuple[str, ...] = (INVALIDATE_RANGE, INVALIDATE_ALL)) -> list:
    return [c for c in t.executor.commands if c[0] in kinds]


def leaf_words(t: LegacyTable, iova: int) -> list[int]:
    """The raw items of the leaf (its whole replicated group) holding ``iova``."""
    pte, size = t.run(t.drv.fetch_pte(iova))
    count = v1.page_size_pte_count(size)
    return [t.executor.memory.cpu.get(pte + 8 * i, 0) for i in range(count)]


def hw_translate(t: LegacyTable | PageTable, iova: int) -> int | None:
    """What the IOMMU's walk from the programmed root gives (walker semantics: AMD
    level skipping allowed when the skipped IOVA bits are zero)."""
    hw = AmdV1Hw()
    table_pa, level = t.executor.roots[1]
    if not hw.va_ok(level, iova):
        return None
    words = t.executor.memory.hw
    while True:
        item = hw.decode(level, words.get(table_pa + 8 * hw.index(level, iova), 0))
        if item.kind == TABLE:
            nxt = item.next_level
            if nxt < level - 1 and not Iommu._skipped_bits_clear(hw, iova, level, nxt):
                return None
            table_pa, level = item.addr, nxt
        elif item.kind == LEAF:
            return item.addr | (iova & ((1 << item.size_lg2) - 1))
        else:
            return None


# --- encodings ----------------------------------------------------------------------------
def test_bits_are_the_hardware_layout_genpt_amdv1_uses() -> None:
    """The driver's own constants agree with the layout the walker decodes."""
    assert v1.IOMMU_PTE_PR == genpt_amdv1.PR
    assert v1.IOMMU_PTE_HD == genpt_amdv1.D
    assert (v1.IOMMU_PTE_FC, v1.IOMMU_PTE_IR, v1.IOMMU_PTE_IW) == (
        genpt_amdv1.FC,
        genpt_amdv1.IR,
        genpt_amdv1.IW,
    )
    assert v1.PM_ADDR_MASK == genpt_amdv1.OA_MASK
    assert v1.pm_level_enc(7) == genpt_amdv1.NL_MASK
    assert v1.pm_level_pde(2, 0x1234_5000) == 0x6000_0000_1234_5401


@pytest.mark.parametrize(
    ("size", "level", "count"),
    [
        (K, 0, 1),
        (2 * K, 0, 2),
        (M, 0, 256),
        (2 * M, 1, 1),
        (512 * M, 1, 256),
        (G, 2, 1),
        (256 * G, 2, 256),
    ],
)
def test_page_size_level_and_count(size: int, level: int, count: int) -> None:
    """legacy_pt.md 2.1: the level a page goes into and how many identical items."""
    assert v1.page_size_level(size) == level
    assert v1.page_size_pte_count(size) == count


def test_page_size_encoding_round_trips() -> None:
    """PAGE_SIZE_PTE puts ones below the size bit, which is zero; PTE_PAGE_SIZE and
    first_pte_l7 read back the size and the group's first item."""
    for lg2 in range(13, 52):
        size = 1 << lg2
        pa = 3 << 51 & v1.PM_ADDR_MASK if lg2 < 51 else 0
        pte = v1.page_size_pte(pa, size) | v1.pm_level_enc(7) | v1.IOMMU_PTE_PR
        assert v1.pte_page_size(pte) == size
        assert pte & v1.PM_ADDR_MASK & ~(size - 1) == pa
        count = v1.page_size_pte_count(size)
        first, got, n = v1.first_pte_l7(TABLE_REGION_BASE + 8 * (count * 3 + count - 1), pte)
        assert (first, got, n) == (TABLE_REGION_BASE + 8 * count * 3, size, count)


@pytest.mark.parametrize("size", [K, 2 * K, M, 2 * M, 512 * M, G])
def test_leaves_are_bit_identical_to_genpt_amdv1(size: int) -> None:
    """The same request writes the same leaf words (every item of a replicated
    group) and table items with the same non-address bits as genpt amdv1."""
    iova, pa = 4 * G, 8 * G
    old, new = table(), PageTable("amdv1")
    old.map(iova, pa, size, RW)
    new.map(iova, pa, size, RW)
    steps = new.walk(iova)
    count = v1.page_size_pte_count(size)
    first = steps[-1].table_pa + 8 * (steps[-1].index & ~(count - 1))
    new_leaf = [new.executor.memory.cpu.get(first + 8 * i, 0) for i in range(count)]
    assert leaf_words(old, iova) == new_leaf
    assert old.iova_to_phys(iova + size - 8) == pa + size - 8


def test_table_items_name_the_childs_mode() -> None:
    """A table item at level l says NEXT_LEVEL = l, with PR|IR|IW; the leaf has FC."""
    t = table()
    t.map(5 * G + 3 * K, 7 * K, K, Prot.READ)
    root, _ = t.executor.roots[1]
    l2 = t.executor.memory.cpu[root + 8 * 5]
    assert v1.pm_pte_level(l2) == 2 and l2 & ~v1.PM_ADDR_MASK == 0x6000_0000_0000_0401
    l1 = t.executor.memory.cpu[v1.iommu_pte_page(l2)]
    assert v1.pm_pte_level(l1) == 1
    assert leaf_words(t, 5 * G + 3 * K) == [
        7 * K | v1.IOMMU_PTE_PR | v1.IOMMU_PTE_FC | v1.IOMMU_PTE_IR
    ]


@pytest.mark.parametrize(
    ("address", "size", "expect"),
    [
        (0x4000_0000, K, (0x4000_0000, K)),
        (0x4000_0800, 0x100, (0x4000_0000, K)),
        (0x1000, 0x2000, (0, 0x4000)),  # [4K, 12K) -> the aligned 16K holding it
        (2 * M + K, 2 * M, (0, 8 * M)),
        (v1.U64, 2, None),  # an empty gather: every page of the domain
    ],
)
def test_build_inv_address(address: int, size: int, expect: tuple | None) -> None:
    """One INVALIDATE_IOMMU_PAGES covers the naturally aligned power of two around
    the range (or everything when bit 51 differs)."""
    assert v1.build_inv_address(address, size) == expect


def test_pgsize_bitmaps() -> None:
    """Config B (default): AMD_IOMMU_PGSIZES, 4K..2**51 but 512G; config A by option."""
    t = table()
    assert t.pgsize_bitmap == v1.AMD_IOMMU_PGSIZES
    assert t.pgsize_bitmap & 2 * K and not t.pgsize_bitmap & 512 * G
    assert t.pgsize_bitmap.bit_length() == 52 and t.pgsize_bitmap & (K - 1) == 0
    assert table(pgsize_bitmap=CONFIG_A).pgsize_bitmap == K | 2 * M | G


# --- transaction counts (legacy_pt.md 8.1, 8.1b, 8.2, 8.4) ----------------------------------------
# (request size, bitmap, walks, map loads/stores/cas, unmap loads/stores)
COUNT_CASES = {
    "A-1x4K": (K, CONFIG_A, 1, (3, 1, 1), (3, 1)),
    "A-1x2M": (2 * M, CONFIG_A, 1, (2, 1, 1), (2, 1)),
    "A-1x1G": (G, CONFIG_A, 1, (1, 1, 1), (1, 1)),
    "A-256x4K": (256 * K, CONFIG_A, 256, (768, 256, 256), (768, 256)),
    "A-256x2M": (512 * M, CONFIG_A, 256, (512, 256, 256), (512, 256)),
    "A-256x1G": (256 * G, CONFIG_A, 256, (256, 256, 256), (256, 256)),
    "B-1x4K": (K, None, 1, (3, 1, 1), (3, 1)),
    "B-256x4K": (256 * K, None, 1, (258, 256, 256), (3, 256)),
    "B-256x2M": (512 * M, None, 1, (257, 256, 256), (2, 256)),
    "B-256x1G": (256 * G, None, 1, (256, 256, 256), (1, 256)),
}


@pytest.mark.parametrize("seqcount", [True, False], ids=["seqcount", "no_seqcount"])
@pytest.mark.parametrize("case", list(COUNT_CASES))
def test_warm_map_and_unmap_counts(case: str, seqcount: bool) -> None:
    """Warm table, naturally aligned request (the map/unmap pair before it left the
    tables in place: AMD v1 never frees a table on unmap). Item counts are exactly
    legacy_pt.md 8.1 / 8.1b / 8.2: a walk from the root per page (per group in config
    B), LD + locked CAS per leaf item, then a plain store. Domain words: 1 mode load
    in the driver wrapper + per walk mode x2 and root (+2 seqcount loads with the
    fix). No CPU cache maintenance, no allocation, no invalidation on a warm map;
    one invalidation + wait under the domain lock at unmap's iotlb_sync."""
    size, bitmap, walks, map_counts, unmap_counts = COUNT_CASES[case]
    iova, pa = size, 4 * size
    t = table(pgsize_bitmap=bitmap, fixes={"amdv1_seqcount": seqcount})
    t.map(iova, pa, size, RW)
    assert t.unmap(iova, size) == size
    t.executor.commands.clear()
    per_walk = 5 if seqcount else 3
    _, got = measure(t, lambda: t.map(iova, pa, size, RW))
    assert (got["loads"], got["stores"], got["cas"]) == map_counts
    assert got["meta"] == 1 + walks * per_walk
    assert got["allocs"] == got["frees"] == got["flushes"] == 0
    assert commands(t) == []
    unmapped, got = measure(t, lambda: t.unmap(iova, size))
    assert unmapped == size
    assert (got["loads"], got["stores"], got["cas"]) == (*unmap_counts, 0)
    assert got["meta"] == 1 + walks * per_walk
    assert got["allocs"] == got["frees"] == got["flushes"] == 0
    kinds = [tx[0] for tx in t.executor.log if tx[0] not in (LOAD, STORE, WORK)]
    assert kinds == [LOCK, INVALIDATE_RANGE, WAIT_INVALIDATION, UNLOCK]
    assert commands(t) == [(INVALIDATE_RANGE, 1, iova, size, False)]


@pytest.mark.parametrize(("size", "tables"), [(K, 2), (2 * M, 1), (G, 0)])
def test_cold_map_costs_alloc_load_cas_reload_per_table(size: int, tables: int) -> None:
    """legacy_pt.md 8.4: each missing level is ALLOC + LD + locked CAS + a re-read LD
    (the walk loops back to the same slot); the leaf is then LD + CAS + ST."""
    t = table()
    _, got = measure(t, lambda: t.map(5 * G, 6 * G, size, RW))
    interior = 2 - v1.page_size_level(size)
    assert got["allocs"] == tables
    assert got["loads"] == interior + tables + 1
    assert (got["stores"], got["cas"]) == (1, tables + 1)


# --- behaviour (legacy_pt.md 7, AMD v1 column) ---------------------------------------------------
def test_map_over_a_same_size_leaf_replaces_it_silently_without_a_flush() -> None:
    """Quirk (2.2): the old leaf is cleared and overwritten, map returns 0, nothing
    went on the freelist so no invalidation is sent -- the IOTLB may keep the old
    translation. genpt returns -EADDRINUSE."""
    t = table()
    t.map(G, 2 * G, K, RW)
    t.executor.commands.clear()
    t.map(G, 3 * G, K, RW)
    assert t.iova_to_phys(G) == 3 * G
    assert commands(t) == []


def test_map_large_page_over_tables_frees_them_after_the_flush() -> None:
    """A 2M map over a level-0 table: free_clear_pte lists the table, ``updated``
    makes the driver flush the request's range under the domain lock, then free."""
    t = table()
    t.map(2 * M, 8 * M, 4 * K, RW)
    l0 = t.run(t.drv.fetch_pte(2 * M))[0] & ~(K - 1)
    live = t.live_table_pages
    t.executor.log.clear()
    t.map(2 * M, 16 * M, 2 * M, RW)
    events = [tx for tx in t.executor.log if tx[0] in (LOCK, INVALIDATE_RANGE, FREE_TABLE)]
    assert events == [
        (LOCK, "domain1.lock"),
        (INVALIDATE_RANGE, 1, 2 * M, 2 * M, False),
        (FREE_TABLE, l0),
    ]
    assert t.live_table_pages == live - 1
    assert t.iova_to_phys(2 * M + 5 * K) == 16 * M + 5 * K


def test_map_1g_over_a_level1_table_reads_it_whole() -> None:
    """free_pt_lvl reads all 512 items of a mode-2 table and lists its level-0
    children without reading them; everything is freed after the flush."""
    t = table()
    t.map(G, 4 * G, K, RW)
    t.map(G + 2 * M, 4 * G, 2 * M, RW)
    _, got = measure(t, lambda: t.map(G, 8 * G, G, RW))
    assert got["loads"] == 1 + 512  # the leaf slot, then the mode-2 table
    assert got["frees"] == 2
    assert t.iova_to_phys(G + 2 * M) == 8 * G + 2 * M


def test_quirk_small_map_inside_a_default_large_leaf_drops_the_rest() -> None:
    """Quirk (2.3): a 4K map inside a 2M leaf replaces the leaf by an empty table;
    the other 511 pages of the 2M mapping are gone without an error (genpt:
    -EADDRINUSE). ``updated`` makes the driver flush the 4K it mapped."""
    t = table()
    t.map(2 * M, 8 * M, 2 * M, RW)
    t.executor.commands.clear()
    t.map(2 * M + 4 * K, 32 * M, K, RW)
    assert t.iova_to_phys(2 * M + 4 * K) == 32 * M
    assert t.iova_to_phys(2 * M) is None and t.iova_to_phys(4 * M - K) is None
    assert commands(t) == [(INVALIDATE_RANGE, 1, 2 * M + 4 * K, K, False)]


def test_quirk_small_map_inside_a_replicated_page_tears_down_the_group() -> None:
    """Quirk (2.3): a 4K map inside a 512M replicated page (256 NL=7 items at level
    1) cmpxchgs all 256 items to 0, installs a level-0 table in the slot and maps
    the page; the other 511.996 MiB of the large mapping are gone without an error
    (genpt: -EADDRINUSE), and the flush covers only the 4K."""
    t = table()
    t.map(512 * M, G, 512 * M, RW)
    t.executor.commands.clear()
    _, got = measure(t, lambda: t.map(512 * M + 2 * M, 4 * G, K, RW))
    assert got["cas"] == 256 + 1 + 1  # the group, the table install, the leaf's clear
    assert got["allocs"] == 1
    assert t.iova_to_phys(512 * M + 2 * M) == 4 * G
    assert t.iova_to_phys(512 * M) is None
    assert t.iova_to_phys(G - K) is None
    assert commands(t) == [(INVALIDATE_RANGE, 1, 512 * M + 2 * M, K, False)]


def test_quirk_unmap_of_a_level0_hole_zeroes_and_counts_it() -> None:
    """Quirk (2.5): fetch_pte never checks presence at level 0, so unmapping two
    pages of which one is mapped returns 8K; genpt stops at the hole."""
    t = table()
    t.map(G, 2 * G, K, RW)
    assert t.unmap(G, 2 * K) == 2 * K
    assert t.unmap(G + 8 * K, 4 * K) == 4 * K  # nothing mapped, table present


def test_quirk_empty_gather_flushes_the_whole_domain() -> None:
    """Quirk: an unmap over a hole above level 0 unmaps nothing, yet the core's
    iotlb_sync passes the empty gather (ULONG_MAX, 2) and build_inv_address turns
    it into 'all pages of the domain'."""
    t = table()
    t.executor.commands.clear()
    assert t.unmap(7 * G, K) == 0
    assert commands(t) == [(INVALIDATE_ALL, 1)]


@pytest.mark.parametrize(
    ("iova", "size", "expect"),
    [
        (2 * M, K, 2 * M),
        (2 * M + 4 * K, K, 2 * M),
    ],
)
def test_unmap_smaller_than_a_large_leaf_removes_it_whole(
    iova: int, size: int, expect: int
) -> None:
    """legacy_pt.md 7: the whole 2M leaf goes and its size is returned, even from the
    middle (genpt: 0 there). Quirk: the gather records [iova, iova + 2M) from the
    requested IOVA, not the leaf's start; build_inv_address's rounding to an
    aligned power of two still covers the leaf."""
    t = table()
    t.map(2 * M, 8 * M, 2 * M, RW)
    t.executor.commands.clear()
    assert t.unmap(iova, size) == expect
    assert t.iova_to_phys(2 * M) is None
    (cmd,) = commands(t)
    assert cmd[2] <= 2 * M and cmd[2] + cmd[3] >= 4 * M


def test_unmap_inside_a_replicated_page_removes_the_group() -> None:
    """Config B: 4K unmapped inside a 1M page (256 items) removes all 256 and
    returns 1M (one walk, 3 loads, 256 stores)."""
    t = table()
    t.map(M, 2 * M, M, RW)
    unmapped, got = measure(t, lambda: t.unmap(M + 64 * K, K))
    assert unmapped == M
    assert (got["loads"], got["stores"]) == (3, 256)
    assert t.iova_to_phys(M) is None


def test_unmap_never_frees_tables_teardown_frees_all() -> None:
    """Tables emptied by unmap stay until the domain is freed; free_pgtable frees
    every page (no leak, no bad free)."""
    t = table(pgsize_bitmap=CONFIG_A)
    for iova, size in ((0, 4 * K), (G + 2 * M, 2 * M), (3 * G, G), (TB, K)):
        t.map(iova, 64 * G + iova % (64 * G), size, RW)
    live = t.live_table_pages
    for iova, size in ((0, 4 * K), (G + 2 * M, 2 * M), (3 * G, G), (TB, K)):
        assert t.unmap(iova, size) == size
    assert t.live_table_pages == live
    t.deinit()
    assert t.live_table_pages == 0
    assert t.executor.allocator.bad_frees == []


def test_error_codes() -> None:
    """No permission bit: -EINVAL before any walk. A failed table allocation:
    -ENOMEM, and the core unmaps what the request had mapped."""
    t = table()
    with pytest.raises(PTError) as err:
        t.map(G, G, K, 0)
    assert err.value.errno == errno.EINVAL
    t = table(alloc_faults=FaultInjector(fail_nth=4))  # root, L1, L0, then the next L0
    with pytest.raises(PTError) as err:
        t.map(2 * M - 4 * K, 4 * G, 8 * K, RW)
    assert err.value.errno == errno.ENOMEM
    assert t.iova_to_phys(2 * M - 4 * K) is None


def test_growth_beyond_the_hardware_is_enomem_with_a_warning() -> None:
    """increase_address_space refuses at amd_iommu_hpt_level (WARN_ON_ONCE) and the
    map fails with -ENOMEM (genpt: -ERANGE)."""
    t = table(vasz_lg2=48)  # hardware translating 4 levels
    t.map(1 << 47, G, K, RW)
    with pytest.raises(PTError) as err:
        t.map(1 << 48, G, K, RW)
    assert err.value.errno == errno.ENOMEM
    assert t.warnings == ["increase_address_space: already at amd_iommu_hpt_level"]
    t.deinit()
    assert t.live_table_pages == 0


def test_growth_links_the_old_root_and_updates_software_before_hardware() -> None:
    """increase_address_space: the new root's item 0 points at the old root with
    NL = old mode; root and mode are two stores, then the DTE (CHANGE_TOP) and a
    wait, all under the domain lock; old mappings still translate."""
    t = table()
    t.map(G, 2 * G, K, RW)
    old_root, _ = t.executor.roots[1]
    data = t.drv.cfg.data_pa
    t.executor.log.clear()
    t.map(TB, 3 * G, K, RW)
    new_root, level = t.executor.roots[1]
    assert level == 3
    assert t.executor.memory.cpu[new_root] == v1.pm_level_pde(3, old_root)
    seq = [
        tx
        for tx in t.executor.log
        if tx[0] in (LOCK, UNLOCK, CHANGE_TOP, WAIT_INVALIDATION)
        or (tx[0] == STORE and data <= tx[1] < data + 16)
    ]
    assert seq == [
        (LOCK, "domain1.lock"),
        (STORE, data, new_root),
        (STORE, data + 8, 4),
        (CHANGE_TOP, 1, new_root, 3),
        (WAIT_INVALIDATION,),
        (UNLOCK, "domain1.lock"),
    ]
    for iova, pa in ((G, 2 * G), (TB, 3 * G)):
        assert t.iova_to_phys(iova) == pa and t.iova_to_phys(iova, view="hw") == pa


def test_views_and_kernel_iova_to_phys() -> None:
    """The PageTable API: cpu / hw / peek views agree on a coherent system; the
    kernel's iova_to_phys returns 0 for a hole."""
    t = table()
    t.map(G, 2 * G, 2 * M, RW)
    for view in ("cpu", "hw", "peek"):
        assert t.iova_to_phys(G + 0x1234, view=view) == 2 * G + 0x1234
        assert t.iova_to_phys(5 * G, view=view) is None
    assert t.kernel_iova_to_phys(G + 8) == 2 * G + 8
    assert t.kernel_iova_to_phys(5 * G) == 0
    assert hw_translate(t, G + 8) == 2 * G + 8


def test_np_cache_flushes_the_map_in_aligned_pieces() -> None:
    """Under a vIOMMU (NpCache: DriverPolicy.invalidate_on_map) iotlb_sync_map
    flushes the mapped range, split into naturally aligned pieces, then waits."""
    t = table(driver=DriverPolicy(invalidate_on_map=True))
    t.executor.commands.clear()
    t.map(4 * K, 8 * G, 12 * K, RW)
    assert t.executor.commands == [
        (INVALIDATE_RANGE, 1, 4 * K, 4 * K, False),
        (INVALIDATE_RANGE, 1, 8 * K, 8 * K, False),
        (WAIT_INVALIDATION,),
    ]


# --- dirty tracking ------------------------------------------------------------------------------
def set_hd(t: LegacyTable, iova: int, item: int = 0) -> None:
    """What the IOMMU does on a write: set HD in one item (of a group)."""
    pte, _ = t.run(t.drv.fetch_pte(iova))
    t.executor.memory.cpu[pte + 8 * item] |= v1.IOMMU_PTE_HD


def test_dirty_is_the_or_of_the_group_and_clear_cleans_every_item() -> None:
    """pte_test_and_clear_dirty: HD on one replicated item marks the whole 1M page;
    clearing does a locked test-and-clear on all 256 items (one CMPXCHG each whose
    expected value is the group's READ_ONCE word, so the item whose HD differed
    needs a second one); NO_CLEAR only reads."""
    t = table()
    t.map(M, 4 * G, M, RW)
    t.map(4 * M, 5 * G, K, RW)
    set_hd(t, M, item=200)
    set_hd(t, 4 * M)
    assert t.read_and_clear_dirty(0, 8 * M, no_clear=True) == [(M, M), (4 * M, K)]
    t.executor.commands.clear()
    runs, got = measure(t, lambda: t.read_and_clear_dirty(M, M))
    assert runs == [(M, M)]
    assert got["cas"] == 256 + 1
    assert commands(t) == [(INVALIDATE_RANGE, 1, M, M, False)]
    assert t.read_and_clear_dirty(0, 8 * M, no_clear=True) == [(4 * M, K)]


@pytest.mark.parametrize("fix", [True, False])
def test_dirty_clear_flush_switch(fix: bool) -> None:
    """The caller's IOTLB sync after cleaning (dirty_clear_flush) is sent with the
    fix on and not at all with it off."""
    t = table(fixes={"dirty_clear_flush": fix})
    t.map(G, 4 * G, K, RW)
    set_hd(t, G)
    t.executor.commands.clear()
    assert t.read_and_clear_dirty(G, K) == [(G, K)]
    assert commands(t) == ([(INVALIDATE_RANGE, 1, G, K, False)] if fix else [])


def test_quirk_dirty_walk_steps_from_the_unaligned_iova() -> None:
    """Quirk: over a hole, iommu_v1_read_and_clear_dirty advances by the size of the
    level the walk stopped at, from the IOVA it had (not rounded down): starting at
    2G + 4K over an empty 2M slot it jumps to 2G + 2M + 4K and never looks at the
    dirty page at 2G + 2M. A dirty leaf is also recorded whole, past the range."""
    t = table(pgsize_bitmap=CONFIG_A)  # two 4K leaves, not one 8K group
    base = 2 * G + 2 * M  # slot 0 of the level-1 table stays empty
    t.map(base, 5 * G, 2 * K, RW)
    set_hd(t, base)
    set_hd(t, base + K)
    assert t.read_and_clear_dirty(2 * G + K, 4 * M, no_clear=True) == [(base + K, K)]
    assert t.read_and_clear_dirty(2 * G, 4 * M, no_clear=True) == [(base, 2 * K)]
    t.map(4 * G, 6 * G, 2 * M, RW)
    set_hd(t, 4 * G)
    assert t.read_and_clear_dirty(4 * G, K, no_clear=True) == [(4 * G, 2 * M)]


# --- the torn root/mode read (legacy_pt.md 2.10 item 1) ------------------------------------------
GROW_IOVA, GROW_PA = TB, 0x7000_0000  # CPU 0: a map beyond 512G grows the table to mode 4
PB = 0x9000_0000


def run_race(make: Callable[[], Any], ops: Callable[[Any], list], k: int) -> tuple[Any, list]:
    """CPU 1 runs its first k transactions, CPU 0 then runs to completion (growing
    the table), then CPU 1 finishes."""
    t = make()
    results = Interleaver(t.executor).run(ops(t), schedule=[1] * k)
    return t, results


def legacy(seqcount: bool, premap: int | None = None) -> Callable[[], LegacyTable]:
    def make() -> LegacyTable:
        t = LegacyTable("amdv1", fixes={"amdv1_seqcount": seqcount})
        if premap is not None:
            t.map(premap, PB, K, RW)
        return t

    return make


def genpt(premap: int | None = None) -> Callable[[], PageTable]:
    def make() -> PageTable:
        t = PageTable("amdv1")
        if premap is not None:
            t.map(premap, PB, K, RW)
        return t

    return make


def map_ops(b: int) -> Callable[[Any], list]:
    return lambda t: [t.map_op(GROW_IOVA, GROW_PA, K, RW), t.map_op(b, PB, K, RW)]


def unmap_ops(b: int) -> Callable[[Any], list]:
    return lambda t: [t.map_op(GROW_IOVA, GROW_PA, K, RW), t.unmap_op(b, K)]


def alone(make: Callable[[], Any], ops: Callable[[Any], list]) -> tuple[Any, list[tuple]]:
    """CPU 1's operation run by itself on a fresh world, with its transactions."""
    t = make()
    rec = Recorder()
    rec.memory, rec.allocator, rec.roots = t.executor.memory, t.executor.allocator, t.executor.roots
    rec.run(without_named_work(ops(t)[1]))  # named work is not an interleaver step
    return t, rec.log


def torn_point(make: Callable[[], LegacyTable], ops: Callable[[Any], list]) -> int:
    """How many transactions CPU 1 runs before it loads the root word: the mode word
    it loaded last is then the old one."""
    t, log = alone(make, ops)
    return log.index((LOAD, t.drv.root_word))


def bad_points(
    make: Callable[[], Any], ops: Callable[[Any], list], check: Callable[[Any, list], bool]
) -> set[int]:
    return {k for k in range(len(alone(make, ops)[1]) + 1) if not check(*run_race(make, ops, k))}


def map_is_right(b: int) -> Callable[[Any, list], bool]:
    def check(t: Any, results: list) -> bool:
        return (
            results == [0, 0]
            and t.iova_to_phys(b) == PB
            and t.iova_to_phys(b, view="hw") == PB
            and hw_translate(t, b) == PB
            and hw_translate(t, GROW_IOVA) == GROW_PA
        )

    return check


def unmap_is_right(b: int) -> Callable[[Any, list], bool]:
    def check(t: Any, results: list) -> bool:
        return results == [0, K] and t.iova_to_phys(b) is None and hw_translate(t, b) is None

    return check


def test_torn_read_map_writes_a_pte_at_the_wrong_level() -> None:
    """Fix off, CPU 1 maps 4K at 1G; it loaded mode (3) just before CPU 0's
    increase_address_space published root then mode; it then loads the new root and
    walks it as a mode-3 root. Its map 'succeeds' but: a level-2 table item (NL=2)
    sits in the mode-4 root at index 1, IOVA 1G translates in neither view, and the
    device reaches CPU 1's page through IOVA 512G (AMD level skipping: the root's
    item 1 skips to a level-1 table). Only that one preemption point is bad; the
    tables are still all freed at teardown."""
    b = G
    make, ops = legacy(False), map_ops(b)
    k = torn_point(make, ops)
    assert bad_points(make, ops, map_is_right(b)) == {k}
    t, results = run_race(make, ops, k)
    assert results == [0, 0]
    root, level = t.executor.roots[1]
    assert level == 3
    assert v1.pm_pte_level(t.executor.memory.cpu[root + 8]) == 2
    assert t.iova_to_phys(b) is None and t.iova_to_phys(b, view="hw") is None
    assert hw_translate(t, b) is None
    assert hw_translate(t, 512 * G) == PB  # an IOVA nobody mapped
    assert t.iova_to_phys(512 * G) is None  # ... which the kernel's own walk denies
    t.deinit()
    assert t.live_table_pages == 0 and t.executor.allocator.bad_frees == []


def test_torn_read_map_in_the_first_gib_fails_with_enomem() -> None:
    """The same race for an IOVA below 1G: the torn walk finds the old root's item
    (NL=3) where it expects level 2, 'no level skipping' -> NULL -> -ENOMEM."""
    b = 2 * M
    make, ops = legacy(False), map_ops(b)
    k = torn_point(make, ops)
    t, results = run_race(make, ops, k)
    assert results == [0, -errno.ENOMEM]
    assert t.iova_to_phys(b) is None
    assert bad_points(make, ops, map_is_right(b)) == {k}


@pytest.mark.parametrize("b", [2 * M, G], ids=["first_gib", "second_gib"])
def test_torn_read_unmap_returns_zero_and_the_page_stays_mapped(b: int) -> None:
    """The race of the fix's commit message: fetch_pte reads the new root with the
    old mode and returns NULL, so the unmap reports 0 bytes and the page stays
    mapped for the device after its owner unmapped it."""
    make, ops = legacy(False, premap=b), unmap_ops(b)
    k = torn_point(make, ops)
    t, results = run_race(make, ops, k)
    assert results == [0, 0]
    assert t.iova_to_phys(b) == PB and hw_translate(t, b) == PB
    assert bad_points(make, ops, unmap_is_right(b)) == {k}


@pytest.mark.parametrize("b", [2 * M, G], ids=["first_gib", "second_gib"])
def test_seqcount_fix_removes_the_race(b: int) -> None:
    """amdv1_seqcount on: at every preemption point of CPU 1 both the map and the
    unmap are right; the torn point now ends in a retry of the read section."""
    assert bad_points(legacy(True), map_ops(b), map_is_right(b)) == set()
    assert bad_points(legacy(True, premap=b), unmap_ops(b), unmap_is_right(b)) == set()
    make, ops = legacy(True), map_ops(b)
    t = make()
    log: list[tuple] = []
    ex = t.executor
    inner = ex.execute
    ex.execute = lambda tx, cpu=0: (log.append((cpu, tx)), inner(tx, cpu))[1]
    Interleaver(ex).run(ops(t), schedule=[1] * torn_point(make, ops))
    seq_loads = [tx for cpu, tx in log if cpu == 1 and tx == (LOAD, t.drv.seq_word)]
    assert len(seq_loads) == 4  # begin, retry (changed), begin, retry


@pytest.mark.parametrize("b", [2 * M, G], ids=["first_gib", "second_gib"])
def test_genpt_amdv1_has_no_torn_read_on_the_same_schedules(b: int) -> None:
    """genpt amdv1 packs top and level in one word read once: on the same schedule
    shape (CPU 1 preempted at every point while CPU 0 grows the top) nothing goes
    wrong."""
    assert bad_points(genpt(), map_ops(b), map_is_right(b)) == set()
    assert bad_points(genpt(premap=b), unmap_ops(b), unmap_is_right(b)) == set()
