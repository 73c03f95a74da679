"""Old Intel VT-d second stage (legacy_pt.md section 4): encodings, the item counts of
sections 8.1 / 8.1b / 8.3 / 8.4, the section 7 behaviours, the driver glue, the
quirks by name, and the two races the genpt conversion removed (4.6 items 1 and 2).

Counts separate *item* accesses (table memory, what section 8 counts) from the one
LOAD of ``domain->pgd`` each walk makes (metadata, which section 8 leaves out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from iommusim.tables import DirectExecutor, FaultInjector, Interleaver, PageTable
from iommusim.tables.common import DriverPolicy
from iommusim.tables.errors import EINVAL, ENOMEM, PTError
from iommusim.tables.executor import without_named_work
from iommusim.tables.formats import vtdss
from iommusim.tables.iopgtable import LegacyTable
from iommusim.tables.iopgtable import vtd as V
from iommusim.tables.memory import POISON, TABLE_REGION_BASE
from iommusim.tables.prot import READ, RW
from iommusim.tables.transactions import (
    ALLOC_TABLE,
    CAUSE_CLEAR,
    CAUSE_HELPER,
    CAUSE_INSTALL,
    CAUSE_LEAF,
    CAUSE_TABLE_START,
    CAUSE_UNMAP,
    CMPXCHG,
    FLUSH,
    FLUSH_WRITE_BUFFER,
    FREE_TABLE,
    INVALIDATE_RANGE,
    LOAD,
    LOCK,
    STORE,
    WAIT_INVALIDATION,
)
from iommusim.walker.hwformats import LEAF, TABLE, VtdSSHw

K, M, G = 1 << 12, 1 << 21, 1 << 30
INCOHERENT = ["dma_incoherent"]


class RecordingExecutor(DirectExecutor):
    """A direct executor that logs (cpu, transaction, result)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log: list[tuple[int, tuple, Any]] = []
        self.hook: Callable[[tuple], None] | None = None

    def execute(self, tx: tuple, cpu: int = 0) -> Any:
        result = super().execute(tx, cpu)
        self.log.append((cpu, tx, result))
        if self.hook is not None:
            self.hook(tx)
        return result


def vtd(features: list[str] = (), **kwargs: Any) -> LegacyTable:
    ex = RecordingExecutor(two_views="dma_incoherent" in features)
    return LegacyTable("vtdss", features=features, executor=ex, **kwargs)


def measure(t: LegacyTable, run: Callable[[], Any]) -> tuple[Any, Counter[str], list[tuple]]:
    """Run, and return (result, counts, transactions). Counts: item loads / stores /
    cmpxchg (table memory only), pgd loads, allocs, frees, flush lines per cause."""
    ex = t.executor
    start = len(ex.log)
    lines_before = Counter(ex.flush_lines)
    result = run()
    txs = [tx for _, tx, _ in ex.log[start:]]
    counts: Counter[str] = Counter()
    for tx in txs:
        kind = tx[0]
        if kind in (LOAD, STORE, CMPXCHG):
            counts[kind if tx[1] >= TABLE_REGION_BASE else f"meta_{kind}"] += 1
        elif kind in (ALLOC_TABLE, FREE_TABLE, LOCK, INVALIDATE_RANGE, FLUSH_WRITE_BUFFER):
            counts[kind] += 1
    for cause, n in (Counter(ex.flush_lines) - lines_before).items():
        counts[f"lines_{cause}"] = n
    return result, counts, txs


def hw_translate(t: LegacyTable, iova: int) -> int | None:
    """Walk the hardware view from the programmed root with the walker's own decoder."""
    hw = VtdSSHw()
    table, level = t.executor.roots[t.drv.domain]
    mem = t.executor.memory.hw
    while True:
        item = hw.decode(level, mem.get(table + 8 * hw.index(level, iova), 0))
        if item.kind == LEAF:
            return item.addr + (iova & ((1 << item.size_lg2) - 1))
        if item.kind != TABLE:
            return None
        table, level = item.addr, item.next_level


def item_pa(t: LegacyTable, iova: int, vtd_level: int) -> int:
    """Where the item for iova at a VT-d level lives (CPU view, tables must exist)."""
    mem = t.executor.memory
    table = mem.load(t.drv.cfg.data_pa)
    for level in range(t.drv.levels, vtd_level, -1):
        table = V.dma_pte_addr(mem.load(table + 8 * V.pfn_level_offset(iova >> 12, level)))
    return table + 8 * V.pfn_level_offset(iova >> 12, vtd_level)


# --- encodings ------------------------------------------------------------------------------
def test_bits_match_the_vtdss_layout_the_walker_decodes() -> None:
    """iommu.h's bits are this module's own; they must equal genpt vtdss's."""
    assert (V.DMA_PTE_READ, V.DMA_PTE_WRITE) == (vtdss.R, vtdss.W)
    assert V.DMA_PTE_LARGE_PAGE == vtdss.PS
    assert V.DMA_SL_PTE_DIRTY == vtdss.D
    assert V.DMA_PTE_SNP == vtdss.SNP
    assert V.DMA_PTE_ADDR_MASK & vtdss.OA_MASK == vtdss.OA_MASK  # 63:12 covers 51:12
    assert V.dma_pte_present(V.DMA_PTE_WRITE) and not V.dma_pte_present(V.DMA_PTE_SNP)


@pytest.mark.parametrize(("size", "level"), [(K, 1), (M, 2), (G, 3)])
def test_items_written_are_genpt_vtdss_items(size: int, level: int) -> None:
    """Leaves are pa|R|W (+PS above 4K), tables pa|R|W: bit for bit what genpt vtdss
    writes, and the walker's decoder translates them."""
    t = vtd()
    iova, pa = 5 * G, 7 * G
    t.map(iova, pa, size, RW)
    fmt, common = vtdss.FORMAT, PageTable("vtdss").common
    leaf = t.executor.memory.load(item_pa(t, iova, level))
    assert leaf == fmt.leaf_entry(common, level - 1, pa, 52, vtdss.R | vtdss.W)
    table_item = t.executor.memory.load(item_pa(t, iova, 4))
    assert table_item == fmt.table_entry(common, 3, V.dma_pte_addr(table_item))
    assert hw_translate(t, iova + size - 8) == pa + size - 8


def test_snoop_and_read_only() -> None:
    """set_pte_snp adds SNP to leaves; a nesting parent refuses read-only (errata)."""
    t = vtd(["vtdss_force_coherence"])
    t.map(0, 0x1000, K, READ)
    assert t.executor.memory.load(item_pa(t, 0, 1)) == 0x1000 | V.DMA_PTE_READ | V.DMA_PTE_SNP
    with pytest.raises(PTError) as err:
        vtd(["vtdss_force_writeable"]).map(0, 0x1000, K, READ)
    assert err.value.errno == EINVAL


@pytest.mark.parametrize(
    ("kwargs", "levels", "translates"),
    [({"vasz_lg2": 39}, 3, 1 << 38), ({}, 4, 1 << 47), ({"top_level": 4}, 5, 1 << 56)],
)
def test_geometry_from_agaw(kwargs: dict, levels: int, translates: int) -> None:
    """agaw_to_level: 3, 4 (default, 48-bit) or 5 levels; the hardware root says so."""
    t = vtd(**kwargs)
    assert t.drv.levels == levels
    assert t.executor.roots[t.drv.domain][1] == levels - 1
    t.map(translates, 0x5000, K, RW)
    assert hw_translate(t, translates + 8) == 0x5008
    t.deinit()
    assert t.live_table_pages == 0


@pytest.mark.parametrize(
    ("features", "bitmap"), [([], K | M | G), (["vtd_no_1g"], K | M), (["vtd_sp_off"], K)]
)
def test_pgsize_bitmap_follows_superpage_caps(features: list[str], bitmap: int) -> None:
    t = vtd(features)
    assert t.pgsize_bitmap == bitmap
    t.map(0, 0, 2 * M, RW)  # split by the core into what the hardware has
    assert t.iova_to_phys(2 * M - 1) == 2 * M - 1


@pytest.mark.parametrize(
    ("requested", "bitmap"), [(K, K), (K | M, K | M), (K | G, K | M | G), (K | M | G, K | M | G)]
)
def test_pgsize_bitmap_request_is_sllps_with_fls(requested: int, bitmap: int) -> None:
    """iommu_superpage = fls(SLLPS): hardware with 1G but not 2M still gets both."""
    assert vtd(pgsize_bitmap=requested).pgsize_bitmap == bitmap


def test_map_beyond_the_domain_width_is_efault() -> None:
    with pytest.raises(PTError) as err:
        vtd(vasz_lg2=39).map(1 << 39, 0, K, RW)
    assert err.value.errno == V.EFAULT


# --- section 8 counts -------------------------------------------------------------------------
# (page size, base iova, a warm-up mapping in the same last-level table outside the range)
WARM = {K: (2 * G, 2 * G + 256 * K), M: (G, G + 256 * M), G: (0, 256 * G)}
# count -> (item loads, stores, cmpxchg, pgd loads) for map (8.1) and unmap (8.1b)
MAP_COUNTS = {
    (K, 1): (3, 0, 1, 1), (M, 1): (5, 0, 1, 2), (G, 1): (3, 0, 1, 2),
    (K, 256): (3, 0, 256, 1), (M, 256): (260, 0, 256, 2), (G, 256): (258, 0, 256, 2),
}
UNMAP_COUNTS = {
    (K, 1): (8, 1, 0, 2), (M, 1): (6, 1, 0, 2), (G, 1): (4, 1, 0, 2),
    (K, 256): (263, 256, 0, 2), (M, 256): (261, 256, 0, 2), (G, 256): (259, 256, 0, 2),
}
CASES = [pytest.param(k, id=f"{k[1]}x{k[0] >> 10}K") for k in MAP_COUNTS]


def warm_table(size: int, features: list[str]) -> tuple[LegacyTable, int]:
    iova, warm = WARM[size]
    t = vtd(features)
    t.map(warm, warm, size, RW)
    return t, iova


def item_counts(c: Counter[str]) -> tuple[int, int, int, int]:
    return c[LOAD], c[STORE], c[CMPXCHG], c[f"meta_{LOAD}"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("features", [[], INCOHERENT], ids=["coherent", "incoherent"])
def test_warm_map_and_unmap_counts(case: tuple[int, int], features: list[str]) -> None:
    """8.1 / 8.1b: one walk per table page (two for superpages: switch_to_super_page
    walks again and loads every slot), a CASL per leaf, no stores; unmap = lookup walk
    + clear walk. 8.3: one flush per run, ceil(8N / 64) lines, and no other flush."""
    size, n = case
    t, iova = warm_table(size, features)
    _, c, _ = measure(t, lambda: t.map(iova, iova, n * size, RW))
    assert item_counts(c) == MAP_COUNTS[case]
    assert c[ALLOC_TABLE] == c[FREE_TABLE] == c[LOCK] == c[INVALIDATE_RANGE] == 0
    lines = {k: v for k, v in c.items() if k.startswith("lines_")}
    assert lines == ({f"lines_{CAUSE_LEAF}": -(-n // 8)} if features else {})

    got, c, txs = measure(t, lambda: t.unmap(iova, n * size))
    assert got == n * size
    assert item_counts(c) == UNMAP_COUNTS[case]
    lines = {k: v for k, v in c.items() if k.startswith("lines_")}
    assert lines == ({f"lines_{CAUSE_UNMAP}": -(-n // 8)} if features else {})
    # One invalidation at iotlb_sync, leaf-only (nothing freed), under cache_lock.
    assert [tx for tx in txs if tx[0] == INVALIDATE_RANGE] == [
        (INVALIDATE_RANGE, 1, iova, n * size, True)
    ]
    assert c[LOCK] == 1 and c[FREE_TABLE] == 0


# leaf size -> (tables allocated, item loads, cmpxchg) for a first map into an empty domain
COLD = {K: (3, 6, 4), M: (2, 7, 3), G: (1, 4, 2)}


@pytest.mark.parametrize("size", [K, M, G], ids=["4K", "2M", "1G"])
@pytest.mark.parametrize("features", [[], INCOHERENT], ids=["coherent", "incoherent"])
def test_cold_map_counts(size: int, features: list[str]) -> None:
    """8.4: each missing level costs ALLOC + LD + locked CAS + re-read LD; incoherent
    adds the whole new page (64 lines) and the parent item (1 line)."""
    t = vtd(features)
    _, c, _ = measure(t, lambda: t.map(0, 0, size, RW))
    tables, loads, cas = COLD[size]
    assert (c[ALLOC_TABLE], c[LOAD], c[CMPXCHG], c[STORE]) == (tables, loads, cas, 0)
    lines = {k: v for k, v in c.items() if k.startswith("lines_")}
    expect = {
        f"lines_{CAUSE_TABLE_START}": 64 * tables,
        f"lines_{CAUSE_INSTALL}": tables,
        f"lines_{CAUSE_LEAF}": 1,
    }
    assert lines == (expect if features else {})


def test_flush_order_for_a_new_table() -> None:
    """pfn_to_dma_pte: flush the zeroed page, cmpxchg the parent, flush the parent."""
    t = vtd(INCOHERENT)
    _, _, txs = measure(t, lambda: t.map(0, 0, M, RW))
    kinds = [(tx[0], tx[3] if tx[0] == FLUSH else None) for tx in txs if tx[0] in (FLUSH, CMPXCHG)]
    assert kinds[:3] == [(FLUSH, CAUSE_TABLE_START), (CMPXCHG, None), (FLUSH, CAUSE_INSTALL)]


def test_run_per_table_page() -> None:
    """__domain_mapping walks again at each table-page boundary and flushes each run
    once: 1024 x 4K over two new leaf tables is two walks and two 4 KiB flushes."""
    t = vtd(INCOHERENT)
    t.map(0, 0, K, RW)
    _, c, txs = measure(t, lambda: t.map(2 * M, 2 * M + K, 2 * M, RW))  # PA: 4K leaves
    assert [tx[2] for tx in txs if tx[0] == FLUSH and tx[3] == CAUSE_LEAF] == [4096, 4096]
    assert c[f"meta_{LOAD}"] == 2 and c[CMPXCHG] == 1024 + 2


# --- section 7 behaviours and quirks ---------------------------------------------------------
def test_quirk_map_over_existing_leaf_warns_keeps_mapping_returns_0() -> None:
    """__domain_mapping: the CASL finds the slot set; pr_crit + WARN, nothing written,
    and the map still succeeds (genpt: -EADDRINUSE)."""
    t = vtd()
    t.map(0, 0x1000, K, RW)
    t.map(0, 0x9000, K, RW)
    assert t.iova_to_phys(0) == 0x1000
    assert len(t.warnings) == 1 and "already set" in t.warnings[0]


def test_quirk_unmap_widens_to_the_superpage() -> None:
    """intel_iommu_unmap: 4K at the start of a 2M leaf removes and returns 2M."""
    t = vtd()
    t.map(2 * M, 0, M, RW)
    assert t.unmap(2 * M, K) == M
    assert t.iova_to_phys(3 * M - 1) is None


def test_quirk_unmap_of_a_hole_reports_the_hole_level_size() -> None:
    """The lookup walk stops at the hole and the size widens to its level: a 4K hole
    in an L1 table reports 4K, a missing 2M slot reports 2M; nothing is written."""
    t = vtd()
    t.map(0, 0, K, RW)
    _, c, _ = measure(t, lambda: t.unmap(K, K))
    assert c[STORE] == 0
    assert t.unmap(K, K) == K
    assert t.unmap(2 * M, K) == M
    assert t.unmap(512 * G, K) == 512 * G  # a missing top-level slot
    assert t.iova_to_phys(0) == 0


def test_quirk_unmap_inside_a_superpage_reads_the_data_page_as_a_table() -> None:
    """4.6 item 4: the size widens but the start does not; the partly covered 2M leaf
    is recursed into without a superpage check, so its data page is read as a table.
    The unmap returns 2M and the superpage stays mapped."""
    t = vtd()
    t.map(2 * M, 8 * M, M, RW)
    got, _, txs = measure(t, lambda: t.unmap(2 * M + K, K))
    assert got == M
    assert any(tx[0] == LOAD and 8 * M <= tx[1] < 9 * M for tx in txs)
    assert t.iova_to_phys(2 * M + K) == 8 * M + K


def test_quirk_map_inside_a_superpage_writes_into_the_data_page() -> None:
    """pfn_to_dma_pte (allocating) does not check the superpage bit on its way down:
    a 4K map inside a 2M leaf writes its 'PTE' into the data page and succeeds."""
    t = vtd()
    t.map(2 * M, 8 * M, M, RW)
    t.map(2 * M + K, 0x7000, K, RW)
    assert t.warnings == []
    assert t.executor.memory.load(8 * M + 8) == 0x7000 | V.DMA_PTE_READ | V.DMA_PTE_WRITE
    assert t.iova_to_phys(2 * M + K) == 8 * M + K


def test_quirk_failed_map_keeps_its_first_runs() -> None:
    """__domain_mapping returns -ENOMEM mid-way; map_pages reports 0 bytes mapped, so
    the core's rollback unmaps nothing and the first table page's leaves stay."""
    t = vtd()
    t.map(0, 0, K, RW)  # upper levels exist; [2M, 6M) needs two new leaf tables
    t.executor.allocator.faults = FaultInjector(fail_nth=2)
    with pytest.raises(PTError) as err:
        t.map(2 * M, K, 4 * M, RW)  # PA not 2M-aligned: 4K leaves
    assert err.value.errno == ENOMEM
    assert t.iova_to_phys(2 * M) == K
    assert t.iova_to_phys(4 * M) is None


def test_quirk_superpage_clear_range_overruns_and_leaks_a_table() -> None:
    """switch_to_super_page's dma_pte_clear_range finds a 2M leaf and clears on to the
    end of that table without looking, zeroing a table pointer; dma_pte_free_level
    then never sees that table: mapping 1G over [2M leaf, 4K table] leaks one page."""
    t = vtd()
    t.map(0, 0, M, RW)
    t.map(M, M, K, RW)
    t.map(0, 0, G, RW)  # over existing mappings (the API forbids it; the code allows it)
    assert t.warnings == [] and t.iova_to_phys(G - 1) == G - 1
    t.deinit()
    assert t.live_table_pages == 1


def test_unmap_frees_whole_tables_after_the_invalidation() -> None:
    """domain_unmap lists covered tables; intel_iommu_tlb_sync invalidates with ih=0
    and only then frees them."""
    t = vtd()
    t.map(0, 0, K, RW)
    t.map(2 * M, K, M, RW)  # PA not 2M-aligned: one leaf table of 4K leaves
    _, c, txs = measure(t, lambda: t.unmap(2 * M, M))
    kinds = [tx[0] for tx in txs if tx[0] in (INVALIDATE_RANGE, WAIT_INVALIDATION, FREE_TABLE)]
    assert kinds == [INVALIDATE_RANGE, WAIT_INVALIDATION, FREE_TABLE]
    assert next(tx for tx in txs if tx[0] == INVALIDATE_RANGE)[4] is False
    assert c[LOAD] == 4 + 3  # lookup to the leaf, clear walk to the covered L2 item


def test_quirk_gather_sync_frees_the_next_chunks_table_before_its_invalidation() -> None:
    """intel_iommu_unmap puts covered tables on gather->freelist *before*
    iommu_iotlb_gather_add_page; when the page size changes the add_page syncs the
    previous range (ih=0 because of the new pages) and frees the new chunk's leaf table
    while its own range is not yet invalidated. Core chunks: (4K,1), (2M,1), (4K,511)."""
    t = vtd()
    iova = 2 * M - K
    t.map(iova, iova + K, 2 * M, RW)  # PA off by 4K: only 4K leaves
    got, _, txs = measure(t, lambda: t.unmap(iova, 2 * M))
    assert got == 2 * M
    first = [tx for tx in txs if tx[0] in (INVALIDATE_RANGE, FREE_TABLE)][:2]
    assert first[0] == (INVALIDATE_RANGE, 1, iova, K, False)
    assert first[1][0] == FREE_TABLE  # the leaf table under [2M, 4M), not yet invalidated


def test_teardown_frees_every_page() -> None:
    t = vtd(INCOHERENT)
    t.map(0, 0, K, RW)
    t.map(M, M, M, RW)
    t.map(G, G, G, RW)
    t.map(512 * G, 0, 3 * M, RW)
    assert t.live_table_pages > 1
    t.deinit()
    assert t.live_table_pages == 0
    assert t.executor.memory.load(t.drv.cfg.data_pa) == 0


# --- 4.6 item 2: free before the invalidation in switch_to_super_page ------------------------
def superpage_over_empty_table(t: Any) -> tuple[list[tuple], dict[str, Any]]:
    """Map and unmap 4K at 2M (its leaf table stays), then map 2M there. Returns the
    transactions of the 2M map and what was true at the free of that leaf table."""
    t.map(2 * M, 0, K, RW)
    assert t.unmap(2 * M, K) == K  # only part of the leaf table: it stays, empty
    mem = t.executor.memory
    seen: dict[str, Any] = {}
    ex = t.executor
    start = len(ex.log)

    def hook(tx: tuple) -> None:
        if tx[0] == FREE_TABLE and "free" not in seen:
            seen["free"] = tx[1]
            seen["invalidated"] = any(t[0] == INVALIDATE_RANGE for _, t, _ in ex.log[start:])
            seen["word"] = mem.hw.get(tx[1], 0)

    ex.hook = hook
    t.map(2 * M, 4 * M, M, RW)
    ex.hook = None
    return [tx for _, tx, _ in ex.log[start:]], seen


def test_superpage_frees_the_replaced_table_before_the_invalidation() -> None:
    """4.6 item 2 (faithful): the emptied leaf table is cleared out of its parent and
    freed (poisoned) before cache_tag_flush_range; a walker whose paging-structure
    cache still holds the old parent item reads the poison as a present leaf."""
    t = vtd()
    txs, seen = superpage_over_empty_table(t)
    assert seen["invalidated"] is False
    assert seen["word"] == POISON
    assert VtdSSHw().decode(0, seen["word"]).kind == LEAF
    kinds = [tx[0] for tx in txs if tx[0] in (FREE_TABLE, INVALIDATE_RANGE)]
    assert kinds == [FREE_TABLE, INVALIDATE_RANGE]
    inv = next(tx for tx in txs if tx[0] == INVALIDATE_RANGE)
    assert inv[2] == 2 * M and inv[4] is False
    assert t.iova_to_phys(2 * M + 5) == 4 * M + 5
    # 512 leaf-table stores in dma_pte_clear_range, then the parent item cleared.
    assert [tx[3] for tx in txs if tx[0] == FLUSH] == []  # coherent: no flush at all


def test_genpt_frees_the_replaced_table_after_the_invalidation() -> None:
    t = PageTable("vtdss", executor=RecordingExecutor())
    txs, seen = superpage_over_empty_table(t)
    assert seen["invalidated"] is True
    kinds = [tx[0] for tx in txs if tx[0] in (FREE_TABLE, INVALIDATE_RANGE)]
    assert kinds == [INVALIDATE_RANGE, FREE_TABLE]


def test_superpage_replace_flushes_when_incoherent() -> None:
    t = vtd(INCOHERENT)
    txs, _ = superpage_over_empty_table(t)
    causes = [(tx[3], tx[2]) for tx in txs if tx[0] == FLUSH]
    assert causes == [(CAUSE_CLEAR, 4096), (CAUSE_CLEAR, 8), (CAUSE_LEAF, 8)]


# --- driver glue ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "expect"),
    [
        (DriverPolicy(), []),
        (DriverPolicy(flush_write_buffer_on_map=True), [FLUSH_WRITE_BUFFER]),
        (DriverPolicy(invalidate_on_map=True), [INVALIDATE_RANGE, WAIT_INVALIDATION]),
        (DriverPolicy(True, True), [INVALIDATE_RANGE, WAIT_INVALIDATION]),
    ],
    ids=["none", "rwbf", "caching_mode", "both"],
)
def test_iotlb_sync_map(policy: DriverPolicy, expect: list[str]) -> None:
    """cache_tag_flush_range_np: caching mode -> PSI (no write-buffer flush), else RWBF
    -> write-buffer flush; nothing on ordinary hardware."""
    t = vtd(driver=policy)
    _, _, txs = measure(t, lambda: t.map(0, 0, K, RW))
    glue = (INVALIDATE_RANGE, WAIT_INVALIDATION, FLUSH_WRITE_BUFFER)
    assert [tx[0] for tx in txs if tx[0] in glue] == expect


def test_read_and_clear_dirty() -> None:
    """Per page: a lookup walk and a locked test_and_clear_bit of bit 9; NO_CLEAR only
    tests; runs merge; the cleared range is invalidated."""
    t = vtd()
    t.map(0, 0, 2 * K, RW)
    t.map(2 * M, 0, M, RW)
    mem = t.executor.memory
    for iova in (K, 2 * M):
        pa = item_pa(t, iova, 1 if iova == K else 2)
        mem.store(pa, mem.load(pa) | V.DMA_SL_PTE_DIRTY)
    assert t.read_and_clear_dirty(0, 4 * M, no_clear=True) == [(K, K), (2 * M, M)]
    _, c, txs = measure(t, lambda: t.read_and_clear_dirty(0, 4 * M))
    assert c[CMPXCHG] == 3  # one per present item, dirty or not
    assert [tx for tx in txs if tx[0] == INVALIDATE_RANGE] == [
        (INVALIDATE_RANGE, 1, K, 2 * M + M - K, True)
    ]
    assert t.read_and_clear_dirty(0, 4 * M) == []


def test_kernel_iova_to_phys() -> None:
    t = vtd()
    t.map(G, 3 * G, G, RW)
    assert t.kernel_iova_to_phys(G + 0x1234) == 3 * G + 0x1234
    assert t.kernel_iova_to_phys(0) == 0


# --- 4.6 item 1: the install race on an incoherent walker -----------------------------------
A, B = 0x20_0000, 0x20_1000  # share the leaf table that does not exist yet
PA_A, PA_B = 0x5000_0000, 0x6000_0000


def old_table() -> LegacyTable:
    t = vtd(INCOHERENT)
    t.map(0, 0x1000_0000, K, RW)
    return t


def genpt_table() -> PageTable:
    t = PageTable("vtdss", features={"dma_incoherent"}, executor=RecordingExecutor(two_views=True))
    t.map(0, 0x1000_0000, K, RW)
    return t


def ops(t: Any) -> list:
    return [t.map_op(A, PA_A, K, RW), t.map_op(B, PA_B, K, RW)]


def steps_until_cmpxchg(make: Callable[[], Any], cpu: int) -> int:
    """Transactions CPU ``cpu`` runs alone, up to and including its first CMPXCHG."""
    t = make()
    op = without_named_work(ops(t)[cpu])  # named work is not an interleaver step
    tx, n = next(op), 1
    while tx[0] != CMPXCHG:
        tx, n = op.send(t.executor.execute(tx, cpu)), n + 1
    return n


def steps_to_finish(make: Callable[[], Any], prefix: list[int], cpu: int) -> int:
    """On a mirror: replay the prefix, then count what ``cpu`` needs to return."""
    t = make()
    gens = [without_named_work(g) for g in ops(t)]
    pending = [next(g) for g in gens]
    for c in prefix:
        pending[c] = gens[c].send(t.executor.execute(pending[c], c))
    n = 0
    try:
        while True:
            n += 1
            pending[cpu] = gens[cpu].send(t.executor.execute(pending[cpu], cpu))
    except StopIteration:
        return n


def run_race(make: Callable[[], Any], shape: str) -> tuple[Any, dict[int, int | None], list]:
    """``observer``: CPU 0 stops right after its install cmpxchg, CPU 1 maps B to the
    end. ``loser``: both stop before their install cmpxchg, CPU 0 wins, CPU 1 loses
    and maps B to the end. Returns (table, hw translation at each return, CPU 1 log)."""
    k0 = steps_until_cmpxchg(make, 0)
    if shape == "observer":
        prefix = [0] * k0
    else:
        prefix = [0] * (k0 - 1) + [1] * (steps_until_cmpxchg(make, 1) - 1) + [0]
    schedule = prefix + [1] * steps_to_finish(make, prefix, 1)
    t = make()
    seen: dict[int, int | None] = {}
    start = len(t.executor.log)

    def on_return(cpu: int, ret: int) -> None:
        assert ret == 0
        seen[cpu] = t.iova_to_phys((A, B)[cpu], view="hw")

    Interleaver(t.executor).run(ops(t), schedule=schedule, on_return=on_return)
    cpu1 = [(tx, res) for cpu, tx, res in t.executor.log[start:] if cpu == 1]
    return t, seen, cpu1


@pytest.mark.parametrize("shape", ["observer", "loser"])
def test_install_race_old_vtd_faults_a_legal_dma(shape: str) -> None:
    """4.6 item 1: CPU 1 returns from a successful map of B while the walker reads a
    zero parent item (CPU 0's table pointer is still only in its cache); B becomes
    walkable only after CPU 0's own flush."""
    t, seen, cpu1 = run_race(old_table, shape)
    assert seen[1] is None
    assert t.iova_to_phys(B) == PA_B  # the CPU view was right all along
    assert seen[0] == PA_A and t.iova_to_phys(B, view="hw") == PA_B
    cpu1_flushes = [tx[3] for tx, _ in cpu1 if tx[0] == FLUSH]
    assert CAUSE_INSTALL not in cpu1_flushes and CAUSE_LEAF in cpu1_flushes
    if shape == "loser":
        install = next((tx, res) for tx, res in cpu1 if tx[0] == CMPXCHG)
        assert install[1] != install[0][2]  # lost the cmpxchg
        assert any(tx[0] == FREE_TABLE for tx, _ in cpu1)


@pytest.mark.parametrize("shape", ["observer", "loser"])
def test_install_race_absent_with_genpt_vtdss(shape: str) -> None:
    """The same schedule shape on genpt vtdss (dma_incoherent, every fix on): CPU 1
    sees FLUSH_DONE clear and flushes the pointer itself, so B is walkable on return."""
    _, seen, cpu1 = run_race(genpt_table, shape)
    assert seen == {0: PA_A, 1: PA_B}
    assert CAUSE_HELPER in [tx[3] for tx, _ in cpu1 if tx[0] == FLUSH]


def test_install_race_found_by_random_schedules() -> None:
    """Seeded random interleavings: the old code shows the fault on some seeds, genpt
    vtdss on none."""

    def faults(make: Callable[[], Any], seed: int) -> bool:
        t = make()
        bad: list[int] = []

        def on_return(cpu: int, ret: int) -> None:
            if ret == 0 and t.iova_to_phys((A, B)[cpu], view="hw") is None:
                bad.append(cpu)

        Interleaver(t.executor).run(ops(t), seed=seed, on_return=on_return)
        return bool(bad)

    seeds = range(200)
    assert sum(faults(old_table, s) for s in seeds) > 0
    assert not any(faults(genpt_table, s) for s in seeds)
