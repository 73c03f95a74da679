"""x86 4/5-level paging as used by AMD IOMMU v2 and the VT-d first stage.

Level names: PTE = 0, PDE = 1, PDPTE = 2, PML4E = 3, PML5E = 4. Leaves exist at
levels 0-2 (PS marks a large leaf at 1 and 2). SW bit 0 (PTE bit 9) carries
SW_BIT_CACHE_FLUSH_DONE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import features as F
from ..errors import EINVAL, EOPNOTSUPP
from ..prot import MMIO, WRITE
from .base import EMPTY, OA, TABLE, Format

if TYPE_CHECKING:
    from ..common import Common

P = 1 << 0
RW = 1 << 1
U = 1 << 2
A = 1 << 5
D = 1 << 6
PS = 1 << 7
OA_MASK = ((1 << 52) - 1) & ~((1 << 12) - 1)  # bits 51:12
XD = 1 << 63

AMD_ENCRYPT_TABLES = F.FMT_START


class X86_64(Format):
    name = "x86_64"
    granule_lg2sz = 12
    max_top_level = 4
    max_va_lg2 = 57
    max_oa_lg2 = 52
    top_phys_mask = OA_MASK
    supported = (
        F.bit(F.SIGN_EXTEND)
        | F.bit(F.FLUSH_RANGE)
        | F.bit(F.FLUSH_RANGE_NO_GAPS)
        | F.bit(AMD_ENCRYPT_TABLES)
        | F.bit(F.DMA_INCOHERENT)
    )
    private_features = {"x86_64_amd_encrypt_tables": AMD_ENCRYPT_TABLES}  # noqa: RUF012
    sw_bits: tuple[int, ...] = (1 << 9, 1 << 11, *(1 << b for b in range(52, 63)))
    kunit_cfgs: tuple[dict[str, Any], ...] = (
        {"features": F.bit(F.SIGN_EXTEND), "hw_max_vasz_lg2": 48, "top_level": 3},
        {"features": F.bit(F.SIGN_EXTEND), "hw_max_vasz_lg2": 57, "top_level": 4},
        {"hw_max_vasz_lg2": 47, "top_level": 3},  # AMD PASID 0: no sign extension
        {"hw_max_vasz_lg2": 56, "top_level": 4},
    )
    kunit_fmt_features = F.bit(F.SIGN_EXTEND)

    def _decrypt(self, common: Common, raw: int) -> int:
        return self.sme_clr(common, raw) if common.feature(AMD_ENCRYPT_TABLES) else raw

    def can_have_leaf(self, level: int) -> bool:
        return level <= 2

    def entry_type(self, level: int, raw: int) -> int:
        if not raw & P:
            return EMPTY
        if level == 0 or (level <= 2 and raw & PS):
            return OA
        return TABLE

    def table_pa(self, common: Common, raw: int) -> int:
        return self._decrypt(common, raw) & OA_MASK

    def entry_oa(self, common: Common, level: int, raw: int) -> int:
        return self._decrypt(common, raw) & OA_MASK

    def attr_from_entry(self, raw: int) -> int:
        return raw & (RW | U | A | D | XD)

    def table_entry(self, common: Common, level: int, table_pa: int) -> int:
        entry = P | RW | U | A | (table_pa & OA_MASK)
        if common.feature(AMD_ENCRYPT_TABLES):
            entry = self.sme_set(common, entry)
        return entry

    def leaf_entry(self, common: Common, level: int, oa: int, oasz_lg2: int, attrs: int) -> int:
        entry = P | (oa & OA_MASK) | attrs
        if level != 0:
            entry |= PS
        return entry

    def set_prot(self, common: Common, prot: int) -> tuple[int, int]:
        pte = U | A
        if prot & WRITE:
            pte |= RW | D  # D only for writable PTEs (1978fac2)
        if common.feature(AMD_ENCRYPT_TABLES) and not prot & MMIO:
            pte = self.sme_set(common, pte)
        return 0, pte

    def fmt_init(self, common: Common, cfg: dict[str, Any]) -> int:
        if common.fixes.vtd_top_level:
            # 1eb0ae6f: the VT-d first stage walks 4 or 5 levels only, whatever the
            # IOVA width; the table may be larger than vasz needs.
            top_level = cfg.get("top_level")
            if top_level not in (3, 4):
                return -EOPNOTSUPP
        else:
            vasz = cfg["hw_max_vasz_lg2"]
            if vasz < 31 or vasz > 57:
                return -EINVAL
            top_level = (vasz - 31) // 9 + 2
        common.top_level = top_level
        common.max_oasz_lg2 = min(self.max_oa_lg2, cfg["hw_max_oasz_lg2"])
        return 0

    def hw_info(self, common: Common, top_pa: int, top_level: int) -> dict[str, int]:
        common.warn_on(top_pa & ~self.top_phys_mask != 0, "x86_64 root outside gcr3")
        return {"gcr3_pt": top_pa, "levels": top_level + 1}


FORMAT = X86_64()
