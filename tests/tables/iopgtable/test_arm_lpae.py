"""ARM LPAE io-pgtable (tables/iopgtable/arm_lpae.py) against legacy_pt.md section 5.

Item transaction counts are those of sections 8.1/8.1b (coherent, warm), 8.3 (lines
cleaned on a non-snooping walker) and 8.4 (cold); "item loads" are loads of table
memory, without the per-call load of the domain's pgd word (section 8 does not count
metadata). Quirks are named in the test names; the install race is run against the
same schedule on genpt x86_64 with ``flush_done_sw_bit`` off.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from iommusim.tables import DirectExecutor, Interleaver, PageTable, Prot, PTError
from iommusim.tables.errors import EINVAL
from iommusim.tables.executor import Operation
from iommusim.tables.iopgtable import LegacyTable
from iommusim.tables.iopgtable import arm_lpae as A
from iommusim.tables.memory import TABLE_REGION_BASE
from iommusim.tables.transactions import (
    ALLOC_TABLE,
    CAUSE_HELPER,
    CAUSE_INSTALL,
    CAUSE_LEAF,
    CAUSE_TABLE_START,
    CAUSE_UNMAP,
    CMPXCHG,
    FENCE,
    FLUSH,
    FREE_TABLE,
    INVALIDATE_RANGE,
    LOAD,
    STORE,
    WAIT_INVALIDATION,
    WORK,
)
from iommusim.tables.work import GATHER, OP_CALL

RW = Prot.READ | Prot.WRITE
K4, M2, G1 = 1 << 12, 1 << 21, 1 << 30
PA = 0x100_0000_0000  # 1 TiB: aligned for every request below
EEXIST = 17


class RecordingExecutor(DirectExecutor):
    """A direct executor that also logs (cpu, transaction, result)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log: list[tuple[int, tuple, Any]] = []

    def execute(self, tx: tuple, cpu: int = 0) -> Any:
        result = super().execute(tx, cpu)
        self.log.append((cpu, tx, result))
        return result


def make(incoherent: bool = False, features: tuple[str, ...] = ()) -> LegacyTable:
    feats = [*features, *(["dma_incoherent"] if incoherent else [])]
    return LegacyTable("armv8", features=feats, executor=RecordingExecutor(two_views=incoherent))


def txs(t: LegacyTable, fn: Callable[[], Any]) -> tuple[Any, list[tuple]]:
    """Run fn and return its result and the transactions it issued."""
    start = len(t.executor.log)
    result = fn()
    return result, [tx for _, tx, _ in t.executor.log[start:]]


def tally(log: list[tuple]) -> Counter[str]:
    """Item loads/stores/atomics, fences, allocations, flush lines by cause, work by name."""
    c: Counter[str] = Counter()
    for tx in log:
        kind = tx[0]
        if kind == LOAD:
            c["item_loads" if tx[1] >= TABLE_REGION_BASE else "meta_loads"] += 1
        elif kind == FLUSH:
            c[f"lines_{tx[3]}"] += len(range(tx[1] - tx[1] % 64, tx[1] + tx[2], 64))
            c["flushes"] += 1
        elif kind == WORK and len(tx) == 3:
            c[f"work_{tx[1]}"] += tx[2]
        else:
            c[kind] += 1
    return c


def leaf(t: LegacyTable, iova: int) -> tuple[int, int]:
    """(ARM level, item) of the leaf or hole for iova, read straight from the CPU view."""
    mem, drv = t.executor.memory.cpu, t.drv
    table, lvl = mem[t.drv.cfg.data_pa], drv.start_level
    while True:
        pte = mem.get(table + 8 * drv.lvl_idx(iova, lvl), 0)
        if not A.iopte_table(pte, lvl):
            return lvl, pte
        table, lvl = A.iopte_to_paddr(pte), lvl + 1


def item_at(t: LegacyTable, iova: int, lvl: int) -> int:
    """The item for iova at ARM level lvl (the tables above must exist)."""
    mem, drv = t.executor.memory.cpu, t.drv
    table = mem[drv.cfg.data_pa]
    for upper in range(drv.start_level, lvl):
        table = A.iopte_to_paddr(mem[table + 8 * drv.lvl_idx(iova, upper)])
    return mem.get(table + 8 * drv.lvl_idx(iova, lvl), 0)


# --- encodings ----------------------------------------------------------------------------
def test_geometry_and_bits() -> None:
    """4 levels for a 48-bit ias, 4K|2M|1G; the descriptor bits of io-pgtable-arm.c."""
    t = make()
    assert (t.drv.start_level, t.drv.levels, t.drv.genpt_top_level()) == (0, 4, 3)
    assert t.pgsize_bitmap == K4 | M2 | G1
    assert [A.block_size(lvl) for lvl in (1, 2, 3)] == [G1, M2, K4]
    assert A.PTE_SW_SYNC == 1 << 55 and A.PTE_XN == 3 << 53 and A.PTE_DBM == 1 << 51
    assert (A.PTE_AF, A.PTE_NG, A.PTE_AP_RDONLY, A.PTE_AP_UNPRIV) == (1 << 10, 1 << 11, 1 << 7, 64)
    assert A.max_entries(0) == 512 and A.max_entries(511) == 1 and A.max_entries(512 + 3) == 509
    narrow = LegacyTable("armv8", vasz_lg2=39)
    assert (narrow.drv.start_level, narrow.drv.genpt_top_level()) == (1, 2)


def test_pgsize_bitmap_restricted_to_the_4k_granule() -> None:
    """arm_lpae_restrict_pgsizes: the offered sizes cut to 4K|2M|1G; without 4K the
    granule would change (not modelled: init fails, as an unusable granule does)."""
    t = LegacyTable("armv8", pgsize_bitmap=K4 | (1 << 16) | M2)
    assert t.pgsize_bitmap == K4 | M2
    t.map(G1, PA, 2 * G1, RW)
    assert leaf(t, G1)[0] == 2  # 2M blocks, no 1G
    with pytest.raises(PTError) as err:
        LegacyTable("armv8", pgsize_bitmap=M2)
    assert err.value.errno == EINVAL


@pytest.mark.parametrize(
    ("prot", "size", "want"),
    [
        (RW | Prot.CACHE, K4, A.PTE_TYPE_PAGE | (1 << 2) | A.PTE_SH_IS),
        (Prot.READ, K4, A.PTE_TYPE_PAGE | A.PTE_AP_RDONLY | A.PTE_SH_OS),
        (RW | Prot.NOEXEC, M2, A.PTE_TYPE_BLOCK | A.PTE_XN | A.PTE_SH_OS),
        (RW | Prot.MMIO, G1, A.PTE_TYPE_BLOCK | (2 << 2) | A.PTE_SH_OS),
    ],
    ids=["page_rw_cache", "page_ro", "block2m_noexec", "block1g_mmio"],
)
def test_leaf_encoding(prot: Prot, size: int, want: int) -> None:
    """arm_lpae_prot_to_pte + __arm_lpae_init_pte: AF, nG, AP[1] always; the address."""
    t = make()
    t.map(G1, PA, size, prot)
    _, pte = leaf(t, G1)
    assert pte == want | A.PTE_AF | A.PTE_NG | A.PTE_AP_UNPRIV | PA


@pytest.mark.parametrize("incoherent", [False, True], ids=["coherent", "incoherent"])
def test_table_encoding_sw_sync(incoherent: bool) -> None:
    """arm_lpae_install_table: addr | TABLE; SW_SYNC only once cleaned (non-snooping)."""
    t = make(incoherent)
    t.map(0, PA, K4, RW)
    pgd = t.executor.memory.cpu[t.drv.cfg.data_pa]
    top = t.executor.memory.cpu[pgd]
    assert top & A.PTE_TYPE_MASK == A.PTE_TYPE_TABLE
    assert bool(top & A.PTE_SW_SYNC) == incoherent
    assert top & ~A.PTE_SW_SYNC & ~A.PTE_ADDR_MASK == A.PTE_TYPE_TABLE


# --- item counts (legacy_pt.md 8.1, 8.1b, 8.3, 8.4) ---------------------------------------
# size -> (warm-up page, region base): the region shares its tables with the warm page.
LAYOUT = {K4: (0x4000_0000, 0x4010_0000), M2: (0x4000_0000, 0x6000_0000), G1: (0, 1 << 38)}
MAP_LOADS = {(K4, 1): 4, (M2, 1): 3, (G1, 1): 2, (K4, 256): 259, (M2, 256): 258, (G1, 256): 257}
UNMAP_LOADS = {(K4, 1): 5, (M2, 1): 4, (G1, 1): 3, (K4, 256): 260, (M2, 256): 259, (G1, 256): 258}
CASES = sorted(MAP_LOADS, key=lambda k: (k[1], k[0]))
IDS = [f"{n}x{ {K4: '4K', M2: '2M', G1: '1G'}[s] }" for s, n in CASES]


def warm(incoherent: bool, size: int) -> tuple[LegacyTable, int]:
    t = make(incoherent)
    page, base = LAYOUT[size]
    t.map(page, PA - K4, K4, RW)
    return t, base


@pytest.mark.parametrize(("size", "n"), CASES, ids=IDS)
def test_counts_warm_coherent(size: int, n: int) -> None:
    """8.1/8.1b: map L interior + k leaf loads, k stores, no atomics, one wmb; unmap
    reloads the first leaf (L + 1 + k loads); one driver call each; k gather pages and
    one leaf invalidation at sync; no flush, no lock."""
    t, base = warm(False, size)
    _, log = txs(t, lambda: t.map(base, PA, n * size, RW))
    c = tally(log)
    assert (c["item_loads"], c[STORE], c[CMPXCHG], c[FENCE]) == (MAP_LOADS[size, n], n, 0, 1)
    assert (c["meta_loads"], c["work_" + OP_CALL], c[INVALIDATE_RANGE]) == (1, 1, 0)
    got, log = txs(t, lambda: t.unmap(base, n * size))
    c = tally(log)
    assert got == n * size
    assert (c["item_loads"], c[STORE], c[CMPXCHG]) == (UNMAP_LOADS[size, n], n, 0)
    assert (c["work_" + OP_CALL], c["work_" + GATHER]) == (1, n)
    invs = [tx for tx in log if tx[0] == INVALIDATE_RANGE]
    assert invs == [(INVALIDATE_RANGE, 1, base, n * size, True)]
    assert c[WAIT_INVALIDATION] == 1 and c[FLUSH] == 0 and c["lock"] == 0


@pytest.mark.parametrize(("size", "n"), CASES, ids=IDS)
def test_counts_warm_incoherent(size: int, n: int) -> None:
    """8.3: one clean per leaf-table batch, ceil(8k/64) lines, on map and on unmap; the
    warm interior items carry SW_SYNC, so no helper clean."""
    t, base = warm(True, size)
    _, log = txs(t, lambda: t.map(base, PA, n * size, RW))
    c = tally(log)
    assert (c["flushes"], c["lines_" + CAUSE_LEAF]) == (1, -(-n // 8))
    assert c["lines_" + CAUSE_HELPER] == 0 and c[STORE] == n
    _, log = txs(t, lambda: t.unmap(base, n * size))
    c = tally(log)
    assert (c["flushes"], c["lines_" + CAUSE_UNMAP]) == (1, -(-n // 8))


def test_counts_unmap_2024_per_item_sync() -> None:
    """8.3, the 2024 unmap (before the batched clear): 256 syncs of one item each."""
    t, base = warm(True, K4)
    t.drv.unmap_batched_sync = False
    t.map(base, PA, 256 * K4, RW)
    got, log = txs(t, lambda: t.unmap(base, 256 * K4))
    c = tally(log)
    assert got == 256 * K4
    assert (c["flushes"], c["lines_" + CAUSE_UNMAP], c[STORE]) == (256, 256, 256)
    assert c["work_" + GATHER] == 256


@pytest.mark.parametrize(("size", "tables"), [(K4, 3), (M2, 2), (G1, 1)], ids=["4K", "2M", "1G"])
@pytest.mark.parametrize("incoherent", [False, True], ids=["coherent", "incoherent"])
def test_counts_cold(size: int, tables: int, incoherent: bool) -> None:
    """8.4: per new table ALLOC + dma_wmb + cmpxchg (the slot load is the walk's own);
    non-snooping: + a 64-line clean of the page, a 1-line clean of the parent, and the
    SW_SYNC store."""
    t = make(incoherent)
    _, log = txs(t, lambda: t.map(G1, PA, size, RW))
    c = tally(log)
    assert (c[ALLOC_TABLE], c[CMPXCHG], c[FENCE]) == (tables, tables, tables + 1)
    assert c["item_loads"] == MAP_LOADS[size, 1] and c[FREE_TABLE] == 0
    assert c[STORE] == 1 + (tables if incoherent else 0)
    if incoherent:
        assert c["lines_" + CAUSE_TABLE_START] == 64 * tables
        assert (c["lines_" + CAUSE_INSTALL], c["lines_" + CAUSE_LEAF]) == (tables, 1)
    else:
        assert c["flushes"] == 0


def test_quirk_map_stops_at_leaf_table_end_two_driver_calls() -> None:
    """1.4 / __arm_lpae_map: 256 pages straddling a leaf-table boundary reach the driver
    as one (4K, 256) chunk; it maps the 128 to the table's end, the core calls again."""
    t = make()
    iova = 0x4020_0000 - 128 * K4
    _, log = txs(t, lambda: t.map(iova, PA + iova, 256 * K4, RW))
    assert tally(log)["work_" + OP_CALL] == 2
    assert t.iova_to_phys(iova + 255 * K4) == PA + iova + 255 * K4
    got, log = txs(t, lambda: t.unmap(iova, 256 * K4))
    assert got == 256 * K4 and tally(log)["work_" + OP_CALL] == 2


# --- section 7 behaviours and quirks -------------------------------------------------------
def test_quirk_map_over_leaf_is_eexist_and_batch_is_all_or_nothing() -> None:
    """arm_lpae_init_pte checks every item of the batch before writing any: -EEXIST with
    a WARN, and the free first page of the batch stays unmapped."""
    t = make()
    t.map(0x4000_1000, PA, K4, RW)
    with pytest.raises(PTError) as err:
        t.map(0x4000_0000, PA + M2, 2 * K4, RW)
    assert err.value.errno == EEXIST
    assert "map: a leaf is in the way (-EEXIST)" in t.warnings
    assert t.iova_to_phys(0x4000_0000) is None and t.iova_to_phys(0x4000_1000) == PA


def test_quirk_map_eexist_in_second_chunk_is_rolled_back_by_the_core() -> None:
    """__iommu_map: a later chunk's -EEXIST unmaps what earlier chunks mapped."""
    t = make()
    t.map(0x4020_0000, PA, K4, RW)
    with pytest.raises(PTError):
        t.map(0x4020_0000 - K4, PA + M2, 2 * K4, RW)
    assert t.iova_to_phys(0x4020_0000 - K4) is None and t.iova_to_phys(0x4020_0000) == PA


def test_map_without_read_or_write_is_einval_without_warn() -> None:
    t = make()
    with pytest.raises(PTError) as err:
        t.map(0, PA, K4, Prot.CACHE)
    assert err.value.errno == EINVAL and t.warnings == []


def test_quirk_block_over_table_frees_live_leaves_after_walk_invalidation() -> None:
    """arm_lpae_init_pte -> __arm_lpae_unmap(NULL gather): a 2M map over a leaf table
    silently drops its live 4K leaves (genpt: -EADDRINUSE); the table is freed at once,
    after a synchronous non-leaf invalidation, and nothing is gathered."""
    t = make()
    t.map(0x4000_0000, PA, 2 * K4, RW)
    live = t.live_table_pages
    _, log = txs(t, lambda: t.map(0x4000_0000, PA + G1, M2, RW))
    kinds = [tx[0] for tx in log if tx[0] in (INVALIDATE_RANGE, WAIT_INVALIDATION, FREE_TABLE)]
    assert kinds == [INVALIDATE_RANGE, WAIT_INVALIDATION, FREE_TABLE]
    assert next(tx for tx in log if tx[0] == INVALIDATE_RANGE)[4] is False
    assert t.live_table_pages == live - 1
    assert t.iova_to_phys(0x4000_1000) == PA + G1 + K4


def test_quirk_unmap_stops_at_first_hole_with_warn() -> None:
    """__arm_lpae_unmap: the batch stops at a zero item (WARN); the core's next call hits
    the hole at once and ends the request; what follows the hole stays mapped."""
    t = make()
    t.map(0x4000_0000, PA, K4, RW)
    t.map(0x4000_2000, PA + 2 * K4, K4, RW)
    assert t.unmap(0x4000_0000, 3 * K4) == K4
    assert t.warnings == ["unmap: hole", "unmap: hole"]
    assert t.iova_to_phys(0x4000_2000) == PA + 2 * K4


def test_quirk_partial_block_unmap_warns_and_returns_zero() -> None:
    """Since 6.13 (33729a5fc0ca, split-on-unmap removed): unmapping 4K of a 2M block
    unmaps nothing and WARNs; the block stays."""
    t = make()
    t.map(M2, PA, M2, RW)
    assert t.unmap(M2 + K4, K4) == 0
    assert t.warnings == ["Unmap of a partial large IOPTE is not allowed"]
    assert t.iova_to_phys(M2 + K4) == PA + K4


def test_contiguous_bit_never_set_and_no_locks() -> None:
    """Section 7: no CONT hint (256 separate leaves), no lock anywhere in the PT code."""
    t = make()
    t.map(0x4010_0000, PA, 256 * K4, RW)
    mem = t.executor.memory.cpu
    assert not any(v & A.PTE_CONT for a, v in mem.items() if a >= TABLE_REGION_BASE)
    t.unmap(0x4010_0000, 256 * K4)
    assert t.executor.counts["lock"] == 0


def test_quirk_iova_to_phys_ignores_bits_above_ias() -> None:
    """arm_lpae_iova_to_phys has no ias check: LVL_IDX masks the high bits away."""
    t = make()
    t.map(0x4000_0000, PA, K4, RW)
    assert t.kernel_iova_to_phys(0x4000_0123 | 1 << 48) == PA + 0x123
    assert t.kernel_iova_to_phys(0x4000_1000) == 0


def test_teardown_frees_every_table() -> None:
    t = make(True)
    t.map(0x4000_0000, PA, 4 * K4, RW)
    t.map(1 << 39, PA, G1, RW)
    t.map(0x4000_0000 + 8 * M2, PA, M2, RW)
    t.unmap(0x4000_0000, M2)  # removes a leaf table through the walk invalidation
    assert t.live_table_pages > 0
    t.deinit()
    assert t.live_table_pages == 0 and t.executor.allocator.bad_frees == []


# --- table-free timing (5.5) ----------------------------------------------------------------
@pytest.mark.parametrize("incoherent", [False, True], ids=["coherent", "incoherent"])
def test_table_freed_by_unmap_after_synchronous_walk_invalidation(incoherent: bool) -> None:
    """A table removed by unmap: the parent item is cleared (and cleaned), then a non-leaf
    invalidation of its range and its wait, then FREE_TABLE -- all before the request's
    final leaf invalidation at iotlb_sync (2025 form: the table item is gathered too)."""
    t = make(incoherent)
    t.map(0x4000_0000, PA, 2 * K4, RW)
    leaf_table = item_at(t, 0x4000_0000, 2) & A.PTE_ADDR_MASK
    got, log = txs(t, lambda: t.unmap(0x4000_0000, M2))
    assert got == M2
    inv = log.index((INVALIDATE_RANGE, 1, 0x4000_0000, M2, False))
    free = log.index((FREE_TABLE, leaf_table))
    clear = next(i for i, tx in enumerate(log) if tx[0] == STORE and tx[2] == 0)
    assert clear < inv < log.index((WAIT_INVALIDATION,)) < free
    if incoherent:
        clean = next(i for i, tx in enumerate(log) if tx[0] == FLUSH)
        assert clear < clean < inv and log[clean][3] == CAUSE_UNMAP
    assert log[-2:] == [(INVALIDATE_RANGE, 1, 0x4000_0000, M2, True), (WAIT_INVALIDATION,)]
    assert t.iova_to_phys(0x4000_1000) is None and item_at(t, 0x4000_0000, 2) == 0


def test_unmap_2024_form_gathers_leaves_only() -> None:
    """2024 __arm_lpae_unmap: a removed table is not gathered, so iotlb_sync (pgsize 0)
    issues nothing after the walk invalidation."""
    t = make()
    t.drv.unmap_batched_sync = False
    t.map(0x4000_0000, PA, K4, RW)
    _, log = txs(t, lambda: t.unmap(0x4000_0000, M2))
    invs = [tx for tx in log if tx[0] == INVALIDATE_RANGE]
    assert invs == [(INVALIDATE_RANGE, 1, 0x4000_0000, M2, False)]


# --- dirty tracking (stage-1 DBM) -------------------------------------------------------------
def test_quirk_writable_leaf_starts_dirty_with_hd() -> None:
    """IO_PGTABLE_QUIRK_ARM_HD: writable leaves get DBM with AP[2] clear, which already
    reads as dirty; clearing sets AP[2]; a hardware write clears it again."""
    t = make(features=(A.DBM_FEATURE,))
    t.map(0x4000_0000, PA, 2 * K4, RW)
    t.map(0x4000_2000, PA, K4, Prot.READ)
    assert t.read_and_clear_dirty(0x4000_0000, 3 * K4, no_clear=True) == [(0x4000_0000, 2 * K4)]
    assert t.read_and_clear_dirty(0x4000_0000, 3 * K4) == [(0x4000_0000, 2 * K4)]
    assert t.read_and_clear_dirty(0x4000_0000, 3 * K4) == []
    _, pte = leaf(t, 0x4000_1000)
    assert pte & A.PTE_AP_RDONLY and pte & A.PTE_DBM
    mem = t.executor.memory.cpu
    slot = next(a for a, v in mem.items() if v == pte)
    mem[slot] = pte & ~A.PTE_AP_RDONLY  # the SMMU's dirty update
    assert t.read_and_clear_dirty(0x4000_0000, 3 * K4) == [(0x4000_1000, K4)]


def test_no_dbm_without_the_feature() -> None:
    t = make()
    t.map(0x4000_0000, PA, K4, RW)
    assert not leaf(t, 0x4000_0000)[1] & A.PTE_DBM
    assert t.read_and_clear_dirty(0x4000_0000, K4) == []


def test_quirk_dirty_walk_over_hole_is_einval() -> None:
    """io_pgtable_visit: an item that is neither leaf nor table ends the walk, -EINVAL."""
    t = make(features=(A.DBM_FEATURE,))
    t.map(0x4000_0000, PA, K4, RW)
    with pytest.raises(PTError) as err:
        t.read_and_clear_dirty(0x4000_0000, 2 * K4)
    assert err.value.errno == EINVAL


# --- the install race (5.5): clean for ARM LPAE, a bug for genpt without FLUSH_DONE ----------
IOVA_A, IOVA_B = 0x20_0000, 0x20_1000  # the same missing leaf table under one level-1 slot
PA_A, PA_B = 0x5000_0000, 0x6000_0000


def race_table(impl: str) -> Any:
    """A table whose upper levels exist (a page at 0) on a non-snooping walker."""
    if impl == "arm-lpae":
        t: Any = LegacyTable("armv8", features=["dma_incoherent"])
    else:
        t = PageTable(
            "x86_64",
            vasz_lg2=48,
            top_level=3,
            features={"sign_extend", "dma_incoherent"},
            fixes={"flush_done_sw_bit": False},
        )
    t.map(0, 0x1000_0000, K4, RW)
    return t


class Cpus:
    """Steps two map operations by hand; records whether B was walkable when CPU 1
    returned success."""

    def __init__(self, t: Any) -> None:
        self.t = t
        self.ops: list[Operation] = [t.map_op(IOVA_A, PA_A, K4, RW), t.map_op(IOVA_B, PA_B, K4, RW)]
        self.pending = [next(op) for op in self.ops]
        self.results: list[Any] = [None, None]
        self.b_visible: bool | None = None

    def step(self, cpu: int) -> tuple:
        tx = self.pending[cpu]
        try:
            self.pending[cpu] = self.ops[cpu].send(self.t.executor.execute(tx, cpu))
        except StopIteration as stop:
            self.pending[cpu] = None
            self.results[cpu] = stop.value
            if cpu == 1:
                self.b_visible = self.t.iova_to_phys(IOVA_B, view="hw") == PA_B
        return tx

    def until_cmpxchg(self, cpu: int) -> None:
        """Run cpu up to (not including) its first CMPXCHG: the table install."""
        while self.pending[cpu][0] != CMPXCHG:
            self.step(cpu)

    def finish(self, cpu: int) -> None:
        while self.pending[cpu] is not None:
            self.step(cpu)


def race_found_installed(impl: str) -> Cpus:
    """CPU 0 installs the leaf table and stops before cleaning it; CPU 1 maps B."""
    cpus = Cpus(race_table(impl))
    cpus.until_cmpxchg(0)
    cpus.step(0)
    cpus.finish(1)
    cpus.finish(0)
    return cpus


def race_lost_install(impl: str) -> Cpus:
    """Both allocate; CPU 0's cmpxchg wins; CPU 1's loses and it carries on to return."""
    cpus = Cpus(race_table(impl))
    cpus.until_cmpxchg(0)
    cpus.until_cmpxchg(1)
    cpus.step(0)
    cpus.finish(1)
    cpus.finish(0)
    return cpus


@pytest.mark.parametrize(
    "schedule", [race_found_installed, race_lost_install], ids=["found_installed", "lost_install"]
)
def test_install_race_clean_for_arm_lpae(schedule: Callable[[str], Cpus]) -> None:
    """SW_SYNC + "sync whether you won or lost": CPU 1 cleans the parent item itself
    (a helper clean) and returns only once B is walkable from DRAM."""
    cpus = schedule("arm-lpae")
    assert cpus.results == [0, 0] and cpus.b_visible is True
    log = cpus.t.executor
    assert log.flush_lines[CAUSE_HELPER] >= 1
    assert cpus.t.live_table_pages == 5  # pgd, L1, L2, two leaf tables: no loser's page


@pytest.mark.parametrize(
    "schedule", [race_found_installed, race_lost_install], ids=["found_installed", "lost_install"]
)
def test_install_race_bug_for_genpt_without_flush_done(schedule: Callable[[str], Cpus]) -> None:
    """The same schedules on genpt x86_64 with flush_done_sw_bit off: CPU 1's map returns
    success while the walker still reads a zero parent item."""
    cpus = schedule("genpt")
    assert cpus.results == [0, 0] and cpus.b_visible is False
    assert cpus.t.iova_to_phys(IOVA_B, view="hw") == PA_B  # CPU 0 cleaned it later


def test_install_race_random_schedules_clean_for_arm_lpae() -> None:
    """200 seeded interleavings: no map returns before its IOVA is walkable."""
    for seed in range(200):
        t = race_table("arm-lpae")
        invisible: list[int] = []

        def on_return(cpu: int, ret: int, t: Any = t, out: list[int] = invisible) -> None:
            if ret == 0 and t.iova_to_phys((IOVA_A, IOVA_B)[cpu], view="hw") is None:
                out.append(cpu)

        results = Interleaver(t.executor).run(
            [t.map_op(IOVA_A, PA_A, K4, RW), t.map_op(IOVA_B, PA_B, K4, RW)],
            seed=seed,
            on_return=on_return,
        )
        assert results == [0, 0] and invisible == [], f"seed {seed}"


def test_legacy_table_api_both_coherences() -> None:
    """LegacyTable("armv8") through the PageTable API, coherent and not: the hardware
    view sees what the CPU view sees once map returns."""
    for feats in ([], ["dma_incoherent"]):
        t = LegacyTable("armv8", features=feats)
        assert t.implementation == "arm-lpae" and t.format == "armv8"
        t.map(0x4000_0000, PA, 3 * M2 + K4, RW)
        for view in ("cpu", "hw", "peek"):
            assert t.iova_to_phys(0x4020_0123, view=view) == PA + M2 + 0x123
        assert t.unmap(0x4000_0000, 3 * M2 + K4) == 3 * M2 + K4
        assert t.iova_to_phys(0x4020_0123, view="hw") is None
        t.deinit()
        assert t.live_table_pages == 0
