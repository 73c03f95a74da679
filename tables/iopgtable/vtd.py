"""Intel VT-d second-stage page table before the genpt conversion (legacy_pt.md section 4).

Port of drivers/iommu/intel/iommu.c as of mid-2025 (00939beb): ``pfn_to_dma_pte``
allocates missing tables while it walks and installs them with a locked cmpxchg;
``__domain_mapping`` walks once per table page and writes each leaf with a
non-locked cmpxchg (``try_cmpxchg64_local``, a CMPXCHG here), flushing each run once;
``switch_to_super_page`` makes room for superpages with a second walk and frees what
it removes *before* the IOTLB invalidation; unmap does a lookup walk (to widen the
size to a superpage) and a recursive clear walk that gathers whole tables.

Levels are numbered as the C code does, 1 (4 KiB leaves) to ``agaw + 2`` (the pgd).
An item pointer is its physical address, so ``pte + 8`` is ``pte++``. The walker
decodes genpt ``vtdss`` with the same bits, so the constants below must match it
(tests check the encodings), but they are this module's own, as in iommu.h.

What the incoherent walker sees is the reason for every FLUSH (``domain_flush_cache``
is clflush only when ECAP.C / SMPWC is clear). Known hole kept on purpose (4.6 item
1): a CPU that finds a table another CPU just installed, or loses the install
cmpxchg, never flushes that parent item, so its DMA can fault until the installer's
own flush lands.
"""

from __future__ import annotations

import errno

from ..errors import EINVAL, ENOENT, ENOMEM
from ..iter import Gen
from ..memory import PAGE_LG2
from ..prot import READ, WRITE
from ..transactions import (
    ALLOC_TABLE,
    CAUSE_CLEAR,
    CAUSE_INSTALL,
    CAUSE_LEAF,
    CAUSE_TABLE_START,
    CAUSE_UNMAP,
    CHANGE_TOP,
    CMPXCHG,
    FLUSH,
    FLUSH_WRITE_BUFFER,
    FREE_TABLE,
    INVALIDATE_RANGE,
    LOAD,
    LOCK,
    STORE,
    UNLOCK,
    WAIT_INVALIDATION,
)
from ..work import CONTIG_SETUP, ITEM_EXAMINE, ITEM_WRITE, LEVEL, work
from .driver import Driver, DriverConfig
from .iommu import IotlbGather, iommu_iotlb_gather_add_page

# --- iommu.h: second-stage item bits ----------------------------------------------------
DMA_PTE_READ = 1 << 0
DMA_PTE_WRITE = 1 << 1
DMA_PTE_LARGE_PAGE = 1 << 7
DMA_SL_PTE_DIRTY_BIT = 9
DMA_SL_PTE_DIRTY = 1 << DMA_SL_PTE_DIRTY_BIT
DMA_PTE_SNP = 1 << 11
DMA_FL_PTE_XD = 1 << 63
VTD_PAGE_SHIFT = PAGE_LG2
VTD_PAGE_SIZE = 1 << VTD_PAGE_SHIFT
VTD_PAGE_MASK = ((1 << 64) - 1) & ~(VTD_PAGE_SIZE - 1)
DMA_PTE_ADDR_MASK = VTD_PAGE_MASK & ~DMA_FL_PTE_XD  # dma_pte_addr() on 64-bit
VTD_STRIDE_SHIFT = 9
LEVEL_MASK = (1 << VTD_STRIDE_SHIFT) - 1
MAX_AGAW_WIDTH = 64
PTES_PER_PAGE = VTD_PAGE_SIZE // 8
U64 = (1 << 64) - 1

SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30
EFAULT = errno.EFAULT  # intel_iommu_map: beyond the domain's address width

# Features a LegacyTable("vtdss", features=...) understands besides dma_incoherent.
FEATURE_FORCE_SNOOP = "vtdss_force_coherence"  # set_pte_snp: DMA_PTE_SNP on every leaf
FEATURE_NESTED_PARENT = "vtdss_force_writeable"  # nested parent: read-only is refused
FEATURE_SP_OFF = "vtd_sp_off"  # intel_iommu=sp_off: no superpages
FEATURE_NO_1G = "vtd_no_1g"  # CAP.SLLPS without the 1 GiB bit: iommu_superpage = 1


# --- iommu.h / iommu.c geometry helpers (pure arithmetic) ------------------------------
def level_to_offset_bits(level: int) -> int:
    return (level - 1) * VTD_STRIDE_SHIFT


def pfn_level_offset(pfn: int, level: int) -> int:
    return (pfn >> level_to_offset_bits(level)) & LEVEL_MASK


def level_size(level: int) -> int:
    """Pages (pfns) one item at ``level`` covers; also lvl_to_nr_pages."""
    return 1 << level_to_offset_bits(level)


def level_mask(level: int) -> int:
    return (U64 << level_to_offset_bits(level)) & U64


def align_to_level(pfn: int, level: int) -> int:
    return (pfn + level_size(level) - 1) & level_mask(level)


def agaw_to_level(agaw: int) -> int:
    return agaw + 2


def agaw_to_width(agaw: int) -> int:
    return min(30 + agaw * VTD_STRIDE_SHIFT, MAX_AGAW_WIDTH)


def width_to_agaw(width: int) -> int:
    return -(-(width - 30) // VTD_STRIDE_SHIFT)


def first_pte_in_page(pte: int) -> bool:
    return pte % VTD_PAGE_SIZE == 0


def nr_pte_to_next_page(pte: int) -> int:
    if first_pte_in_page(pte):
        return PTES_PER_PAGE
    return (VTD_PAGE_SIZE - pte % VTD_PAGE_SIZE) // 8


def dma_pte_present(val: int) -> bool:
    """No P bit: an item with R or W is present."""
    return val & 3 != 0


def dma_pte_superpage(val: int) -> bool:
    return val & DMA_PTE_LARGE_PAGE != 0


def dma_pte_addr(val: int) -> int:
    return val & DMA_PTE_ADDR_MASK


class Vtd(Driver):
    """One second-stage dmar_domain: its pgd word lives in kernel data at data_pa."""

    name = "vtd"
    fmt = "vtdss"

    def __init__(self, cfg: DriverConfig) -> None:
        super().__init__(cfg)
        # paging_domain_alloc: agaw from the IOMMU (SAGAW), gaw capped by MGAW.
        if cfg.top_level is not None:
            self.agaw = cfg.top_level + 1 - 2
        else:
            self.agaw = width_to_agaw(cfg.vasz_lg2 or 48)
        if not 1 <= self.agaw <= 3:
            raise ValueError(f"vtd: no {self.agaw + 2}-level second-stage table")
        self.levels = agaw_to_level(self.agaw)
        self.gaw = min(agaw_to_width(self.agaw), cfg.vasz_lg2 or MAX_AGAW_WIDTH)
        self.max_addr = (1 << self.gaw) - 1  # __DOMAIN_MAX_ADDR(gaw)
        self.coherent = cfg.coherent_walk  # domain->iommu_coherency
        self.set_pte_snp = FEATURE_FORCE_SNOOP in cfg.features
        self.nested_parent = FEATURE_NESTED_PARENT in cfg.features
        self.iommu_superpage = self.superpage_capability(cfg)
        self.pgsize_bitmap = SZ_4K | (0, SZ_2M, SZ_2M | SZ_1G)[self.iommu_superpage]
        self.cache_lock = f"vtd.cache_lock.{self.domain}"

    @staticmethod
    def superpage_capability(cfg: DriverConfig) -> int:
        """iommu_superpage_capability: fls(CAP.SLLPS), so 1 GiB alone still gives 2M|1G.
        A requested pgsize_bitmap stands for the hardware's SLLPS bits."""
        if FEATURE_SP_OFF in cfg.features:
            return 0
        if cfg.pgsize_bitmap is not None:
            sllps = (cfg.pgsize_bitmap >> 21 & 1) | (cfg.pgsize_bitmap >> 30 & 1) << 1
            return sllps.bit_length()
        return 1 if FEATURE_NO_1G in cfg.features else 2

    # --- small helpers ------------------------------------------------------------------
    def domain_pfn_supported(self, pfn: int) -> bool:
        """The check is against the agaw width, not the (possibly smaller) gaw."""
        width = agaw_to_width(self.agaw) - VTD_PAGE_SHIFT
        return not (width < 64 and pfn >> width)

    def domain_max_pfn(self) -> int:
        return (1 << (self.gaw - VTD_PAGE_SHIFT)) - 1

    def domain_flush_cache(self, pa: int, nbytes: int, cause: str) -> Gen:
        """clflush_cache_range, only when the walker does not snoop."""
        if not self.coherent:
            yield (FLUSH, pa, nbytes, cause)

    def load_pgd(self) -> Gen:
        """Read domain->pgd (a plain field, one LOAD per walk)."""
        pgd = yield (LOAD, self.cfg.data_pa)
        return pgd

    # --- set-up and teardown ----------------------------------------------------------
    def init(self) -> Gen:
        """paging_domain_alloc: the pgd is allocated up front and flushed whole."""
        pgd = yield (ALLOC_TABLE, VTD_PAGE_SHIFT)
        if pgd is None:
            return -ENOMEM
        yield from self.domain_flush_cache(pgd, VTD_PAGE_SIZE, CAUSE_TABLE_START)
        yield (STORE, self.cfg.data_pa, pgd)
        return 0

    def attach(self) -> Gen:
        """Program the context / PASID entry: pgd and its depth (genpt level numbering)."""
        pgd = yield from self.load_pgd()
        yield (CHANGE_TOP, self.domain, pgd, self.levels - 1)

    def free(self) -> Gen:
        """intel_iommu_domain_free: unmap everything (pgd included), free the list."""
        pgd = yield from self.load_pgd()
        if not pgd:
            return
        freelist: list[int] = []
        yield from self.domain_unmap(0, self.domain_max_pfn(), freelist)
        for pa in freelist:
            yield (FREE_TABLE, pa)

    # --- pfn_to_dma_pte ------------------------------------------------------------------
    def install_table(self, pte: int) -> Gen:
        """The allocate-on-walk step: True once a table is there, False on -ENOMEM.

        The winner flushes the new page and then the parent item; the loser frees its
        page and flushes nothing -- the parent may still sit only in the winner's cache.
        """
        page = yield (ALLOC_TABLE, VTD_PAGE_SHIFT)
        if page is None:
            return False
        yield from self.domain_flush_cache(page, VTD_PAGE_SIZE, CAUSE_TABLE_START)
        found = yield (CMPXCHG, pte, 0, page | DMA_PTE_READ | DMA_PTE_WRITE)
        if found != 0:
            yield (FREE_TABLE, page)  # someone else set it; use theirs
        else:
            yield from self.domain_flush_cache(pte, 8, CAUSE_INSTALL)
        return True

    def pfn_to_dma_pte(
        self, pfn: int, target: int, root: tuple[int, int] | None = None
    ) -> Gen:
        """(pte or None, level). ``target`` 0 is the lookup mode: stop at the first leaf
        or hole and report its level; else allocate down to ``target`` and return
        that item without loading it. ``root`` = (pgd, levels) walks another view."""
        if root is None:
            if not self.domain_pfn_supported(pfn):
                return None, target
            parent = yield from self.load_pgd()
            level = self.levels
        else:
            parent, level = root
        examined = 0
        while True:
            yield work(LEVEL)
            pte = parent + 8 * pfn_level_offset(pfn, level)
            if level == target:
                break
            val = yield (LOAD, pte)
            examined += 1
            if not target and (dma_pte_superpage(val) or not dma_pte_present(val)):
                break
            if not dma_pte_present(val):
                if not (yield from self.install_table(pte)):
                    return None, target
                val = yield (LOAD, pte)  # re-read after the cmpxchg
                examined += 1
            if level == 1:
                break
            parent = dma_pte_addr(val)
            level -= 1
        yield work(ITEM_EXAMINE, examined)
        return pte, (target or level)

    def lookup(self, iova: int, root: tuple[int, int] | None = None) -> Gen:
        """intel_iommu_iova_to_phys as (0, pa) or (-ENOENT, 0); ``root`` is the
        hardware's (pgd, genpt top level)."""
        walk_root = None if root is None else (root[0], root[1] + 1)
        pte, level = yield from self.pfn_to_dma_pte(iova >> VTD_PAGE_SHIFT, 0, walk_root)
        if pte is None:
            return -ENOENT, 0
        val = yield (LOAD, pte)  # dma_pte_present() after the call
        if not dma_pte_present(val):
            return -ENOENT, 0
        offset_mask = (1 << (level_to_offset_bits(level) + VTD_PAGE_SHIFT)) - 1
        return 0, dma_pte_addr(val) + (iova & offset_mask)

    # --- map -----------------------------------------------------------------------------
    def map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, mapped: list[int]
    ) -> Gen:
        """intel_iommu_map_pages: the whole pgcount * pgsize as one range; the core's
        page size only has to be one VT-d knows and aligned."""
        if pgsize not in (SZ_4K, SZ_2M, SZ_1G) or (iova | paddr) & (pgsize - 1):
            return -EINVAL
        size = pgcount * pgsize
        ret = yield from self.intel_iommu_map(iova, paddr, size, prot)
        if not ret:
            mapped[0] += size
        return ret

    def intel_iommu_map(self, iova: int, hpa: int, size: int, iommu_prot: int) -> Gen:
        prot = DMA_PTE_READ if iommu_prot & READ else 0
        if iommu_prot & WRITE:
            prot |= DMA_PTE_WRITE
        if self.set_pte_snp:
            prot |= DMA_PTE_SNP
        max_addr = iova + size
        if self.max_addr < max_addr:  # an unlocked read-modify-write of domain->max_addr
            if (1 << self.gaw) < max_addr:
                return -EFAULT
            self.max_addr = max_addr
        nr_pages = ((hpa % VTD_PAGE_SIZE) + size + VTD_PAGE_SIZE - 1) >> VTD_PAGE_SHIFT
        ret = yield from self.domain_mapping(
            iova >> VTD_PAGE_SHIFT, hpa >> VTD_PAGE_SHIFT, nr_pages, prot
        )
        return ret

    def hardware_largepage_caps(self, iov_pfn: int, phys_pfn: int, pages: int) -> int:
        """The largest level both pfns are aligned to, that the hardware has and that
        ``pages`` fills at least once."""
        support, level = self.iommu_superpage, 1
        merge = iov_pfn | phys_pfn
        while support and not merge & LEVEL_MASK:
            pages >>= VTD_STRIDE_SHIFT
            if not pages:
                break
            merge >>= VTD_STRIDE_SHIFT
            level += 1
            support -= 1
        return level

    def domain_mapping(self, iov_pfn: int, phys_pfn: int, nr_pages: int, prot: int) -> Gen:
        """__domain_mapping: one walk per run (table page), a CASL per leaf, one flush
        per run. A leaf slot that is already set is a WARN; the map still returns 0."""
        if not self.domain_pfn_supported(iov_pfn + nr_pages - 1):
            return -EINVAL
        if not prot & (DMA_PTE_READ | DMA_PTE_WRITE):
            return -EINVAL
        if not prot & DMA_PTE_WRITE and self.nested_parent:
            return -EINVAL  # ERRATA_772415_SPR17
        attr = prot & (DMA_PTE_READ | DMA_PTE_WRITE | DMA_PTE_SNP)
        pteval = (phys_pfn << VTD_PAGE_SHIFT) | attr
        pte = first = lvl = lvl_pages = 0
        while nr_pages > 0:
            if not pte:
                lvl = self.hardware_largepage_caps(iov_pfn, phys_pfn, nr_pages)
                pte, lvl = yield from self.pfn_to_dma_pte(iov_pfn, lvl)
                if pte is None:
                    return -ENOMEM
                first, lvl_pages = pte, level_size(lvl)
                run = min(nr_pages // lvl_pages, nr_pte_to_next_page(pte))
                yield work(CONTIG_SETUP)
                yield work(ITEM_WRITE, run)
                if lvl > 1:
                    pteval |= DMA_PTE_LARGE_PAGE
                    remove = min(nr_pages, nr_pte_to_next_page(pte) * lvl_pages)
                    end_pfn = iov_pfn + remove - 1
                    yield from self.switch_to_super_page(iov_pfn, end_pfn, lvl)
                else:
                    pteval &= ~DMA_PTE_LARGE_PAGE
            found = yield (CMPXCHG, pte, 0, pteval)  # try_cmpxchg64_local
            if found != 0:
                self.warn_on(True, f"DMA PTE for vPFN {iov_pfn:#x} already set (to {found:#x})")
            nr_pages -= lvl_pages
            iov_pfn += lvl_pages
            phys_pfn += lvl_pages
            pteval += lvl_pages * VTD_PAGE_SIZE
            pte += 8
            if not nr_pages or first_pte_in_page(pte) or (lvl > 1 and nr_pages < lvl_pages):
                yield from self.domain_flush_cache(first, pte - first, CAUSE_LEAF)
                pte = 0
        return 0

    def switch_to_super_page(self, start_pfn: int, end_pfn: int, level: int) -> Gen:
        """Free whatever sits where superpages go. The tables are freed inside
        dma_pte_free_pagetable, before this function's invalidation (4.6 item 2)."""
        lvl_pages = level_size(level)
        pte = 0
        while start_pfn <= end_pfn:
            if not pte:
                pte, _ = yield from self.pfn_to_dma_pte(start_pfn, level)
                if pte is None:
                    return  # GFP_ATOMIC failed: the C code would dereference NULL
            val = yield (LOAD, pte)
            if dma_pte_present(val):
                last = start_pfn + lvl_pages - 1
                yield from self.dma_pte_free_pagetable(start_pfn, last, level + 1)
                yield from self.cache_tag_flush_range(
                    start_pfn << VTD_PAGE_SHIFT, end_pfn << VTD_PAGE_SHIFT, ih=False
                )
            pte += 8
            start_pfn += lvl_pages
            if first_pte_in_page(pte):
                pte = 0

    # --- clearing and freeing for switch_to_super_page -----------------------------------
    def dma_pfn_level_pte(self, pfn: int, level: int) -> Gen:
        """(pte or None, large_page): the item at ``level``, or the superpage above it,
        or None with the level of the hole."""
        parent = yield from self.load_pgd()
        total = self.levels
        while level <= total:
            yield work(LEVEL)
            pte = parent + 8 * pfn_level_offset(pfn, total)
            if level == total:
                return pte, level
            val = yield (LOAD, pte)
            yield work(ITEM_EXAMINE)
            if not dma_pte_present(val):
                return None, total
            if dma_pte_superpage(val):
                return pte, total
            parent = dma_pte_addr(val)
            total -= 1
        return None, level

    def dma_pte_clear_range(self, start_pfn: int, last_pfn: int) -> Gen:
        """Zero every item from start_pfn on, one table page per walk, without looking
        at what they hold; a hole skips to the next boundary of the level *above* it."""
        if self.warn_on(
            not self.domain_pfn_supported(last_pfn) or start_pfn > last_pfn, "clear_range"
        ):
            return
        while True:
            pte, large_page = yield from self.dma_pfn_level_pte(start_pfn, 1)
            if pte is None:
                start_pfn = align_to_level(start_pfn + 1, large_page + 1)
            else:
                first = pte
                while True:
                    yield (STORE, pte, 0)
                    start_pfn += level_size(large_page)
                    pte += 8
                    if start_pfn > last_pfn or first_pte_in_page(pte):
                        break
                yield work(ITEM_WRITE, (pte - first) // 8)
                yield from self.domain_flush_cache(first, pte - first, CAUSE_CLEAR)
            if not (start_pfn and start_pfn <= last_pfn):
                return

    def dma_pte_free_level(
        self, level: int, retain: int, table: int, pfn: int, start_pfn: int, last_pfn: int
    ) -> Gen:
        """Free the tables below ``retain`` that the range covers whole: clear the item,
        flush it, free the page at once."""
        pfn = max(start_pfn, pfn)
        pte = table + 8 * pfn_level_offset(pfn, level)
        examined = 0
        while True:
            val = yield (LOAD, pte)
            examined += 1
            if dma_pte_present(val) and not dma_pte_superpage(val):
                level_pfn = pfn & level_mask(level)
                child = dma_pte_addr(val)
                if level > 2:
                    yield work(LEVEL)
                    yield from self.dma_pte_free_level(
                        level - 1, retain, child, level_pfn, start_pfn, last_pfn
                    )
                covered = start_pfn <= level_pfn and last_pfn >= level_pfn + level_size(level) - 1
                if level < retain and covered:
                    yield (STORE, pte, 0)
                    yield from self.domain_flush_cache(pte, 8, CAUSE_CLEAR)
                    yield (FREE_TABLE, child)
            pfn += level_size(level)
            pte += 8
            if first_pte_in_page(pte) or pfn > last_pfn:
                break
        yield work(ITEM_EXAMINE, examined)

    def dma_pte_free_pagetable(self, start_pfn: int, last_pfn: int, retain: int) -> Gen:
        yield from self.dma_pte_clear_range(start_pfn, last_pfn)
        pgd = yield from self.load_pgd()
        yield from self.dma_pte_free_level(self.levels, retain, pgd, 0, start_pfn, last_pfn)
        if start_pfn == 0 and last_pfn == self.domain_max_pfn():
            yield (FREE_TABLE, pgd)
            yield (STORE, self.cfg.data_pa, 0)

    # --- unmap ---------------------------------------------------------------------------
    def unmap_pages(self, iova: int, pgsize: int, pgcount: int, gather: IotlbGather) -> Gen:
        """intel_iommu_unmap: a lookup walk first; a request smaller than what maps
        (or what is missing) at ``iova`` is widened to it, and that size returned."""
        size = pgcount * pgsize
        pte, level = yield from self.pfn_to_dma_pte(iova >> VTD_PAGE_SHIFT, 0)
        if pte is None:
            return 0
        size = max(size, VTD_PAGE_SIZE << level_to_offset_bits(level))
        start_pfn = iova >> VTD_PAGE_SHIFT
        last_pfn = (iova + size - 1) >> VTD_PAGE_SHIFT
        yield from self.domain_unmap(start_pfn, last_pfn, gather.freelist)
        if self.max_addr == iova + size:
            self.max_addr = iova
        yield from iommu_iotlb_gather_add_page(self, gather, iova, size)
        return size

    def domain_unmap(self, start_pfn: int, last_pfn: int, freelist: list[int]) -> Gen:
        if self.warn_on(
            not self.domain_pfn_supported(last_pfn) or start_pfn > last_pfn, "domain_unmap"
        ):
            return
        pgd = yield from self.load_pgd()
        yield from self.dma_pte_clear_level(self.levels, pgd, 0, start_pfn, last_pfn, freelist)
        if start_pfn == 0 and last_pfn == self.domain_max_pfn():
            freelist.append(pgd)
            yield (STORE, self.cfg.data_pa, 0)

    def dma_pte_clear_level(
        self, level: int, table: int, pfn: int, start_pfn: int, last_pfn: int,
        freelist: list[int],
    ) -> Gen:
        """Clear what the range covers whole (listing tables under it), recurse into
        what it covers in part -- without checking that it is a table -- and flush the
        cleared items of this table once."""
        first = last = 0
        pfn = max(start_pfn, pfn)
        pte = table + 8 * pfn_level_offset(pfn, level)
        examined = 0
        while True:
            level_pfn = pfn & level_mask(level)
            val = yield (LOAD, pte)
            examined += 1
            if dma_pte_present(val):
                if start_pfn <= level_pfn and last_pfn >= level_pfn + level_size(level) - 1:
                    if level > 1 and not dma_pte_superpage(val):
                        yield from self.dma_pte_list_pagetables(level - 1, val, freelist)
                    yield (STORE, pte, 0)
                    first = first or pte
                    last = pte
                elif level > 1:
                    yield work(LEVEL)
                    yield from self.dma_pte_clear_level(
                        level - 1, dma_pte_addr(val), level_pfn, start_pfn, last_pfn, freelist
                    )
            pfn = level_pfn + level_size(level)
            pte += 8
            if first_pte_in_page(pte) or pfn > last_pfn:
                break
        yield work(ITEM_EXAMINE, examined)
        if first:
            yield work(ITEM_WRITE, (last + 8 - first) // 8)
            yield from self.domain_flush_cache(first, last + 8 - first, CAUSE_UNMAP)

    def dma_pte_list_pagetables(self, level: int, parent_val: int, freelist: list[int]) -> Gen:
        """Put a table and every table under it on the freelist (512 loads a level)."""
        table = dma_pte_addr(parent_val)
        freelist.append(table)
        if level == 1:
            return
        yield work(LEVEL)
        for pte in range(table, table + VTD_PAGE_SIZE, 8):
            val = yield (LOAD, pte)
            if dma_pte_present(val) and not dma_pte_superpage(val):
                yield from self.dma_pte_list_pagetables(level - 1, val, freelist)
        yield work(ITEM_EXAMINE, PTES_PER_PAGE)

    # --- driver glue -----------------------------------------------------------------------
    def cache_tag_flush_range(self, start: int, end: int, ih: bool) -> Gen:
        """PSI of [start, end] (inclusive) with its completion wait, under cache_lock."""
        yield (LOCK, self.cache_lock)
        yield (INVALIDATE_RANGE, self.domain, start, (end - start + 1) & U64, ih)
        yield (WAIT_INVALIDATION,)
        yield (UNLOCK, self.cache_lock)

    def iotlb_sync(self, gather: IotlbGather) -> Gen:
        """intel_iommu_tlb_sync: ih (leaf only) iff nothing was freed, then the frees."""
        if not gather.empty:
            yield from self.cache_tag_flush_range(gather.start, gather.end, not gather.freelist)
        for pa in gather.freelist:
            yield (FREE_TABLE, pa)
        gather.freelist = []

    def iotlb_sync_map(self, iova: int, size: int) -> Gen:
        """intel_iommu_iotlb_sync_map: only when attach found caching mode (PSI) or
        RWBF (write-buffer flush); caching mode takes the PSI branch, not the WBF."""
        policy = self.cfg.policy
        if not (policy.invalidate_on_map or policy.flush_write_buffer_on_map):
            return 0
        yield (LOCK, self.cache_lock)
        if policy.invalidate_on_map:
            yield (INVALIDATE_RANGE, self.domain, iova, size, False)
            yield (WAIT_INVALIDATION,)
        else:
            yield (FLUSH_WRITE_BUFFER,)
        yield (UNLOCK, self.cache_lock)
        return 0

    # --- dirty tracking -------------------------------------------------------------------
    def read_and_clear_dirty(self, iova: int, size: int, no_clear: bool) -> Gen:
        """intel_iommu_read_and_clear_dirty: one lookup walk per page found (holes are
        skipped by their level's size, from the unaligned iova), a locked
        test_and_clear_bit per present item; then what iommufd does: sync the
        recorded range unless NO_CLEAR."""
        gather = IotlbGather()
        runs: list[tuple[int, int]] = []
        end = iova + size - 1
        while True:
            pte, lvl = yield from self.pfn_to_dma_pte(iova >> VTD_PAGE_SHIFT, 0)
            if pte is None:
                return -EINVAL, runs  # beyond the width: level_size(0) is undefined in C
            pgsize = level_size(lvl) << VTD_PAGE_SHIFT
            val = yield (LOAD, pte)
            if dma_pte_present(val):
                dirty = yield from self.test_and_clear_dirty(pte, val, no_clear)
                if dirty:
                    record_run(runs, iova, pgsize)
                    gather.add_range(iova, pgsize)
            iova += pgsize
            if iova >= end:
                break
        if not no_clear and self.fixes.dirty_clear_flush:
            yield from self.iotlb_sync(gather)
        return 0, runs

    def test_and_clear_dirty(self, pte: int, val: int, no_clear: bool) -> Gen:
        """dma_sl_pte_test_and_clear_dirty: a plain test, or a locked bit clear (always
        a write, even when the bit is already clear)."""
        if no_clear:
            return val & DMA_SL_PTE_DIRTY != 0
        while True:
            found = yield (CMPXCHG, pte, val, val & ~DMA_SL_PTE_DIRTY)
            if found == val:
                return val & DMA_SL_PTE_DIRTY != 0
            val = found


def record_run(runs: list[tuple[int, int]], iova: int, length: int) -> None:
    """iommu_dirty_bitmap_record into runs: adjacent ranges merge."""
    if runs and sum(runs[-1]) == iova:
        runs[-1] = (runs[-1][0], runs[-1][1] + length)
    else:
        runs.append((iova, length))
