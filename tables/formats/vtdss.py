"""Intel VT-d second-stage page table.

There is no present bit: software treats any non-zero item as present, while the
hardware treats an item with R=W=0 as not present. SW bit 0 (PTE bit 10) carries
SW_BIT_CACHE_FLUSH_DONE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import features as F
from ..errors import EINVAL, EOPNOTSUPP
from ..prot import READ, WRITE
from .base import EMPTY, OA, TABLE, Format

if TYPE_CHECKING:
    from ..common import Common

R = 1 << 0
W = 1 << 1
PS = 1 << 7
A = 1 << 8
D = 1 << 9
SNP = 1 << 11
OA_MASK = ((1 << 52) - 1) & ~((1 << 12) - 1)  # bits 51:12

FORCE_COHERENCE = F.FMT_START
FORCE_WRITEABLE = F.FMT_START + 1


class VtdSS(Format):
    name = "vtdss"
    granule_lg2sz = 12
    max_top_level = 4
    max_va_lg2 = 57
    max_oa_lg2 = 52
    top_phys_mask = ((1 << 64) - 1) & ~((1 << 12) - 1)  # bits 63:12
    supported = (
        F.bit(F.FLUSH_RANGE)
        | F.bit(FORCE_COHERENCE)
        | F.bit(FORCE_WRITEABLE)
        | F.bit(F.DMA_INCOHERENT)
    )
    private_features = {  # noqa: RUF012
        "vtdss_force_coherence": FORCE_COHERENCE,
        "vtdss_force_writeable": FORCE_WRITEABLE,
    }
    sw_bits: tuple[int, ...] = (1 << 10, *(1 << b for b in range(52, 61)), 1 << 63)
    dirty_bit = D
    kunit_cfgs: tuple[dict[str, Any], ...] = (
        {"hw_max_vasz_lg2": 39, "top_level": 2},
        {"hw_max_vasz_lg2": 48, "top_level": 3},
        {"hw_max_vasz_lg2": 57, "top_level": 4},
    )
    kunit_fmt_features = F.bit(FORCE_WRITEABLE)

    def can_have_leaf(self, level: int) -> bool:
        return level <= 2

    def entry_type(self, level: int, raw: int) -> int:
        if raw == 0:
            return EMPTY
        if level == 0 or (level <= 2 and raw & PS):
            return OA
        return TABLE

    def table_pa(self, common: Common, raw: int) -> int:
        return raw & OA_MASK

    def entry_oa(self, common: Common, level: int, raw: int) -> int:
        return raw & OA_MASK

    def attr_from_entry(self, raw: int) -> int:
        return raw & (R | W | SNP)

    def table_entry(self, common: Common, level: int, table_pa: int) -> int:
        return R | W | (table_pa & OA_MASK)

    def leaf_entry(self, common: Common, level: int, oa: int, oasz_lg2: int, attrs: int) -> int:
        entry = (oa & OA_MASK) | attrs
        if level != 0:
            entry |= PS
        return entry

    def set_prot(self, common: Common, prot: int) -> tuple[int, int]:
        if not prot & (READ | WRITE):
            return -EINVAL, 0  # without R or W the item would read as not present
        pte = 0
        if prot & READ:
            pte |= R
        if prot & WRITE:
            pte |= W
        if common.feature(FORCE_COHERENCE):
            pte |= SNP
        if common.feature(FORCE_WRITEABLE) and not prot & WRITE:
            return -EINVAL, 0  # ERRATA_772415_SPR17: no read-only nesting parents
        return 0, pte

    def fmt_init(self, common: Common, cfg: dict[str, Any]) -> int:
        if common.fixes.vtd_top_level:
            # d856f9d2: the walk depth comes from SAGAW (cfg.top_level), the
            # aperture from MGAW (hw_max_vasz), which may be smaller.
            top_level = cfg.get("top_level")
            if top_level not in (2, 3, 4):
                return -EOPNOTSUPP
        else:
            vasz = cfg["hw_max_vasz_lg2"]
            if vasz > self.max_va_lg2:
                return -EOPNOTSUPP
            if vasz > 48:
                top_level = 4
            elif vasz > 39:
                top_level = 3
            elif vasz > 30:
                top_level = 2
            else:
                return -EOPNOTSUPP
        common.top_level = top_level
        return 0

    def hw_info(self, common: Common, top_pa: int, top_level: int) -> dict[str, int]:
        common.warn_on(top_pa & ~self.top_phys_mask != 0, "vtdss root outside ssptptr")
        return {"ssptptr": top_pa, "aw": top_level - 1}


FORMAT = VtdSS()
