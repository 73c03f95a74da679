"""ARM LPAE io-pgtable, stage 1, 4K granule (drivers/iommu/io-pgtable-arm.c, 2024 - mid 2025).

The driver genpt's armv8 format would replace (legacy_pt.md section 5). It writes the
same hardware descriptors as genpt ``armv8`` but defines its own bits, as the C file
does. What makes it different from the other old drivers:

- ``__arm_lpae_map`` writes at most one leaf table per call (``arm_lpae_max_entries``);
  the iommu core calls again with what is left, so a request walks once per leaf table.
- Tables are installed lock-free by cmpxchg. With a non-snooping walker the installer
  cleans the parent item *whether it won or lost* and the winner then sets the software
  bit SW_SYNC (bit 55), so a mapper that finds an item without SW_SYNC cleans it too:
  no CPU can return before its path is visible to the walker (the design genpt's
  FLUSH_DONE bit copied).
- A table removed by unmap (or replaced by a block on map) is freed at once, right
  after a synchronous walk-cache invalidation (``io_pgtable_tlb_flush_walk``), never
  through the gather.

The arm-smmu-v3 tlb ops become IOMMU commands: ``tlb_flush_walk`` is a non-leaf
INVALIDATE_RANGE plus WAIT_INVALIDATION, ``tlb_add_page`` is the core's
``iommu_iotlb_gather_add_page``, ``iotlb_sync`` one leaf INVALIDATE_RANGE plus a wait.
The DMA API's cache maintenance (``dma_map_single`` of a new table,
``dma_sync_single_for_device`` of written items: clean to PoC then DSB) is one FLUSH
each; ``wmb()`` and ``dma_wmb()`` are FENCEs. The simulated core invalidates strictly,
so the gather is never ``queued``.
"""

from __future__ import annotations

from errno import EEXIST

from ..dirty import DirtyArgs
from ..errors import EINVAL, ENOMEM, ERANGE
from ..iter import Gen
from ..prot import CACHE, MMIO, NOEXEC, READ, RW, WRITE
from ..transactions import (
    ALLOC_TABLE,
    CAUSE_CLEAR,
    CAUSE_HELPER,
    CAUSE_INSTALL,
    CAUSE_LEAF,
    CAUSE_TABLE_START,
    CAUSE_UNMAP,
    CHANGE_TOP,
    CMPXCHG,
    FENCE,
    FLUSH,
    FREE_TABLE,
    INVALIDATE_RANGE,
    LOAD,
    STORE,
    WAIT_INVALIDATION,
)
from ..work import CONTIG_SETUP, ITEM_EXAMINE, ITEM_WRITE, LEVEL, work
from .driver import Driver, DriverConfig
from .iommu import IotlbGather, iommu_iotlb_gather_add_page

# --- stage-1 descriptor bits (the C file's own definitions) ----------------------------
PTE_TYPE_MASK = 0x3
PTE_TYPE_BLOCK = 1  # a leaf above the last level
PTE_TYPE_TABLE = 3  # a next-level pointer above the last level
PTE_TYPE_PAGE = 3  # a leaf at the last level (same code, meaning set by the level)
PTE_NS = 1 << 5
PTE_AP_UNPRIV = 1 << 6  # AP[1]: EL0 may access (always set: no IOMMU_PRIV here)
PTE_AP_RDONLY_BIT = 7
PTE_AP_RDONLY = 1 << PTE_AP_RDONLY_BIT  # AP[2]
PTE_SH_OS = 2 << 8
PTE_SH_IS = 3 << 8
PTE_AF = 1 << 10
PTE_NG = 1 << 11
PTE_DBM = 1 << 51  # hardware dirty state: DBM set, AP[2] clear = written
PTE_CONT = 1 << 52  # the contiguous hint: defined by the architecture, never set here
PTE_PXN = 1 << 53
PTE_UXN = 1 << 54
PTE_XN = PTE_PXN | PTE_UXN
PTE_SW_SYNC = 1 << 55  # software: this table item has been cleaned to the walker
PTE_NSTABLE = 1 << 63
PTE_ADDR_MASK = ((1 << 48) - 1) & ~((1 << 12) - 1)  # bits 47:12
PTE_ATTRINDX_SHIFT = 2
PTE_AP_WR_CLEAN_MASK = PTE_AP_RDONLY | PTE_DBM

MAIR_ATTR_IDX_NC = 0
MAIR_ATTR_IDX_CACHE = 1
MAIR_ATTR_IDX_DEV = 2

# --- geometry: 4K granule -----------------------------------------------------------------
MAX_LEVELS = 4  # ARM levels 0..3, 3 = the 4K leaf level
MAX_ADDR_BITS = 48  # arm_lpae_restrict_pgsizes caps ias/oas here for the 4K granule
PG_SHIFT = 12
BITS_PER_LEVEL = PG_SHIFT - 3
PTES_PER_TABLE = 1 << BITS_PER_LEVEL
GRANULE = 1 << PG_SHIFT
PGSIZE_BITMAP = (1 << 12) | (1 << 21) | (1 << 30)
OAS_ENCODABLE = (32, 36, 40, 42, 44, 48)  # the TCR IPS values; anything else fails alloc

DBM_FEATURE = "armv8_dbm"  # genpt armv8's dirty-tracking feature -> IO_PGTABLE_QUIRK_ARM_HD


def lvl_shift(lvl: int) -> int:
    """ARM_LPAE_LVL_SHIFT: where level ``lvl``'s index starts in an address."""
    return (MAX_LEVELS - lvl) * BITS_PER_LEVEL + 3


def block_size(lvl: int) -> int:
    """ARM_LPAE_BLOCK_SIZE: the bytes one item at ``lvl`` maps."""
    return 1 << lvl_shift(lvl)


def max_entries(index: int) -> int:
    """arm_lpae_max_entries: items from ``index`` to the end of its table page."""
    return PTES_PER_TABLE - (index & (PTES_PER_TABLE - 1))


def iopte_type(pte: int) -> int:
    return pte & PTE_TYPE_MASK


def iopte_leaf(pte: int, lvl: int) -> bool:
    """A page at the last level, a block above it."""
    if lvl == MAX_LEVELS - 1:
        return iopte_type(pte) == PTE_TYPE_PAGE
    return iopte_type(pte) == PTE_TYPE_BLOCK


def iopte_table(pte: int, lvl: int) -> bool:
    return lvl != MAX_LEVELS - 1 and iopte_type(pte) == PTE_TYPE_TABLE


def paddr_to_iopte(paddr: int) -> int:
    """Fold PA bits 51:48 into 15:12 (only meaningful for the 64K granule)."""
    return (paddr | (paddr >> (48 - 12))) & PTE_ADDR_MASK


def iopte_to_paddr(pte: int) -> int:
    """Below the 64K granule the address field is the address."""
    return pte & PTE_ADDR_MASK


def iopte_writeable_dirty(pte: int) -> bool:
    return pte & PTE_AP_WR_CLEAN_MASK == PTE_DBM


class ArmLpae(Driver):
    """One ARM_64_LPAE_S1 io_pgtable with the arm-smmu-v3 tlb ops around it."""

    name = "arm-lpae"
    fmt = "armv8"

    def __init__(self, cfg: DriverConfig, *, unmap_batched_sync: bool = True) -> None:
        super().__init__(cfg)
        self.coherent = cfg.coherent_walk
        # The 2025 unmap clears all items of a batch with one sync; the 2024 form
        # cleared and synced each item (legacy_pt.md 5.3, arm_unmap_batched_sync).
        self.unmap_batched_sync = unmap_batched_sync
        self.quirk_hd = DBM_FEATURE in cfg.features  # IO_PGTABLE_QUIRK_ARM_HD
        self.ias = min(cfg.vasz_lg2 or MAX_ADDR_BITS, MAX_ADDR_BITS)
        self.oas = min(cfg.oasz_lg2 or MAX_ADDR_BITS, MAX_ADDR_BITS)
        va_bits = self.ias - PG_SHIFT
        self.levels = -(-va_bits // BITS_PER_LEVEL)
        self.start_level = MAX_LEVELS - self.levels
        self.pgd_bits = va_bits - BITS_PER_LEVEL * (self.levels - 1)
        self.pgd_size = 8 << self.pgd_bits
        # arm_lpae_restrict_pgsizes: what the SMMU offers, cut to the 4K granule's sizes.
        offered = PGSIZE_BITMAP if cfg.pgsize_bitmap is None else cfg.pgsize_bitmap
        self.pgsize_bitmap = offered & PGSIZE_BITMAP

    # -- geometry -----------------------------------------------------------------------
    def lvl_idx(self, iova: int, lvl: int) -> int:
        """ARM_LPAE_LVL_IDX: the top level may be narrower (or wider) than a page."""
        bits = BITS_PER_LEVEL
        if lvl == self.start_level:
            bits += self.pgd_bits - BITS_PER_LEVEL
        return (iova >> lvl_shift(lvl)) & ((1 << bits) - 1)

    def genpt_top_level(self) -> int:
        """The same top in genpt's numbering (level 0 = 4K leaves)."""
        return MAX_LEVELS - 1 - self.start_level

    # -- pages and cache maintenance ---------------------------------------------------------
    def alloc_pages(self, size: int) -> Gen:
        """__arm_lpae_alloc_pages: a zeroed table, cleaned to the walker when it does not
        snoop (dma_map_single); None when the allocation failed."""
        size_lg2 = max(size, 64).bit_length() - 1
        pa = yield (ALLOC_TABLE, size_lg2)
        if pa is None:
            return None
        if not self.coherent:
            yield (FLUSH, pa, size, CAUSE_TABLE_START)
        return pa

    def free_pages(self, pa: int) -> Gen:
        """__arm_lpae_free_pages: dma_unmap_single of a to-device mapping does no cache
        maintenance on arm64, so this is only the free."""
        yield (FREE_TABLE, pa)

    def sync_pte(self, ptep: int, num: int, cause: str) -> Gen:
        """__arm_lpae_sync_pte: clean ``num`` items to the point of coherency, then DSB."""
        yield (FLUSH, ptep, 8 * num, cause)

    def clear_pte(self, ptep: int, num: int, cause: str) -> Gen:
        """__arm_lpae_clear_pte: zero ``num`` items, one sync for all of them."""
        yield work(ITEM_WRITE, num)
        for i in range(num):
            yield (STORE, ptep + 8 * i, 0)
        if not self.coherent and num:
            yield from self.sync_pte(ptep, num, cause)

    def flush_walk(self, iova: int, size: int) -> Gen:
        """io_pgtable_tlb_flush_walk -> arm_smmu_tlb_inv_walk: a non-leaf range
        invalidation and its CMD_SYNC, before the caller frees the table."""
        yield (INVALIDATE_RANGE, self.domain, iova, size, False)
        yield (WAIT_INVALIDATION,)

    # -- set-up and teardown ---------------------------------------------------------------
    def init(self) -> Gen:
        """arm_64_lpae_alloc_pgtable_s1: check the geometry, allocate the pgd, wmb()."""
        top = self.cfg.top_level
        if self.ias <= PG_SHIFT or self.oas not in OAS_ENCODABLE:
            return -EINVAL
        if not self.pgsize_bitmap & GRANULE:
            return -EINVAL  # another granule (16K/64K) or none: not modelled
        if top is not None and top != self.genpt_top_level():
            return -EINVAL  # the depth follows from ias alone
        pgd = yield from self.alloc_pages(self.pgd_size)
        if pgd is None:
            return -ENOMEM
        yield (FENCE,)  # the empty pgd is visible before TTBR0 is written
        yield (STORE, self.cfg.data_pa, pgd)
        return 0

    def attach(self) -> Gen:
        """The CD's TTBR0 takes the pgd; the walk starts at start_level."""
        pgd = yield (LOAD, self.cfg.data_pa)
        yield (CHANGE_TOP, self.domain, pgd, self.genpt_top_level())

    def free(self) -> Gen:
        """arm_lpae_free_pgtable: free every table, no invalidation (the domain is gone)."""
        pgd = yield (LOAD, self.cfg.data_pa)
        yield from self.free_pgtable(self.start_level, pgd)

    def free_pgtable(self, lvl: int, table: int) -> Gen:
        """__arm_lpae_free_pgtable: post-order; last-level tables are freed unread."""
        if lvl < MAX_LEVELS - 1:
            size = self.pgd_size if lvl == self.start_level else GRANULE
            for ptep in range(table, table + size, 8):
                pte = yield (LOAD, ptep)
                if pte and not iopte_leaf(pte, lvl):
                    yield from self.free_pgtable(lvl + 1, iopte_to_paddr(pte))
            yield work(ITEM_EXAMINE, size // 8)
        yield from self.free_pages(table)

    # -- map ---------------------------------------------------------------------------------
    def prot_to_pte(self, prot: int) -> int:
        """arm_lpae_prot_to_pte for stage 1 (no IOMMU_PRIV in the simulator: AP[1] set)."""
        pte = PTE_NG | PTE_AP_UNPRIV
        if not prot & WRITE and prot & READ:
            pte |= PTE_AP_RDONLY
        elif self.quirk_hd:
            pte |= PTE_DBM
        if prot & MMIO:
            pte |= MAIR_ATTR_IDX_DEV << PTE_ATTRINDX_SHIFT
        elif prot & CACHE:
            pte |= MAIR_ATTR_IDX_CACHE << PTE_ATTRINDX_SHIFT
        pte |= PTE_SH_IS if prot & CACHE else PTE_SH_OS
        if prot & NOEXEC:
            pte |= PTE_XN
        return pte | PTE_AF

    def map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, mapped: list[int]
    ) -> Gen:
        """arm_lpae_map_pages: 0 or -errno; maps at most to the end of one leaf table."""
        pgd = yield (LOAD, self.cfg.data_pa)
        if self.warn_on(not pgsize or pgsize & self.pgsize_bitmap != pgsize, "map: bad pgsize"):
            return -EINVAL
        if self.warn_on(bool(iova >> self.ias or paddr >> self.oas), "map: beyond ias/oas"):
            return -ERANGE
        if not prot & RW:
            return -EINVAL  # no WARN here
        pte_prot = self.prot_to_pte(prot)
        ret = yield from self.map_level(
            iova, paddr, pgsize, pgcount, pte_prot, self.start_level, pgd, mapped
        )
        yield (FENCE,)  # wmb(): every PTE write before a walk can start
        return ret

    def map_level(
        self,
        iova: int,
        paddr: int,
        size: int,
        pgcount: int,
        prot: int,
        lvl: int,
        table: int,
        mapped: list[int],
    ) -> Gen:
        """__arm_lpae_map: descend (installing tables) to the level of ``size``."""
        yield work(LEVEL)
        idx = self.lvl_idx(iova, lvl)
        ptep = table + 8 * idx
        if size == block_size(lvl):
            yield work(CONTIG_SETUP)
            num = min(pgcount, max_entries(idx))
            ret = yield from self.init_pte(iova, paddr, prot, lvl, num, ptep)
            if not ret:
                mapped[0] += num * size
            return ret
        if self.warn_on(lvl >= MAX_LEVELS - 1, "map: no table below the last level"):
            return -EINVAL
        pte = yield (LOAD, ptep)  # READ_ONCE
        yield work(ITEM_EXAMINE)
        child = 0
        if not pte:
            child = yield from self.alloc_pages(GRANULE)
            if child is None:
                return -ENOMEM
            pte = yield from self.install_table(child, ptep, 0)
            if pte:
                yield from self.free_pages(child)  # lost the race: walk the winner's table
        elif not self.coherent and not pte & PTE_SW_SYNC:
            # Its installer may not have cleaned it yet: do it rather than wait.
            yield from self.sync_pte(ptep, 1, CAUSE_HELPER)
        if pte and not iopte_leaf(pte, lvl):
            child = iopte_to_paddr(pte)
        elif pte:
            self.warn_on(True, "map: a leaf is in the way (-EEXIST)")
            return -EEXIST
        return (yield from self.map_level(iova, paddr, size, pgcount, prot, lvl + 1, child, mapped))

    def install_table(self, table: int, ptep: int, curr: int) -> Gen:
        """arm_lpae_install_table: cmpxchg the pointer in; on a non-snooping walker clean
        the item whether this CPU won or lost, and the winner marks it SW_SYNC. Returns
        the old value (``curr`` when this CPU won)."""
        new = paddr_to_iopte(table) | PTE_TYPE_TABLE
        yield work(ITEM_WRITE)
        yield (FENCE,)  # dma_wmb(): the zeroed table before the pointer to it
        old = yield (CMPXCHG, ptep, curr, new)  # cmpxchg64_relaxed
        if self.coherent or old & PTE_SW_SYNC:
            return old
        yield from self.sync_pte(ptep, 1, CAUSE_INSTALL if old == curr else CAUSE_HELPER)
        if old == curr:
            yield (STORE, ptep, new | PTE_SW_SYNC)  # WRITE_ONCE, not itself cleaned
        return old

    def init_pte(self, iova: int, paddr: int, prot: int, lvl: int, num: int, ptep: int) -> Gen:
        """arm_lpae_init_pte: refuse leaves, free tables in the way, then write ``num``
        leaves and sync them once."""
        sz = block_size(lvl)
        for i in range(num):
            pte = yield (LOAD, ptep + 8 * i)
            if iopte_leaf(pte, lvl):
                self.warn_on(True, "map: a leaf is in the way (-EEXIST)")
                return -EEXIST
            if iopte_type(pte) == PTE_TYPE_TABLE:
                # A block replaces a table: unmap it whole, live leaves included.
                tblp = ptep - 8 * self.lvl_idx(iova, lvl)
                got = yield from self.unmap_level(None, iova + i * sz, sz, 1, lvl, tblp)
                if got != sz:
                    self.warn_on(True, "map: could not remove the table in the way")
                    return -EINVAL
        yield work(ITEM_EXAMINE, num)
        pte = prot | (PTE_TYPE_PAGE if lvl == MAX_LEVELS - 1 else PTE_TYPE_BLOCK)
        yield work(ITEM_WRITE, num)
        for i in range(num):
            yield (STORE, ptep + 8 * i, pte | paddr_to_iopte(paddr + i * sz))
        if not self.coherent:
            yield from self.sync_pte(ptep, num, CAUSE_LEAF)
        return 0

    # -- unmap -------------------------------------------------------------------------------
    def unmap_pages(self, iova: int, pgsize: int, pgcount: int, gather: IotlbGather) -> Gen:
        """arm_lpae_unmap_pages: bytes unmapped, at most to the end of one table."""
        pgd = yield (LOAD, self.cfg.data_pa)
        bad = not pgsize or pgsize & self.pgsize_bitmap != pgsize or not pgcount
        if self.warn_on(bad, "unmap: bad pgsize or count"):
            return 0
        if self.warn_on(bool(iova >> self.ias), "unmap: beyond ias"):
            return 0
        return (yield from self.unmap_level(gather, iova, pgsize, pgcount, self.start_level, pgd))

    def unmap_level(
        self,
        gather: IotlbGather | None,
        iova: int,
        size: int,
        pgcount: int,
        lvl: int,
        table: int,
    ) -> Gen:
        """__arm_lpae_unmap: descend to the level of ``size``; a hole or a larger leaf
        unmaps nothing (split-on-unmap is gone since 6.13, commit 33729a5fc0ca)."""
        yield work(LEVEL)
        if self.warn_on(lvl == MAX_LEVELS, "unmap: ran out of page table"):
            return 0
        idx = self.lvl_idx(iova, lvl)
        ptep = table + 8 * idx
        pte = yield (LOAD, ptep)  # READ_ONCE
        yield work(ITEM_EXAMINE)
        if not pte:
            self.warn_on(True, "unmap: hole")
            return 0
        if size == block_size(lvl):
            num = min(pgcount, max_entries(idx))
            return (yield from self.unmap_items(gather, iova, size, num, lvl, ptep))
        if iopte_leaf(pte, lvl):
            self.warn_on(True, "Unmap of a partial large IOPTE is not allowed")
            return 0
        return (
            yield from self.unmap_level(gather, iova, size, pgcount, lvl + 1, iopte_to_paddr(pte))
        )

    def unmap_items(
        self, gather: IotlbGather | None, iova: int, size: int, num: int, lvl: int, ptep: int
    ) -> Gen:
        """The leaf-level loop of __arm_lpae_unmap: stop at the first hole; a table item
        is cleared, its walks invalidated synchronously and its subtree freed at once."""
        yield work(CONTIG_SETUP)
        cause = CAUSE_UNMAP if gather is not None else CAUSE_CLEAR
        batched = self.unmap_batched_sync
        i = 0
        while i < num:
            pte = yield (LOAD, ptep + 8 * i)  # the first item is loaded a second time
            if not pte:
                self.warn_on(True, "unmap: hole")
                break
            is_leaf = iopte_leaf(pte, lvl)
            if not batched or not is_leaf:
                yield from self.clear_pte(ptep + 8 * i, 1, cause)
            if not is_leaf:
                yield from self.flush_walk(iova + i * size, size)
                yield from self.free_pgtable(lvl + 1, iopte_to_paddr(pte))
            elif not batched and gather is not None:
                yield from self.tlb_add_page(gather, iova + i * size, size)
            i += 1
        yield work(ITEM_EXAMINE, i)
        if batched:
            yield from self.clear_pte(ptep, i, cause)  # tables cleared above are cleared again
            if gather is not None:
                for j in range(i):  # every cleared item, tables included
                    yield from self.tlb_add_page(gather, iova + j * size, size)
        return i * size

    def tlb_add_page(self, gather: IotlbGather, iova: int, granule: int) -> Gen:
        """io_pgtable_tlb_add_page -> arm_smmu_tlb_inv_page_nosync (strict: never queued)."""
        yield from iommu_iotlb_gather_add_page(self, gather, iova, granule)

    def iotlb_sync(self, gather: IotlbGather) -> Gen:
        """arm_smmu_iotlb_sync: one leaf invalidation of the gathered range (nothing when
        no page was gathered); ARM never frees tables through the gather."""
        if not gather.pgsize:
            return
        size = gather.end - gather.start + 1
        yield (INVALIDATE_RANGE, self.domain, gather.start, size, True)
        yield (WAIT_INVALIDATION,)

    # -- walks -------------------------------------------------------------------------------
    def lookup(self, iova: int, root: tuple[int, int] | None = None) -> Gen:
        """arm_lpae_iova_to_phys via __arm_lpae_iopte_walk: (0, pa) or (-EINVAL, 0).
        Address bits above ias are masked away by the index arithmetic, not refused."""
        if root is None:
            table = yield (LOAD, self.cfg.data_pa)
            lvl = self.start_level
        else:
            table, top = root
            lvl = MAX_LEVELS - 1 - top
        while lvl < MAX_LEVELS:
            yield work(LEVEL)
            pte = yield (LOAD, table + 8 * self.lvl_idx(iova, lvl))
            yield work(ITEM_EXAMINE)
            if iopte_leaf(pte, lvl):
                return 0, iopte_to_paddr(pte) | (iova & (block_size(lvl) - 1))
            if not iopte_table(pte, lvl):
                return -EINVAL, 0
            table = iopte_to_paddr(pte)
            lvl += 1
        return -EINVAL, 0

    def read_and_clear_dirty(self, iova: int, size: int, no_clear: bool) -> Gen:
        """arm_lpae_read_and_clear_dirty: walk the range, report leaves whose DBM is set
        and AP[2] clear, set AP[2] again unless ``no_clear``. A hole ends it: -EINVAL."""
        if self.warn_on(not size, "dirty: empty range"):
            return -EINVAL, []
        if self.warn_on(bool((iova + size - 1) >> self.ias), "dirty: beyond ias"):
            return -EINVAL, []
        pgd = yield (LOAD, self.cfg.data_pa)
        walk = DirtyWalk(iova, iova + size, no_clear)
        ret = yield from self.iopte_walk(walk, pgd, self.start_level)
        return ret, walk.args.runs

    def iopte_walk(self, walk: DirtyWalk, table: int, lvl: int) -> Gen:
        """__arm_lpae_iopte_walk: visit items from walk.addr to the table's end or walk.end."""
        if self.warn_on(lvl == MAX_LEVELS, "walk: ran out of page table"):
            return -EINVAL
        count = (self.pgd_size // 8) if lvl == self.start_level else PTES_PER_TABLE
        idx = self.lvl_idx(walk.addr, lvl)
        while idx < count and walk.addr < walk.end:
            ret = yield from self.visit(walk, table + 8 * idx, lvl)
            if ret:
                return ret
            idx += 1
        return 0

    def visit(self, walk: DirtyWalk, ptep: int, lvl: int) -> Gen:
        """io_pgtable_visit + visit_dirty; the callback reads the item again itself."""
        yield work(ITEM_EXAMINE)
        pte = yield (LOAD, ptep)  # READ_ONCE in io_pgtable_visit
        size = block_size(lvl)
        cur = yield (LOAD, ptep)  # *ptep in visit_dirty, behind the function pointer
        if iopte_leaf(cur, lvl) and iopte_writeable_dirty(cur):
            walk.args.record(walk.addr, size)  # at walk.addr, which need not be aligned
            if not walk.args.no_clear:
                yield from self.set_writeable_clean(ptep, cur)
        if iopte_leaf(pte, lvl):
            walk.addr += size
            return 0
        if not iopte_table(pte, lvl):
            return -EINVAL
        yield work(LEVEL)
        return (yield from self.iopte_walk(walk, iopte_to_paddr(pte), lvl + 1))

    def set_writeable_clean(self, ptep: int, seen: int) -> Gen:
        """iopte_set_writeable_clean: an atomic set_bit of AP[2] (a cmpxchg loop here)."""
        while True:
            found = yield (CMPXCHG, ptep, seen, seen | PTE_AP_RDONLY)
            if found == seen:
                return
            seen = found


class DirtyWalk:
    """struct io_pgtable_walk_data for visit_dirty: the moving cursor and the bitmap."""

    __slots__ = ("addr", "args", "end")

    def __init__(self, addr: int, end: int, no_clear: bool) -> None:
        self.addr = addr
        self.end = end
        self.args = DirtyArgs(None, no_clear)  # type: ignore[arg-type]  # no gather here
