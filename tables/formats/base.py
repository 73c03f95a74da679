"""What a page-table format provides: geometry, bit layout, encode and decode.

A format is a short bit-layout module, as in the kernel's ``fmt/*.h``: it never
touches memory. The algorithms in ``tables`` are written once against this class
and read and write table items through transactions.

Methods receive ``common`` (the table instance, see ``tables.common.Common``) where
the kernel's format code looks at features or records a debug warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import features as F
from ..log2 import ffs

if TYPE_CHECKING:
    from ..common import Common

# enum pt_entry_type
EMPTY = 0
TABLE = 1
OA = 2
ENTRY_TYPE_NAMES = ("empty", "table", "oa")

ITEM_WORD_SIZE = 8
ITEM_WORD_LG2 = 3


class Format:
    """Defaults of pt_fmt_defaults.h; each format overrides what it defines itself."""

    name: str = ""
    granule_lg2sz: int = 12
    tablemem_lg2sz: int = 12
    max_top_level: int = 4
    max_va_lg2: int = 57
    max_oa_lg2: int = 52
    top_phys_mask: int = 0
    # PT_SUPPORTED_FEATURES / PT_FORCE_ENABLED_FEATURES of the production build.
    supported: int = 0
    force_enabled: int = 0
    private_features: dict[str, int] = {}  # noqa: RUF012 - read-only class data
    # SW bit number -> PTE mask; empty when the format has no software bits.
    sw_bits: tuple[int, ...] = ()
    dirty_bit: int = 0  # the D bit; 0 when the format has no dirty tracking
    dirty_whole_block: bool = False  # dirty state is the OR over a contiguous block
    possible_sizes_native: bool = False  # the format defines pt_possible_sizes
    has_hw_info: bool = True
    # (cfg, ...) the kunit suites run with, and the features those cfgs control.
    kunit_cfgs: tuple[dict[str, Any], ...] = ({},)
    kunit_fmt_features: int = 0

    def __init__(self) -> None:
        items_lg2 = self.tablemem_lg2sz - ITEM_WORD_LG2
        self.isz: tuple[int, ...] = tuple(
            self.granule_lg2sz + items_lg2 * level for level in range(self.max_top_level + 1)
        )

    # --- features ---------------------------------------------------------------------
    def supported_features(self, debug: bool) -> int:
        """PT_SUPPORTED_FEATURES; a debug build compiles in (almost) every feature."""
        if not debug:
            return self.supported
        mask = F.ALL_BITS
        if not self.supported & F.bit(F.DMA_INCOHERENT):
            mask &= ~F.bit(F.DMA_INCOHERENT)
        if self.supported & F.bit(F.SIGN_EXTEND):
            mask &= ~(F.bit(F.DYNAMIC_TOP) | F.bit(F.FULL_VA))
        else:
            mask &= ~F.bit(F.SIGN_EXTEND)
        return mask

    # --- geometry ---------------------------------------------------------------------
    def item_lg2sz(self, level: int) -> int:
        return self.isz[level]

    def num_items_lg2(self, common: Common, level: int) -> int:
        return self.tablemem_lg2sz - ITEM_WORD_LG2

    def can_have_leaf(self, level: int) -> bool:
        raise NotImplementedError

    def contig_count_lg2(self, common: Common, level: int) -> int:
        return 0

    def possible_sizes(self, common: Common, level: int) -> int:
        if not self.can_have_leaf(level):
            return 0
        isz = self.isz[level]
        return (1 << isz) | (1 << (self.contig_count_lg2(common, level) + isz))

    def pgsz_lg2_to_level(self, pgsize_lg2: int) -> int:
        return (pgsize_lg2 - self.granule_lg2sz) // (self.tablemem_lg2sz - ITEM_WORD_LG2)

    def has_system_page_size(self) -> bool:
        return self.granule_lg2sz == 12

    def top_min_lg2(self) -> int:
        """ffs(PT_TOP_PHYS_MASK): the smallest allocation for a top table."""
        return ffs(self.top_phys_mask)

    # --- decode -----------------------------------------------------------------------
    def entry_type(self, level: int, raw: int) -> int:
        raise NotImplementedError

    def table_pa(self, common: Common, raw: int) -> int:
        raise NotImplementedError

    def entry_oa(self, common: Common, level: int, raw: int) -> int:
        """OA of the start of the (contiguous) entry."""
        raise NotImplementedError

    def entry_num_contig_lg2(self, common: Common, level: int, raw: int) -> int:
        return 0

    def attr_from_entry(self, raw: int) -> int:
        raise NotImplementedError

    # --- encode -----------------------------------------------------------------------
    def table_entry(self, common: Common, level: int, table_pa: int) -> int:
        """The item that points the slot at ``level`` to a table of ``level - 1``."""
        raise NotImplementedError

    def leaf_entry(self, common: Common, level: int, oa: int, oasz_lg2: int, attrs: int) -> int:
        """The value written into every item of a leaf of 2**oasz_lg2 bytes."""
        raise NotImplementedError

    def set_prot(self, common: Common, prot: int) -> tuple[int, int]:
        """IOMMU prot bits -> (0 or -errno, descriptor bits)."""
        raise NotImplementedError

    def leaf_item_stride(self, common: Common, level: int) -> int:
        """What each further item of a contiguous leaf adds to the first one: 0 (every
        item repeats the entry) except in ARMv8, where each item holds its own OA."""
        return 0

    # --- dirty tracking (the D bit by default; ARMv8 DBM overrides) ------------------
    def dirty_supported(self, common: Common) -> bool:
        """pt_dirty_supported."""
        return bool(self.dirty_bit)

    def item_is_dirty(self, common: Common, raw: int) -> bool:
        return bool(raw & self.dirty_bit)

    def item_make_clean(self, common: Common, raw: int) -> int:
        return raw & ~self.dirty_bit

    def item_make_dirty(self, common: Common, raw: int) -> int | None:
        """The dirty value of ``raw``, or None when the item cannot be made dirty."""
        return raw | self.dirty_bit

    def sw_bit(self, bitnr: int) -> int:
        return self.sw_bits[bitnr]

    @property
    def max_sw_bit(self) -> int:
        return len(self.sw_bits) - 1

    # --- init -------------------------------------------------------------------------
    def fmt_init(self, common: Common, cfg: dict[str, Any]) -> int:
        """Choose the top level and narrow vasz/oasz; 0 or -errno."""
        raise NotImplementedError

    def hw_info(self, common: Common, top_pa: int, top_level: int) -> dict[str, int]:
        raise NotImplementedError

    def sme_set(self, common: Common, value: int) -> int:
        return value | common.sme_mask

    def sme_clr(self, common: Common, value: int) -> int:
        return value & ~common.sme_mask
