"""AMD IOMMU v1 host page table before the genpt conversion (legacy_pt.md section 2).

Port of drivers/iommu/amd/io_pgtable.c as of mid-2025 (025d1371) with its wrapper in
drivers/iommu/amd/iommu.c (amd_iommu_map_pages / unmap_pages, the gather and flush
glue). What it does differently from genpt, and why it costs more:

- every page (or replicated group) is found by a fresh walk from the root:
  ``alloc_pte`` on map, ``fetch_pte`` on unmap;
- every leaf item is first cleared with a locked cmpxchg (``free_clear_pte``) and
  then written with a plain store; a page of 2**n x the level size (n <= 8) is 2**n
  identical items with NEXT_LEVEL = 7 and the size encoded in the address field;
- the domain keeps ``root`` and ``mode`` in two separate words (``data_pa`` and
  ``data_pa + 8``); ``increase_address_space`` rewrites both under the domain lock,
  and readers load them with two LOADs and no lock. With the ``amdv1_seqcount`` fix
  off (the code before CVE-2025-39961) a reader can pair the new root with the old
  mode; with it on, a seqcount at ``data_pa + 16`` makes the reader retry.

Levels are numbered as the C code does: a table of mode ``m`` holds items of level
``m - 1``; a table item's NEXT_LEVEL field holds its own level (the child's mode).
An item pointer is its physical address, so ``pte + 8`` is ``pte++``. The hardware
decodes genpt ``amdv1`` with the same bits (the kernel says the two are identical),
but the constants below are this module's own, as in amd_iommu_types.h. The IOMMU
walk is coherent on AMD, so the driver never flushes a CPU cache line.

Compiler folding (documented where it matters for counts): repeated reads of one PTE
with no store in between are one LOAD; each source-level read of a domain word is
one LOAD, except the two reads of ``mode`` in one ``while`` condition (legacy_pt.md
8.5: mode x2 + root per walk, +2 seqcount loads with the fix).
"""

from __future__ import annotations

from ..dirty import DirtyArgs
from ..errors import EINVAL, ENOMEM
from ..gather import Gather
from ..iter import Gen
from ..log2 import U64, ffs, ffz, fls
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
from ..work import CONTIG_SETUP, GATHER, ITEM_EXAMINE, ITEM_WRITE, LEVEL, work
from .driver import Driver, DriverConfig
from .iommu import IotlbGather

# --- amd_iommu_types.h: item bits ---------------------------------------------------------
IOMMU_PTE_PR = 1 << 0
IOMMU_PTE_HD_BIT = 6
IOMMU_PTE_HD = 1 << IOMMU_PTE_HD_BIT
IOMMU_PTE_U = 1 << 59
IOMMU_PTE_FC = 1 << 60
IOMMU_PTE_IR = 1 << 61
IOMMU_PTE_IW = 1 << 62
PM_ADDR_MASK = 0x000F_FFFF_FFFF_F000

PAGE_MODE_NONE = 0
PAGE_MODE_1_LEVEL = 1
PAGE_MODE_2_LEVEL = 2
PAGE_MODE_3_LEVEL = 3
PAGE_MODE_4_LEVEL = 4
PAGE_MODE_6_LEVEL = 6
PAGE_MODE_7_LEVEL = 7  # NEXT_LEVEL of a replicated ("page size") leaf

# The prot bits map_pages is called with (IOMMU_PROT_*, not IOMMU_READ/WRITE).
IOMMU_PROT_IR = 0x01
IOMMU_PROT_IW = 0x02
IOMMU_PROT_MASK = 0x03

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = U64 & ~(PAGE_SIZE - 1)
SZ_4K, SZ_2M, SZ_1G, SZ_512G = 1 << 12, 1 << 21, 1 << 30, 1 << 39
# Every power of two from 4 KiB to 2**51 but 512 GiB (a hardware erratum): config B.
AMD_IOMMU_PGSIZES = ((1 << 52) - 1) & ~(SZ_4K - 1) ^ SZ_512G
AMD_IOMMU_PGSIZES_4K = PAGE_SIZE  # amd_iommu=pgsize_4k
CONFIG_A_PGSIZES = SZ_4K | SZ_2M | SZ_1G  # legacy_pt.md 0.2: like-for-like with the others
ITEMS_PER_TABLE = 512


# --- amd_iommu_types.h: geometry macros -------------------------------------------------------
def pm_level_shift(level: int) -> int:
    return PAGE_SHIFT + 9 * level


def pm_level_size(mode: int) -> int:
    """The last IOVA a table of this mode translates."""
    return (1 << pm_level_shift(mode)) - 1 if mode < 6 else U64


def pm_level_index(level: int, address: int) -> int:
    return (address >> pm_level_shift(level)) & 0x1FF


def pm_level_enc(level: int) -> int:
    return (level << 9) & 0xE00


def pm_level_pde(level: int, table_pa: int) -> int:
    """A table item at ``level``: its NEXT_LEVEL is the child's mode."""
    return table_pa | pm_level_enc(level) | IOMMU_PTE_PR | IOMMU_PTE_IR | IOMMU_PTE_IW


def pm_pte_level(pte: int) -> int:
    return (pte >> 9) & 7


def iommu_pte_present(pte: int) -> bool:
    return bool(pte & IOMMU_PTE_PR)


def iommu_pte_page(pte: int) -> int:
    return pte & PM_ADDR_MASK


def page_size_level(pgsize: int) -> int:
    """The level whose items a page of this size is written into."""
    return (ffs(pgsize) - PAGE_SHIFT) // 9


def page_size_pte_count(pgsize: int) -> int:
    """How many identical items make one page of this size (1 ... 256)."""
    return 1 << ((ffs(pgsize) - PAGE_SHIFT) % 9)


def page_size_pte(address: int, pgsize: int) -> int:
    """The address field of a replicated leaf: ones below the size bit, which is zero."""
    return (address | (pgsize - 1)) & ~(pgsize >> 1) & PM_ADDR_MASK


def pte_page_size(pte: int) -> int:
    """The page size a NEXT_LEVEL = 7 item encodes."""
    return 1 << (1 + ffz(pte | 0xFFF))


def pte_level_page_size(level: int) -> int:
    return 1 << pm_level_shift(level)


def first_pte_l7(pte: int, value: int) -> tuple[int, int, int]:
    """(first item, page size, count) of the replicated group ``pte`` belongs to."""
    pgsize = pte_page_size(value)
    count = page_size_pte_count(pgsize)
    return pte & ~(count * 8 - 1), pgsize, count


def build_inv_address(address: int, size: int) -> tuple[int, int] | None:
    """The range one INVALIDATE_IOMMU_PAGES command covers: (start, size), or None
    for every page of the domain. More than one page becomes the naturally aligned
    power of two holding the whole range (iommu.c build_inv_address)."""
    address &= U64
    pages = ((address & (PAGE_SIZE - 1)) + size + PAGE_SIZE - 1) >> PAGE_SHIFT
    if pages == 1:
        return address & PAGE_MASK, PAGE_SIZE
    end = (address + size - 1) & U64
    msb_diff = fls(end ^ address) - 1
    if msb_diff > 51:
        return None
    span = 2 << msb_diff
    return address & ~(span - 1), span


class AmdV1(Driver):
    """One protection domain using the v1 host page table."""

    name = "amd-v1"
    fmt = "amdv1"

    def __init__(self, cfg: DriverConfig) -> None:
        super().__init__(cfg)
        bitmap = cfg.pgsize_bitmap
        self.pgsize_bitmap = AMD_IOMMU_PGSIZES if bitmap is None else bitmap
        # amd_iommu_hpt_level: EFR.HATS + 4, 6 on current parts; a smaller address
        # width stands for hardware that translates fewer levels.
        self.hpt_level = PAGE_MODE_6_LEVEL
        if cfg.vasz_lg2 is not None:
            self.hpt_level = min(PAGE_MODE_6_LEVEL, -(-(cfg.vasz_lg2 - PAGE_SHIFT) // 9))
        # The kernel always starts at mode 3; top_level lets a test start elsewhere.
        top = cfg.top_level
        self.start_mode = PAGE_MODE_3_LEVEL if top is None else top + 1
        self.np_cache = cfg.policy.invalidate_on_map  # amd_iommu_np_cache (a vIOMMU)
        self.root_word = cfg.data_pa  # pgtable->root
        self.mode_word = cfg.data_pa + 8  # pgtable->mode
        self.seq_word = cfg.data_pa + 16  # pgtable->seqcount (the 2025 fix)
        self.lock = f"domain{cfg.domain}.lock"  # protection_domain->lock
        self.warned_top = False

    # -- set-up and teardown ------------------------------------------------------------
    def init(self) -> Gen:
        """v1_alloc_pgtable: a zeroed root, mode 3."""
        root = yield (ALLOC_TABLE, PAGE_SHIFT)
        if root is None:
            return -ENOMEM
        yield (STORE, self.root_word, root)
        yield (STORE, self.mode_word, self.start_mode)
        return 0

    def attach(self) -> Gen:
        """The DTE gets the root pointer and the mode."""
        root = yield (LOAD, self.root_word)
        mode = yield (LOAD, self.mode_word)
        yield (CHANGE_TOP, self.domain, root, mode - 1)

    def free(self) -> Gen:
        """v1_free_pgtable: collect the whole tree on a list, then free the list."""
        mode = yield (LOAD, self.mode_word)
        if mode == PAGE_MODE_NONE:
            return
        root = yield (LOAD, self.root_word)
        freelist: list[int] = []
        yield from self.free_sub_pt(root, mode, freelist)
        for pa in freelist:
            yield (FREE_TABLE, pa)

    def free_sub_pt(self, table: int, mode: int, freelist: list[int]) -> Gen:
        """Put a subtree on ``freelist``; ``mode`` 0 (a default leaf) and 7 (a
        replicated leaf) hold no table."""
        if mode == PAGE_MODE_1_LEVEL:
            freelist.append(table)
        elif PAGE_MODE_2_LEVEL <= mode <= PAGE_MODE_6_LEVEL:
            yield from self.free_pt_lvl(table, freelist, mode)

    def free_pt_lvl(self, table: int, freelist: list[int], lvl: int) -> Gen:
        """Read all 512 items of a table of mode >= 2 and collect its child tables;
        mode-1 children hold only leaves and are listed without being read. The
        child's mode is taken from ``lvl``, not from the item's NEXT_LEVEL."""
        yield work(ITEM_EXAMINE, ITEMS_PER_TABLE)
        for i in range(ITEMS_PER_TABLE):
            value = yield (LOAD, table + 8 * i)
            if not iommu_pte_present(value):
                continue
            if pm_pte_level(value) in (PAGE_MODE_NONE, PAGE_MODE_7_LEVEL):
                continue
            if lvl > 2:
                yield from self.free_pt_lvl(iommu_pte_page(value), freelist, lvl - 1)
            else:
                freelist.append(iommu_pte_page(value))
        freelist.append(table)

    # -- the domain words -----------------------------------------------------------------
    def read_top(self, address: int) -> Gen:
        """(level, first item) from the root and mode words. Fix off: two plain
        LOADs, mode first, so a concurrent increase_address_space can be seen half
        done (new root, old mode). Fix on: inside a seqcount read section."""
        if not self.fixes.amdv1_seqcount:
            mode = yield (LOAD, self.mode_word)
            root = yield (LOAD, self.root_word)
        else:
            while True:
                seq = yield (LOAD, self.seq_word)
                while seq & 1:  # read_seqcount_begin spins while a writer is inside
                    seq = yield (LOAD, self.seq_word)
                mode = yield (LOAD, self.mode_word)
                root = yield (LOAD, self.root_word)
                again = yield (LOAD, self.seq_word)  # read_seqcount_retry
                if again == seq:
                    break
        level = mode - 1
        return level, root + 8 * pm_level_index(level, address)

    def increase_address_space(self, address: int, page_size_level_: int) -> Gen:
        """Add one level on top: True if the table now covers ``address`` at that
        level (someone else's growth counts), False without memory or at the
        hardware's maximum."""
        new_root = yield (ALLOC_TABLE, PAGE_SHIFT)
        if new_root is None:
            return False
        yield (LOCK, self.lock)
        mode = yield (LOAD, self.mode_word)
        ok = False
        if address <= pm_level_size(mode) and mode - 1 >= page_size_level_:
            ok = True
        elif mode == self.hpt_level:
            if not self.warned_top:  # WARN_ON_ONCE
                self.warned_top = True
                self.warn_on(True, "increase_address_space: already at amd_iommu_hpt_level")
        else:
            old_root = yield (LOAD, self.root_word)
            yield (STORE, new_root, pm_level_pde(mode, old_root))
            yield from self.publish_top(new_root, mode + 1)
            new_root, ok = None, True
        yield (UNLOCK, self.lock)
        if new_root is not None:
            yield (FREE_TABLE, new_root)
        return ok

    def publish_top(self, root: int, mode: int) -> Gen:
        """Root then mode, two plain stores (in a seqcount write section with the fix);
        then amd_iommu_update_and_flush_device_table: every DTE gets the new root,
        is flushed, and the driver waits -- all after the software words changed."""
        fixed = self.fixes.amdv1_seqcount
        if fixed:
            seq = yield (LOAD, self.seq_word)
            yield (STORE, self.seq_word, seq + 1)
        yield (STORE, self.root_word, root)
        yield (STORE, self.mode_word, mode)
        if fixed:
            seq = yield (LOAD, self.seq_word)
            yield (STORE, self.seq_word, seq + 1)
        yield (CHANGE_TOP, self.domain, root, mode - 1)
        yield (WAIT_INVALIDATION,)

    # -- walks ---------------------------------------------------------------------------------
    def alloc_pte(self, address: int, pgsize: int, updated: list[bool]) -> Gen:
        """The item a page of ``pgsize`` at ``address`` goes into, walking from the
        root and installing missing tables; None without memory, at the hardware's
        maximum depth, or where a table item names an unexpected level."""
        last = address + pgsize - 1
        end_lvl = page_size_level(pgsize)
        while True:
            mode = yield (LOAD, self.mode_word)  # both reads of the condition
            if last <= pm_level_size(mode) and mode - 1 >= end_lvl:
                break
            ok = yield from self.increase_address_space(last, end_lvl)
            if not ok:
                return None
        level, pte = yield from self.read_top(address)
        address &= ~(pgsize - 1)
        while level > end_lvl:
            yield work(ITEM_EXAMINE)
            value = yield (LOAD, pte)
            pte_level = pm_pte_level(value)
            if iommu_pte_present(value) and pte_level == PAGE_MODE_7_LEVEL:
                yield from self.tear_down_group(pte, value)
                updated[0] = True
                continue
            if not iommu_pte_present(value) or pte_level == PAGE_MODE_NONE:
                if not (yield from self.install_table(pte, value, level, updated)):
                    return None
                continue
            if pte_level != level:  # no level skipping
                return None
            level -= 1
            yield work(LEVEL)
            pte = iommu_pte_page(value) + 8 * pm_level_index(level, address)
        return pte

    def tear_down_group(self, pte: int, value: int) -> Gen:
        """A replicated leaf is in the way: zero the items of its group that still
        hold it. The rest of that large mapping is gone without a word."""
        first, _, count = first_pte_l7(pte, value)
        yield work(CONTIG_SETUP)
        for i in range(count):
            yield (CMPXCHG, first + 8 * i, value, 0)

    def install_table(self, pte: int, value: int, level: int, updated: list[bool]) -> Gen:
        """Replace an empty item or a default-size leaf by a new table; a lost
        cmpxchg frees the page at once. False without memory."""
        page = yield (ALLOC_TABLE, PAGE_SHIFT)
        if page is None:
            return False
        found = yield (CMPXCHG, pte, value, pm_level_pde(level, page))
        if found != value:
            yield (FREE_TABLE, page)
        elif iommu_pte_present(value):
            updated[0] = True  # a leaf became a table
        return True

    def fetch_pte(self, address: int, root: tuple[int, int] | None = None) -> Gen:
        """(item or None, page size): the leaf (the first of a replicated group) for
        ``address``. Level 0 is never checked for presence: a hole there is a valid
        answer. The page size is set before each check, so a miss reports the size
        of the level it stopped at (0 beyond the table)."""
        if root is None:
            mode = yield (LOAD, self.mode_word)
            if address > pm_level_size(mode):
                return None, 0
            level, pte = yield from self.read_top(address)
        else:
            table, level = root
            if address > pm_level_size(level + 1):
                return None, 0
            pte = table + 8 * pm_level_index(level, address)
        pgsize = pte_level_page_size(level)
        value = None
        while level > 0:
            yield work(ITEM_EXAMINE)
            value = yield (LOAD, pte)
            if not iommu_pte_present(value):
                return None, pgsize
            if pm_pte_level(value) in (PAGE_MODE_7_LEVEL, PAGE_MODE_NONE):
                break
            if pm_pte_level(value) != level:
                return None, pgsize
            level -= 1
            yield work(LEVEL)
            pte = iommu_pte_page(value) + 8 * pm_level_index(level, address)
            pgsize = pte_level_page_size(level)
            value = None
        if value is None:  # a new item, not yet read
            value = yield (LOAD, pte)
        if pm_pte_level(value) == PAGE_MODE_7_LEVEL:
            pte, pgsize, _ = first_pte_l7(pte, value)
        return pte, pgsize

    def lookup(self, iova: int, root: tuple[int, int] | None = None) -> Gen:
        """iommu_v1_iova_to_phys as (0, pa) or (-EINVAL, 0)."""
        pte, pgsize = yield from self.fetch_pte(iova, root)
        if pte is None:
            return -EINVAL, 0
        value = yield (LOAD, pte)
        if not iommu_pte_present(value):
            return -EINVAL, 0
        offset_mask = pgsize - 1
        return 0, (value & PM_ADDR_MASK & ~offset_mask) | (iova & offset_mask)

    # -- map ---------------------------------------------------------------------------------------
    def map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, mapped: list[int]
    ) -> Gen:
        """amd_iommu_map_pages: refuse a domain without a table, translate the prot."""
        mode = yield (LOAD, self.mode_word)
        if mode == PAGE_MODE_NONE:
            return -EINVAL
        amd_prot = (IOMMU_PROT_IR if prot & READ else 0) | (IOMMU_PROT_IW if prot & WRITE else 0)
        return (yield from self.v1_map_pages(iova, paddr, pgsize, pgcount, amd_prot, mapped))

    def v1_map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, mapped: list[int]
    ) -> Gen:
        """iommu_v1_map_pages: 0 or -errno. Tables replaced on the way are freed only
        after the domain flush, which happens only if something was replaced."""
        if iova % pgsize or paddr % pgsize:
            raise RuntimeError(f"BUG: map of {iova:#x}->{paddr:#x} not aligned to {pgsize:#x}")
        updated = [False]
        freelist: list[int] = []
        size = pgcount * pgsize
        ret = -EINVAL
        if prot & IOMMU_PROT_MASK:
            ret = yield from self.map_each_page(
                iova, paddr, pgsize, pgcount, prot, updated, freelist, mapped
            )
        if updated[0]:
            yield (LOCK, self.lock)
            yield from self.domain_flush_pages(iova, size)
            yield (UNLOCK, self.lock)
        for pa in freelist:
            yield (FREE_TABLE, pa)
        return ret

    def map_each_page(
        self,
        iova: int,
        paddr: int,
        pgsize: int,
        pgcount: int,
        prot: int,
        updated: list[bool],
        freelist: list[int],
        mapped: list[int],
    ) -> Gen:
        """The per-page loop: a walk from the root, the locked clear, the fill."""
        count = page_size_pte_count(pgsize)
        while pgcount > 0:
            pte = yield from self.alloc_pte(iova, pgsize, updated)
            if pte is None:
                return -ENOMEM
            if count > 1:
                yield work(CONTIG_SETUP)
            for i in range(count):
                yield from self.free_clear_pte(pte + 8 * i, freelist)
            if freelist:
                updated[0] = True
            value = self.leaf_value(paddr, pgsize, count, prot)
            yield work(ITEM_WRITE, count)
            for i in range(count):
                yield (STORE, pte + 8 * i, value)
            iova += pgsize
            paddr += pgsize
            pgcount -= 1
            mapped[0] += pgsize
        return 0

    @staticmethod
    def leaf_value(paddr: int, pgsize: int, count: int, prot: int) -> int:
        """A default-size leaf (NEXT_LEVEL 0) or one item of a replicated group."""
        if count > 1:
            value = page_size_pte(paddr, pgsize) | pm_level_enc(PAGE_MODE_7_LEVEL)
        else:
            value = paddr
        value |= IOMMU_PTE_PR | IOMMU_PTE_FC
        if prot & IOMMU_PROT_IR:
            value |= IOMMU_PTE_IR
        if prot & IOMMU_PROT_IW:
            value |= IOMMU_PTE_IW
        return value

    def free_clear_pte(self, pte: int, freelist: list[int]) -> Gen:
        """Clear one item with a locked cmpxchg (retried, with a warning, if it
        changed since it was read) and list the tables it pointed to."""
        yield work(ITEM_EXAMINE)
        value = yield (LOAD, pte)
        while True:
            found = yield (CMPXCHG, pte, value, 0)
            if found == value:
                break
            self.warnings.append("AMD-Vi: IOMMU pte changed since we read it")
            value = found
        if iommu_pte_present(value):
            yield from self.free_sub_pt(iommu_pte_page(value), pm_pte_level(value), freelist)

    # -- unmap ------------------------------------------------------------------------------------
    def unmap_pages(self, iova: int, pgsize: int, pgcount: int, gather: IotlbGather) -> Gen:
        """amd_iommu_unmap_pages: the table op without a gather, then the driver's own
        gather_add_page with what it returned."""
        mode = yield (LOAD, self.mode_word)
        if mode == PAGE_MODE_NONE:
            return 0
        unmapped = yield from self.v1_unmap_pages(iova, pgsize, pgcount)
        if unmapped:
            yield from self.gather_add_page(gather, iova, unmapped)
        return unmapped

    def v1_unmap_pages(self, iova: int, pgsize: int, pgcount: int) -> Gen:
        """iommu_v1_unmap_pages: bytes unmapped. Each page is a walk from the root and
        plain stores; a leaf larger than asked goes whole and counts whole; a miss
        above level 0 ends the call; no table is ever freed here."""
        if pgsize & (pgsize - 1):
            raise RuntimeError(f"BUG: unmap page size {pgsize:#x} is not a power of two")
        size = pgcount * pgsize
        unmapped = 0
        while unmapped < size:
            pte, unmap_size = yield from self.fetch_pte(iova)
            if pte is None:
                return unmapped
            count = page_size_pte_count(unmap_size)
            yield work(ITEM_WRITE, count)
            for i in range(count):
                yield (STORE, pte + 8 * i, 0)
            iova = (iova & ~(unmap_size - 1)) + unmap_size
            unmapped += unmap_size
        return unmapped

    # -- driver glue ----------------------------------------------------------------------------
    def gather_add_page(self, gather: IotlbGather, iova: int, size: int) -> Gen:
        """amd_iommu_iotlb_gather_add_page: one big range (no page-size check); only
        under a vIOMMU (NpCache) is a disjoint range synced first."""
        yield work(GATHER)
        if self.np_cache and gather.is_disjoint(iova, size):
            yield from self.iotlb_sync(gather)
        gather.add_range(iova, size)

    def iotlb_sync(self, gather: IotlbGather) -> Gen:
        """amd_iommu_iotlb_sync + the core's re-init: flush [start, end] under the
        domain lock, even for an empty gather -- whose (ULONG_MAX, 2) becomes a flush
        of the whole domain."""
        size = (gather.end - gather.start + 1) & U64
        yield (LOCK, self.lock)
        yield from self.domain_flush_pages(gather.start, size)
        yield (UNLOCK, self.lock)
        gather.reset()

    def iotlb_sync_map(self, iova: int, size: int) -> Gen:
        """domain_flush_np_cache: only a vIOMMU may cache non-present items."""
        if self.np_cache:
            yield (LOCK, self.lock)
            yield from self.domain_flush_pages(iova, size)
            yield (UNLOCK, self.lock)
        return 0

    def domain_flush_pages(self, address: int, size: int) -> Gen:
        """amd_iommu_domain_flush_pages (caller holds the lock): one command, or under
        NpCache one per naturally aligned piece; then the completion wait."""
        if not self.np_cache:
            yield self.inv_pages(address, size)
        else:
            while size:
                lg2 = fls(size) - 1
                if address:
                    lg2 = min(lg2, ffs(address))
                yield self.inv_pages(address, 1 << lg2)
                address = (address + (1 << lg2)) & U64
                size -= 1 << lg2
        yield (WAIT_INVALIDATION,)

    def inv_pages(self, address: int, size: int) -> tuple:
        """INVALIDATE_IOMMU_PAGES with PDE set (table items are flushed too)."""
        span = build_inv_address(address, size)
        if span is None:
            return (INVALIDATE_ALL, self.domain)
        return (INVALIDATE_RANGE, self.domain, span[0], span[1], False)

    # -- dirty tracking ----------------------------------------------------------------------------
    def read_and_clear_dirty(self, iova: int, size: int, no_clear: bool) -> Gen:
        """amd_iommu_read_and_clear_dirty (dirty tracking is taken as enabled: the
        lock is the cost of its check) + iommu_v1_read_and_clear_dirty, then the
        caller's IOTLB sync of what was cleaned (the ``dirty_clear_flush`` switch)."""
        yield (LOCK, self.lock)
        yield (UNLOCK, self.lock)
        dirty = DirtyArgs(Gather(), no_clear)
        gather = IotlbGather()
        end = iova + size - 1
        while True:
            ptep, pgsize = yield from self.fetch_pte(iova)
            value = 0 if ptep is None else (yield (LOAD, ptep))
            if iommu_pte_present(value):
                if (yield from self.test_and_clear_dirty(ptep, value, pgsize, no_clear)):
                    dirty.record(iova, pgsize)
                    gather.add_range(iova, pgsize)
            else:
                pgsize = pgsize or pte_level_page_size(0)
            iova += pgsize  # not aligned down: a quirk the tests name
            if iova >= end:
                break
        if not no_clear and self.fixes.dirty_clear_flush:
            yield from self.iotlb_sync(gather)
        return 0, dirty.runs

    def test_and_clear_dirty(self, ptep: int, value: int, pgsize: int, no_clear: bool) -> Gen:
        """pte_test_and_clear_dirty: OR of HD over the group. NO_CLEAR reads items up
        to the first dirty one; otherwise every item gets a locked test-and-clear
        (``lock btr``), modelled as a CMPXCHG expecting the group's READ_ONCE word:
        an item that differs from it (its HD set) costs one retry."""
        count = page_size_pte_count(pgsize)
        yield work(ITEM_EXAMINE, count)
        dirty = False
        for i in range(count):
            pa = ptep + 8 * i
            if no_clear:
                if (yield (LOAD, pa)) & IOMMU_PTE_HD:
                    return True
                continue
            guess = value
            while True:  # lock btr: one atomic read-modify-write
                found = yield (CMPXCHG, pa, guess, guess & ~IOMMU_PTE_HD)
                if found == guess:
                    break
                guess = found
            dirty |= bool(found & IOMMU_PTE_HD)
        return dirty
