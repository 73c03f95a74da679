"""AMD IOMMU v1 host page table (AMD IOMMU spec 2.2.3), and its iommufd "mock" variant.

Level numbering follows the core code: level 0 is AMD's mode 1. A table item's
NEXT_LEVEL field holds its own level, which is the mode of the child table; NL=0 is
a single-item leaf, NL=7 a leaf whose size is encoded as a run of ones in the low
OA bits, written into every item of a contiguous block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import features as F
from ..errors import EINVAL
from ..log2 import ffz, set_mod
from ..prot import READ, WRITE
from .base import EMPTY, OA, TABLE, Format

if TYPE_CHECKING:
    from ..common import Common

PR = 1 << 0
D = 1 << 6
NL_SHIFT = 9
NL_MASK = 7 << NL_SHIFT
OA_SHIFT = 12
OA_MASK = ((1 << 52) - 1) & ~((1 << 12) - 1)  # bits 51:12
FC = 1 << 60
IR = 1 << 61
IW = 1 << 62
NL_DEFAULT = 0
NL_SIZE = 7

ENCRYPT_TABLES = F.FMT_START
FORCE_COHERENCE = F.FMT_START + 1


def _field_oa(raw: int) -> int:
    return (raw & OA_MASK) >> OA_SHIFT


def _prep_oa(value: int) -> int:
    return (value << OA_SHIFT) & OA_MASK


class AmdV1(Format):
    name = "amdv1"
    granule_lg2sz = 12
    max_top_level = 5
    max_va_lg2 = 64
    max_oa_lg2 = 52
    top_phys_mask = OA_MASK
    supported = (
        F.bit(F.FULL_VA)
        | F.bit(F.DYNAMIC_TOP)
        | F.bit(F.FLUSH_RANGE)
        | F.bit(F.FLUSH_RANGE_NO_GAPS)
        | F.bit(ENCRYPT_TABLES)
        | F.bit(FORCE_COHERENCE)
    )
    force_enabled = F.bit(F.DYNAMIC_TOP) | F.bit(ENCRYPT_TABLES) | F.bit(FORCE_COHERENCE)
    private_features = {  # noqa: RUF012
        "amdv1_encrypt_tables": ENCRYPT_TABLES,
        "amdv1_force_coherence": FORCE_COHERENCE,
    }
    dirty_bit = D
    dirty_whole_block = True
    possible_sizes_native = True
    kunit_cfgs: tuple[dict[str, Any], ...] = ({"starting_level": 2},)
    kunit_fmt_features = 0

    def _decrypt(self, common: Common, raw: int) -> int:
        return self.sme_clr(common, raw) if common.feature(ENCRYPT_TABLES) else raw

    def num_items_lg2(self, common: Common, level: int) -> int:
        # The top item of a 6-level table covers bits 63:57 only; callers use the
        # range's max_vasz_lg2 for the top instead.
        if common.warn_on(level == 5, "amdv1 num_items_lg2 asked for level 5"):
            return 7
        return 9

    def can_have_leaf(self, level: int) -> bool:
        return level < self.max_top_level

    def possible_sizes(self, common: Common, level: int) -> int:
        if not self.can_have_leaf(level):
            return 0
        isz = self.isz[level]
        high = min(51, isz + self.num_items_lg2(common, level) - 1)
        genmask = ((1 << (high + 1)) - 1) & ~((1 << isz) - 1)
        return genmask & ~(1 << 39)  # 512 GiB pages are disabled by a hardware bug

    def entry_type(self, level: int, raw: int) -> int:
        if not raw & PR:
            return EMPTY
        nl = (raw & NL_MASK) >> NL_SHIFT
        if level == 0 or nl in (NL_DEFAULT, NL_SIZE):
            return OA
        return TABLE

    def table_pa(self, common: Common, raw: int) -> int:
        return _field_oa(self._decrypt(common, raw)) << self.granule_lg2sz

    def entry_oa(self, common: Common, level: int, raw: int) -> int:
        raw = self._decrypt(common, raw)
        oa = _field_oa(raw)
        nl = (raw & NL_MASK) >> NL_SHIFT
        if nl == NL_SIZE:
            oa = set_mod(oa, 0, ffz(oa))
        elif common.warn_on(nl != NL_DEFAULT, "amdv1 leaf with a table NEXT_LEVEL"):
            return 0
        return oa << self.granule_lg2sz

    def entry_num_contig_lg2(self, common: Common, level: int, raw: int) -> int:
        nl = (raw & NL_MASK) >> NL_SHIFT
        if nl == NL_DEFAULT:
            return 0
        common.warn_on(nl != NL_SIZE, "amdv1 contiguous leaf without NL=7")
        # The run of ones starts at NEXT_LEVEL's top bit for level 0, inside the OA
        # field above; its length is the number of contiguous items.
        code = (raw >> (OA_SHIFT - 1 + self.isz[level] - self.granule_lg2sz)) & 0xFFFFFFFF
        return ffz(code)

    def attr_from_entry(self, raw: int) -> int:
        return raw & (FC | IR | IW)

    def table_entry(self, common: Common, level: int, table_pa: int) -> int:
        # IR/IW are ANDed along the walk; permissions are always decided by the leaf.
        entry = PR | (level << NL_SHIFT) | _prep_oa(table_pa >> self.granule_lg2sz) | IR | IW
        if common.feature(ENCRYPT_TABLES):
            entry = self.sme_set(common, entry)
        return entry

    def leaf_entry(self, common: Common, level: int, oa: int, oasz_lg2: int, attrs: int) -> int:
        entry = PR | _prep_oa(oa >> self.granule_lg2sz) | attrs
        if oasz_lg2 != self.isz[level]:
            entry |= (NL_SIZE << NL_SHIFT) | _prep_oa(
                (1 << (oasz_lg2 - self.granule_lg2sz - 1)) - 1
            )
        return entry

    def set_prot(self, common: Common, prot: int) -> tuple[int, int]:
        pte = 0
        if common.feature(FORCE_COHERENCE):
            pte |= FC
        if prot & READ:
            pte |= IR
        if prot & WRITE:
            pte |= IW
        if common.feature(ENCRYPT_TABLES):
            pte = self.sme_set(common, pte)
        return 0, pte

    def fmt_init(self, common: Common, cfg: dict[str, Any]) -> int:
        starting_level = cfg.get("starting_level", 0)
        if starting_level == 0 or starting_level > self.max_top_level:
            return -EINVAL
        max_vasz = self.max_va_lg2
        if not common.feature(F.DYNAMIC_TOP) and starting_level != self.max_top_level:
            max_vasz = self.granule_lg2sz + 9 * (starting_level + 1)
        common.max_vasz_lg2 = min(max_vasz, cfg["hw_max_vasz_lg2"])
        common.max_oasz_lg2 = min(self.max_oa_lg2, cfg["hw_max_oasz_lg2"])
        common.top_level = starting_level
        return 0

    def hw_info(self, common: Common, top_pa: int, top_level: int) -> dict[str, int]:
        common.warn_on(top_pa & ~self.top_phys_mask != 0, "amdv1 root outside the DTE field")
        return {"host_pt_root": top_pa, "mode": top_level + 1}


FORMAT = AmdV1()
