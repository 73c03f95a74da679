"""AMD IOMMU v2 page table: the x86 long-mode format (drivers/iommu/amd/io_pgtable_v2.c, 2024).

The code genpt's ``x86_64`` format replaced (legacy_pt.md section 3). It writes the same
hardware items as genpt ``x86_64`` (the walker decodes both with one decoder) but keeps
its own bit definitions, as the C file does. What sets it apart:

- Every page of a request is a separate walk from the pgd (``v2_alloc_pte`` on map,
  ``fetch_pte`` on unmap): 256 4K pages cost 256 walks.
- No locks and no CPU cache maintenance on the page-table path: the AMD IOMMU snoops.
- Whatever sits in the slot a new leaf goes to is torn down on the spot. A table there
  is freed **at once**, before the IOTLB flush at the end of ``map_pages`` (the race
  genpt's gathered free fixed, legacy_pt.md 3.5 item 1); a leaf there is freed as if it
  were a table (3.5 item 2).
- Unmap never looks at the leaf's present bit, so holes under an existing last-level
  table are zeroed and counted, and it frees no table (tables live until the domain).

Modelling rules. The C code reads ``*pte`` several times with no barrier between the
reads (``if (PRESENT(*pte)) ... cmpxchg64(pte, *pte, 0)``); a compiler merges such plain
reads, so each item read is one LOAD here -- which is also what the counts of
legacy_pt.md section 8 assume. ``pdom->iop.pgd`` is re-read for every page's walk (the
cmpxchg's memory clobber forces it), one LOAD of the domain word. The 2024 flush after a
map that changed something is one page (``amd_iommu_flush_page``) when one page was
mapped and the whole PASID (``amd_iommu_flush_tlb``) otherwise; AMD invalidation
commands always carry the PDE bit, so none is leaf-only. SME encryption is not modelled
(``__sme_set`` is the identity).

Kernel levels here are the C code's: ``level`` counts from the pgd's ``levels - 1``
down to 0 = the 4K items; ``page_size_to_level`` gives the 1-based "end level".
"""

from __future__ import annotations

from ..errors import EINVAL, ENOMEM
from ..iter import Gen
from ..log2 import U64, ffs
from ..prot import READ, WRITE
from ..transactions import (
    ALLOC_TABLE,
    CHANGE_TOP,
    CMPXCHG,
    FREE_TABLE,
    INVALIDATE_ALL,
    INVALIDATE_RANGE,
    LOAD,
    LOCK,
    STORE,
    UNLOCK,
    WAIT_INVALIDATION,
)
from ..work import GATHER, ITEM_EXAMINE, ITEM_WRITE, LEVEL, work
from .driver import Driver, DriverConfig
from .iommu import IotlbGather

# --- the x86 page-table bits (the C file's IOMMU_PAGE_*) ---------------------------------
PAGE_PRESENT = 1 << 0
PAGE_RW = 1 << 1
PAGE_USER = 1 << 2
PAGE_PWT = 1 << 3
PAGE_PCD = 1 << 4
PAGE_ACCESS = 1 << 5
PAGE_DIRTY = 1 << 6
PAGE_PSE = 1 << 7  # a 2M or 1G leaf; at the 4K level this bit would be PAT
PAGE_NX = 1 << 63  # defined, never set
ADDR_MASK = 0x000F_FFFF_FFFF_F000  # PM_ADDR_MASK: bits 51:12

# --- amd_iommu_types.h ---------------------------------------------------------------------
PROT_IR = 0x01  # IOMMU_PROT_IR: the driver's own read permission
PROT_IW = 0x02  # IOMMU_PROT_IW
PROT_MASK = PROT_IR | PROT_IW
SZ_4K = 1 << 12
SZ_2M = 1 << 21
SZ_1G = 1 << 30
PGSIZES_V2 = SZ_4K | SZ_2M | SZ_1G  # AMD_IOMMU_PGSIZES_V2
PTRS_PER_PAGE = 512
DEFAULT_LEVELS = 4  # get_pgtable_level() in 2024: 5-level paging came later


def level_index(level: int, iova: int) -> int:
    """PM_LEVEL_INDEX: the 9 index bits of ``iova`` at ``level`` (higher bits ignored)."""
    return (iova >> (12 + 9 * level)) & 0x1FF


def end_level(pg_size: int) -> int:
    """page_size_to_level: the 1-based level whose item the page is (4K = 1)."""
    if pg_size == SZ_1G:
        return 3
    if pg_size == SZ_2M:
        return 2
    return 1


def alloc_page_size(size: int) -> int:
    """get_alloc_page_size: the caller's page size rounded down to 1G, 2M or 4K."""
    if size >= SZ_1G:
        return SZ_1G
    if size >= SZ_2M:
        return SZ_2M
    return SZ_4K


def table_item(table_pa: int) -> int:
    """set_pgtable_attr: a pointer item. The 2024 code also sets DIRTY on it."""
    return table_pa | PAGE_PRESENT | PAGE_RW | PAGE_USER | PAGE_ACCESS | PAGE_DIRTY


def leaf_item(paddr: int, pg_size: int, prot: int) -> int:
    """set_pte_attr: ACCESS and DIRTY on every leaf (read-only too), RW only with IW."""
    pte = (paddr & ADDR_MASK) | PAGE_PRESENT | PAGE_USER | PAGE_ACCESS | PAGE_DIRTY
    if prot & PROT_IW:
        pte |= PAGE_RW
    if pg_size in (SZ_1G, SZ_2M):
        pte |= PAGE_PSE
    return pte


def present(pte: int) -> bool:
    return bool(pte & PAGE_PRESENT)


def large(pte: int) -> bool:
    """is_large_pte: only the PSE bit, whatever the level."""
    return bool(pte & PAGE_PSE)


class AmdV2(Driver):
    """One protection domain in v2 (guest page table) mode, PASID 0."""

    name = "amd-v2"
    fmt = "x86_64"

    def __init__(self, cfg: DriverConfig) -> None:
        super().__init__(cfg)
        self.levels = self._levels(cfg)
        # v2_alloc_pgtable sets AMD_IOMMU_PGSIZES_V2; a scenario may narrow it (the
        # benchmark's configurations), never widen it.
        bitmap = cfg.pgsize_bitmap
        self.pgsize_bitmap = PGSIZES_V2 if bitmap is None else bitmap & PGSIZES_V2
        self.lock = f"domain{cfg.domain}.lock"  # protection_domain->lock

    @staticmethod
    def _levels(cfg: DriverConfig) -> int:
        """4 levels as in 2024; 5 (amd_iommu_gpt_level on later kernels) when the top
        level 4 or an address width above 48 bits is asked for."""
        if cfg.top_level is not None:
            return cfg.top_level + 1
        if cfg.vasz_lg2 is not None and cfg.vasz_lg2 > 48:
            return 5
        return DEFAULT_LEVELS

    # -- set-up and teardown ----------------------------------------------------------------
    def init(self) -> Gen:
        """v2_alloc_pgtable: one zeroed pgd, kept in the domain word."""
        if self.levels not in (4, 5) or not self.pgsize_bitmap & SZ_4K:
            return -EINVAL
        pgd = yield (ALLOC_TABLE, 12)
        if pgd is None:
            return -ENOMEM
        yield (STORE, self.cfg.data_pa, pgd)
        return 0

    def attach(self) -> Gen:
        """amd_iommu_domain_set_gcr3: PASID 0's GCR3 entry points at the pgd."""
        pgd = yield (LOAD, self.cfg.data_pa)
        yield (CHANGE_TOP, self.domain, pgd, self.levels - 1)

    def free(self) -> Gen:
        """v2_free_pgtable: amd_iommu_domain_update (DTEs rewritten, everything flushed),
        then free_pgtable from the pgd."""
        yield from self.flush_all()
        pgd = yield (LOAD, self.cfg.data_pa)
        yield from self.free_pgtable(pgd, self.levels)

    def free_pgtable(self, table: int, level: int) -> Gen:
        """free_pgtable: every present non-PSE item of ``table`` (a 1-based ``level``)
        points at a child; level-1 children hold only leaves and are freed unread."""
        for item in range(table, table + 8 * PTRS_PER_PAGE, 8):
            pte = yield (LOAD, item)
            if not present(pte) or large(pte):
                continue
            if level > 2:
                yield from self.free_pgtable(pte & ADDR_MASK, level - 1)
            else:
                yield (FREE_TABLE, pte & ADDR_MASK)
        yield work(ITEM_EXAMINE, PTRS_PER_PAGE)
        yield (FREE_TABLE, table)

    # -- walks --------------------------------------------------------------------------------
    def alloc_pte(self, pgd: int, iova: int, pg_size: int, updated: list[bool]) -> Gen:
        """v2_alloc_pte: the slot for a ``pg_size`` leaf, or None when a table page could
        not be allocated. Large leaves above it are cleared, missing tables installed by
        cmpxchg (a loser frees its page), and whatever is in the slot is torn down."""
        level = self.levels - 1
        last = end_level(pg_size)
        pte = pgd + 8 * level_index(level, iova)
        while level >= last:
            value = yield (LOAD, pte)
            yield work(ITEM_EXAMINE)
            if present(value) and large(value):
                yield work(ITEM_WRITE)
                yield (CMPXCHG, pte, value, 0)  # the rest of that large page is gone
                updated[0] = True
                continue
            if not present(value):
                page = yield (ALLOC_TABLE, 12)
                if page is None:
                    return None
                yield work(ITEM_WRITE)
                found = yield (CMPXCHG, pte, value, table_item(page))
                if found != value:
                    yield (FREE_TABLE, page)  # another CPU installed one: use theirs
                elif present(value):
                    updated[0] = True  # never: value was not present
                continue
            yield work(LEVEL)
            level -= 1
            pte = (value & ADDR_MASK) + 8 * level_index(level, iova)
        yield from self.tear_down(pte, pg_size, last, updated)
        return pte

    def tear_down(self, pte: int, pg_size: int, last: int, updated: list[bool]) -> Gen:
        """The end of v2_alloc_pte: a present slot is cleared and, for 2M and 1G, what it
        pointed to is freed now, before any IOTLB flush. The code assumes a table: a
        2M/1G leaf's data page is freed (or, for 1G, scanned) as one."""
        value = yield (LOAD, pte)
        yield work(ITEM_EXAMINE)
        if not present(value):
            return
        updated[0] = True
        yield work(ITEM_WRITE)
        yield (CMPXCHG, pte, value, 0)
        if pg_size == SZ_1G:
            yield from self.free_pgtable(value & ADDR_MASK, last - 1)
        elif pg_size == SZ_2M:
            yield (FREE_TABLE, value & ADDR_MASK)

    def fetch_pte(self, pgd: int, levels: int, iova: int) -> Gen:
        """fetch_pte: (slot, value, page size) of the item translating ``iova``, or None
        when a table on the way is missing. The last item's present bit is not checked:
        a hole under an existing 4K table is returned as a 4K slot."""
        level = levels - 1
        pte = pgd + 8 * level_index(level, iova)
        value = yield (LOAD, pte)
        yield work(ITEM_EXAMINE)
        size = SZ_4K
        while level:
            if not present(value):
                return None
            yield work(LEVEL)
            pte = (value & ADDR_MASK) + 8 * level_index(level - 1, iova)
            value = yield (LOAD, pte)
            yield work(ITEM_EXAMINE)
            if large(value):
                if level == 3:
                    size = SZ_1G
                elif level == 2:
                    size = SZ_2M
                else:
                    return None  # PSE where it cannot be: a wrongly set bit
                break
            level -= 1
        return pte, value, size

    # -- the io_pgtable ops ---------------------------------------------------------------------
    def map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, mapped: list[int]
    ) -> Gen:
        """amd_iommu_map_pages: IOMMU_READ/WRITE become the driver's IR/IW."""
        amd_prot = (PROT_IR if prot & READ else 0) | (PROT_IW if prot & WRITE else 0)
        return (yield from self.v2_map_pages(iova, paddr, pgsize, pgcount, amd_prot, mapped))

    def v2_map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, mapped: list[int]
    ) -> Gen:
        """iommu_v2_map_pages: one walk and one leaf store per page; a walk that cannot
        allocate ends the call with -EINVAL (sic) and what was mapped so far."""
        bad = not pgsize or pgsize & self.pgsize_bitmap != pgsize
        if self.warn_on(bad, "v2 map: page size not in the bitmap") or not pgcount:
            return -EINVAL
        if not prot & PROT_MASK:
            return -EINVAL
        size = pgcount << ffs(pgsize)
        o_iova, done, count, ret = iova, 0, 0, 0
        updated = [False]
        while done < size:
            map_size = alloc_page_size(pgsize)
            pgd = yield (LOAD, self.cfg.data_pa)
            pte = yield from self.alloc_pte(pgd, iova, map_size, updated)
            if pte is None:
                ret = -EINVAL
                break
            yield work(ITEM_WRITE)
            yield (STORE, pte, leaf_item(paddr, map_size, prot))
            count += 1
            iova += map_size
            paddr += map_size
            done += map_size
        if updated[0]:
            if count > 1:
                yield from self.flush_all()  # amd_iommu_flush_tlb(PASID 0)
            else:
                yield from self.flush_range(o_iova, SZ_4K)  # amd_iommu_flush_page
        mapped[0] += done
        return ret

    def unmap_pages(self, iova: int, pgsize: int, pgcount: int, gather: IotlbGather) -> Gen:
        """amd_iommu_unmap_pages: the io-pgtable unmap (no gather), then the range is
        gathered with what it reports."""
        unmapped = yield from self.v2_unmap_pages(iova, pgsize, pgcount)
        if unmapped:
            yield from self.gather_add_page(gather, iova, unmapped)
        return unmapped

    def v2_unmap_pages(self, iova: int, pgsize: int, pgcount: int) -> Gen:
        """iommu_v2_unmap_pages: per page, a walk and a zero store into whatever item
        translates it; a large leaf counts whole, wherever the request starts in it."""
        bad = not pgsize or pgsize & self.pgsize_bitmap != pgsize or not pgcount
        if self.warn_on(bad, "v2 unmap: page size not in the bitmap"):
            return 0
        size = pgcount << ffs(pgsize)
        unmapped = 0
        while unmapped < size:
            pgd = yield (LOAD, self.cfg.data_pa)
            found = yield from self.fetch_pte(pgd, self.levels, iova)
            if found is None:
                return unmapped
            pte, _, unmap_size = found
            yield work(ITEM_WRITE)
            yield (STORE, pte, 0)
            iova = (iova & ~(unmap_size - 1)) + unmap_size
            unmapped += unmap_size
        return unmapped

    def lookup(self, iova: int, root: tuple[int, int] | None = None) -> Gen:
        """iommu_v2_iova_to_phys: fetch_pte, then the present bit and the offset."""
        if root is None:
            pgd = yield (LOAD, self.cfg.data_pa)
            levels = self.levels
        else:
            pgd, levels = root[0], root[1] + 1
        found = yield from self.fetch_pte(pgd, levels, iova)
        if found is None or not present(found[1]):
            return -EINVAL, 0
        _, value, size = found
        return 0, (value & ADDR_MASK & ~(size - 1)) | (iova & (size - 1))

    # -- the AMD driver glue (drivers/iommu/amd/iommu.c) ------------------------------------------
    def gather_add_page(self, gather: IotlbGather, iova: int, size: int) -> Gen:
        """amd_iommu_iotlb_gather_add_page: one flush covering everything is preferred;
        only a vIOMMU caching non-present items (np_cache) syncs a disjoint range first."""
        yield work(GATHER)
        if self.cfg.policy.invalidate_on_map and gather.is_disjoint(iova, size):
            yield from self.iotlb_sync(gather)
            gather.reset()
        gather.add_range(iova, size)

    def iotlb_sync(self, gather: IotlbGather) -> Gen:
        """amd_iommu_iotlb_sync: flush start..end under the domain lock, even for an
        empty gather (its length wraps to 2 at ULONG_MAX, which removes nothing)."""
        yield from self.flush_range(gather.start, (gather.end - gather.start + 1) & U64)
        for pa in gather.freelist:  # v2 never gathers a table; kept for the contract
            yield (FREE_TABLE, pa)
        gather.freelist = []

    def iotlb_sync_map(self, iova: int, size: int) -> Gen:
        """amd_iommu_iotlb_sync_map -> domain_flush_np_cache: only with np_cache."""
        if self.cfg.policy.invalidate_on_map:
            yield from self.flush_range(iova, size)
        return 0

    def flush_range(self, iova: int, size: int) -> Gen:
        """amd_iommu_domain_flush_pages under protection_domain->lock, with its completion
        wait. The PDE bit is always set: walk-cache entries go too."""
        yield (LOCK, self.lock)
        yield (INVALIDATE_RANGE, self.domain, iova, size, False)
        yield (WAIT_INVALIDATION,)
        yield (UNLOCK, self.lock)

    def flush_all(self) -> Gen:
        """A whole-domain (whole-PASID) invalidation and its completion wait."""
        yield (LOCK, self.lock)
        yield (INVALIDATE_ALL, self.domain)
        yield (WAIT_INVALIDATION,)
        yield (UNLOCK, self.lock)
