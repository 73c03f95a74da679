"""Arm VMSAv8-64 translation tables with the 4 KiB granule (what io-pgtable-arm built).

Level numbers run opposite to the Arm ARM's: genpt level 0 is Arm level 3 (4 KiB
pages), level 1 is Arm level 2 (2 MiB blocks), level 2 is Arm level 1 (1 GiB blocks),
level 3 is Arm level 0 (tables only). Bit 1 tells a table (set) from a block (clear)
at levels 1-3; at level 0 it marks a page and software does not look at it.

Stage 1 by default; ``armv8_s2`` selects the stage-2 permission and memory-type
encodings. The contiguous hint (bit 52) joins 16 aligned items into one entry (64 KiB,
32 MiB or 16 GiB); unlike the other formats each item of the block holds its own OA.

Sources: genpt ``fmt/armv8.h`` of the jgunthorpe/linux tree (054632d4), and for the
software bits, DMA_INCOHERENT and hw_info the 2026 posting of the same file. Not
modelled: the 16K/64K granules (the table allocator hands out 4 KiB pages), LPA/LPA2
and TTBR1 (the upper VA half needs ``pt_full_va_prefix`` in the range code).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import features as F
from ..errors import EINVAL, EOPNOTSUPP
from ..prot import CACHE, MMIO, NOEXEC, READ, WRITE
from .base import EMPTY, OA, TABLE, Format

if TYPE_CHECKING:
    from ..common import Common

# --- descriptor bits common to both stages ---------------------------------------------
VALID = 1 << 0
PAGE = 1 << 1  # level 0: a page descriptor
TABLE_BIT = 1 << 1  # levels 1-3: a table descriptor (clear: a block)
NS = 1 << 5
SH_SHIFT = 8
SH = 3 << SH_SHIFT
AF = 1 << 10
OA_MASK = ((1 << 48) - 1) & ~((1 << 12) - 1)  # bits 47:12 (the kernel's OA48)
DBM = 1 << 51
CONTIG = 1 << 52
# The kernel calls bit 53 UXN and bit 54 PXN; the Arm ARM names them the other way
# round (53 = PXN, 54 = UXN/XN). set_prot always sets both, so nothing changes.
UXN = 1 << 53
PXN = 1 << 54
NSTABLE = 1 << 63

# --- stage 1 ---------------------------------------------------------------------------
ATTRINDX_SHIFT = 2
ATTRINDX = 7 << ATTRINDX_SHIFT
AP_SHIFT = 6
AP = 3 << AP_SHIFT
NG = 1 << 11
AP_UNPRIV = 1  # AP[1]: EL0 (unprivileged) access allowed
AP_RDONLY = 2  # AP[2]: read-only
MAIR_ATTR_IDX_NC = 0
MAIR_ATTR_IDX_CACHE = 1
MAIR_ATTR_IDX_DEV = 2
SH_IS = 3
SH_OS = 2

# --- stage 2 ---------------------------------------------------------------------------
S2MEMATTR_SHIFT = 2
S2MEMATTR = 0xF << S2MEMATTR_SHIFT  # overlaps NS (bit 5), see attr_from_entry
S2AP_SHIFT = 6
S2AP = 3 << S2AP_SHIFT
S2AP_READ = 1
S2AP_WRITE = 2
MEMATTR_FWB_WB = 6
MEMATTR_OIWB = 0xF
MEMATTR_NC = 5
MEMATTR_DEV = 1

IOMMU_PRIV = 1 << 5  # include/linux/iommu.h; no Prot member (no other format uses it)

CONTIG_COUNT_LG2 = 4  # 16 items per contiguous entry with the 4 KiB granule
LEAF_LEVELS = 2  # 4 KiB pages, 2 MiB and 1 GiB blocks; Arm level 0 has no blocks

# Format-private features, in the kernel's order (TTBR1 and LPA are not modelled, but
# keep their bit numbers so the others line up with the kernel's).
TTBR1 = F.FMT_START
LPA = F.FMT_START + 1
S2 = F.FMT_START + 2
DBM_FEATURE = F.FMT_START + 3
S2FWB = F.FMT_START + 4
NS_FEATURE = F.FMT_START + 5

# Stage-1 software bits of the 2026 format: bits 58:56 then 55. SW bit 0 (bit 56)
# carries SW_BIT_CACHE_FLUSH_DONE. io-pgtable-arm's SW_SYNC is bit 55 (SW bit 3).
SW_BITS = (1 << 56, 1 << 57, 1 << 58, 1 << 55)

# PS / IPS encodings of an output-address size (SMMU STE.S2PS, CD.IPS).
PS_CODES = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}


def _field(value: int, shift: int) -> int:
    return value << shift


class ArmV8(Format):
    name = "armv8"
    granule_lg2sz = 12
    tablemem_lg2sz = 12
    max_top_level = 3
    max_va_lg2 = 48
    max_oa_lg2 = 48
    # TTB needs only 64-byte alignment (a top table smaller than a page is allowed).
    top_phys_mask = ((1 << 52) - 1) & ~((1 << 5) - 1)  # bits 51:5
    supported = (
        F.bit(LPA)
        | F.bit(S2)
        | F.bit(DBM_FEATURE)
        | F.bit(S2FWB)
        | F.bit(NS_FEATURE)
        | F.bit(F.DMA_INCOHERENT)
    )
    private_features = {  # noqa: RUF012 - read-only class data
        "armv8_s2": S2,
        "armv8_dbm": DBM_FEATURE,
        "armv8_s2fwb": S2FWB,
        "armv8_ns": NS_FEATURE,
    }
    sw_bits: tuple[int, ...] = SW_BITS
    dirty_whole_block = True  # is_write_dirty / make_write_clean cover the whole block
    # The kernel's cfgs 0-2 (cfg 3, TTBR1, is not modelled).
    kunit_cfgs: tuple[dict[str, Any], ...] = (
        {"features": F.bit(DBM_FEATURE), "hw_max_oasz_lg2": 48, "hw_max_vasz_lg2": 48},
        {"features": F.bit(NS_FEATURE), "hw_max_oasz_lg2": 48, "hw_max_vasz_lg2": 48},
        {"features": F.bit(S2), "hw_max_oasz_lg2": 48, "hw_max_vasz_lg2": 48},
    )
    kunit_fmt_features = (
        F.bit(TTBR1)
        | F.bit(S2)
        | F.bit(DBM_FEATURE)
        | F.bit(S2FWB)
        | F.bit(NS_FEATURE)
        | F.bit(F.DYNAMIC_TOP)
    )

    # --- geometry -----------------------------------------------------------------------
    def can_have_leaf(self, level: int) -> bool:
        return level <= LEAF_LEVELS

    def contig_count_lg2(self, common: Common, level: int) -> int:
        return CONTIG_COUNT_LG2

    # --- decode -------------------------------------------------------------------------
    def entry_type(self, level: int, raw: int) -> int:
        if not raw & VALID:
            return EMPTY
        if level != 0 and raw & TABLE_BIT:
            return TABLE
        # A block where the granule allows none is reported empty, not as an OA.
        if not self.can_have_leaf(level):
            return EMPTY
        return OA  # level 0 does not check the page bit

    def table_pa(self, common: Common, raw: int) -> int:
        return raw & OA_MASK

    def entry_num_contig_lg2(self, common: Common, level: int, raw: int) -> int:
        return CONTIG_COUNT_LG2 if raw & CONTIG else 0

    def entry_oa(self, common: Common, level: int, raw: int) -> int:
        """Each item holds its own OA; the entry starts at the block-aligned one."""
        size_lg2 = self.isz[level] + self.entry_num_contig_lg2(common, level, raw)
        return raw & OA_MASK & ~((1 << size_lg2) - 1)

    def attr_from_entry(self, raw: int) -> int:
        # NS (bit 5) is not named here but survives: the S2 MemAttr field covers it.
        return raw & (
            SH | AF | DBM | UXN | PXN | ATTRINDX | AP | NG | S2MEMATTR | S2AP
        )

    # --- encode -------------------------------------------------------------------------
    def table_entry(self, common: Common, level: int, table_pa: int) -> int:
        entry = VALID | TABLE_BIT | (table_pa & OA_MASK)
        if common.feature(NS_FEATURE):
            entry |= NSTABLE
        return entry

    def leaf_entry(self, common: Common, level: int, oa: int, oasz_lg2: int, attrs: int) -> int:
        """The first item; ``leaf_item_stride`` gives the OA step of the others."""
        entry = VALID | (oa & OA_MASK) | attrs
        if level == 0:
            entry |= PAGE
        if oasz_lg2 != self.isz[level]:
            entry |= CONTIG
        return entry

    def leaf_item_stride(self, common: Common, level: int) -> int:
        return 1 << self.isz[level]

    def set_prot(self, common: Common, prot: int) -> tuple[int, int]:
        if common.feature(S2):
            pte = self._s2_prot(common, prot)
        else:
            pte = self._s1_prot(prot)
        # DBM writable entries start dirty: the hardware never has to write them.
        if common.feature(DBM_FEATURE) and prot & WRITE:
            pte |= DBM
        pte |= _field(SH_IS if prot & CACHE else SH_OS, SH_SHIFT)
        if prot & NOEXEC:
            pte |= UXN | PXN
        if common.feature(NS_FEATURE):
            pte |= NS
        return 0, pte | AF

    @staticmethod
    def _s1_prot(prot: int) -> int:
        """AP and AttrIndx. Without READ and WRITE nothing makes the entry read-only:
        a prot of 0 (or NOEXEC alone) maps read-write (io-pgtable-arm skipped it)."""
        ap = 0
        if prot & READ and not prot & WRITE:
            ap |= AP_RDONLY
        if not prot & IOMMU_PRIV:
            ap |= AP_UNPRIV
        pte = NG | _field(ap, AP_SHIFT)
        if prot & MMIO:
            pte |= _field(MAIR_ATTR_IDX_DEV, ATTRINDX_SHIFT)
        elif prot & CACHE:
            pte |= _field(MAIR_ATTR_IDX_CACHE, ATTRINDX_SHIFT)
        return pte

    @staticmethod
    def _s2_prot(common: Common, prot: int) -> int:
        s2ap = (S2AP_READ if prot & READ else 0) | (S2AP_WRITE if prot & WRITE else 0)
        if prot & MMIO:
            memattr = MEMATTR_DEV
        elif prot & CACHE:
            memattr = MEMATTR_FWB_WB if common.feature(S2FWB) else MEMATTR_OIWB
        else:
            memattr = MEMATTR_NC
        return _field(s2ap, S2AP_SHIFT) | _field(memattr, S2MEMATTR_SHIFT)

    # --- dirty tracking (DBM): dirty = writable, clean = write-protected ----------------
    def dirty_supported(self, common: Common) -> bool:
        return common.feature(DBM_FEATURE)

    def item_is_dirty(self, common: Common, raw: int) -> bool:
        if common.feature(S2):
            want = DBM | _field(S2AP_WRITE, S2AP_SHIFT)
            return raw & want == want
        return raw & (DBM | _field(AP_RDONLY, AP_SHIFT)) == DBM

    def item_make_clean(self, common: Common, raw: int) -> int:
        if common.feature(S2):
            return raw & ~_field(S2AP_WRITE, S2AP_SHIFT)
        return raw | _field(AP_RDONLY, AP_SHIFT)

    def item_make_dirty(self, common: Common, raw: int) -> int | None:
        """None without DBM. Quirk kept: the whole AP / S2AP field is rewritten, so a
        stage-1 item loses AP[1] (unprivileged access) and a stage-2 item loses read."""
        if not raw & DBM:
            return None
        if common.feature(S2):
            return (raw & ~S2AP) | _field(S2AP_WRITE, S2AP_SHIFT)
        return raw & ~AP

    # --- init ---------------------------------------------------------------------------
    def fmt_init(self, common: Common, cfg: dict[str, Any]) -> int:
        vasz = cfg["hw_max_vasz_lg2"]
        if common.feature(NS_FEATURE) and common.feature(S2):
            return -EOPNOTSUPP  # NS has no meaning at stage 2
        if vasz <= self.granule_lg2sz:
            return -EINVAL
        common.max_oasz_lg2 = min(58, cfg["hw_max_oasz_lg2"])  # init clamps to 48
        per_level = self.tablemem_lg2sz - 3
        levels = -(-(vasz - self.granule_lg2sz) // per_level)
        if levels > self.max_top_level + 1:
            return -EINVAL
        if common.feature(S2) and levels == 1:
            return -EINVAL  # a single-level stage 2 needs FEAT_TTST
        if not common.feature(F.DYNAMIC_TOP) and common.feature(S2) and levels > 1:
            # Fold a top of at most 16 items into up to 16 concatenated tables one
            # level down. Quirk kept: num_items_lg2 knows nothing of concatenation,
            # so init then finds the top table too small (-EOPNOTSUPP).
            top_lg2 = vasz - (self.granule_lg2sz + per_level * (levels - 1))
            if top_lg2 <= 4:
                levels -= 1
        common.top_level = levels - 1
        return 0

    def hw_info(self, common: Common, top_pa: int, top_level: int) -> dict[str, int]:
        """What the SMMU driver writes into the CD (stage 1) or STE (stage 2)."""
        common.warn_on(top_pa & ~self.top_phys_mask != 0, "armv8 root outside TTB")
        incoherent = common.feature(F.DMA_INCOHERENT)
        ps = min(code for size, code in PS_CODES.items() if size >= common.max_oasz_lg2)
        info = {
            "ttb": top_pa,
            "tsz": 64 - common.max_vasz_lg2,
            "tg": 0,  # TG0 = 4 KiB
            "ps": ps,
            # Walks of a non-coherent SMMU are Outer Shareable, Non-cacheable.
            "sh": SH_OS if incoherent else SH_IS,
            "irgn": 0 if incoherent else 1,
            "orgn": 0 if incoherent else 1,
        }
        if common.feature(S2):
            info["sl0"] = top_level - 1  # 4 KiB granule: SL0 counts from Arm level 2
        return info


FORMAT = ArmV8()
