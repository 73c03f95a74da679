"""RISC-V Sv39/Sv48/Sv57 page table (64-bit), with the Svnapot 64 KiB extension.

Every level may hold a leaf: a valid item with any of R/W/X set is a leaf, one with
R=W=X=0 points to the next table. A 64 KiB NAPOT leaf sets N and PPN bit 3 and is
written into 16 consecutive level-0 items.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import features as F
from ..errors import EINVAL, EOPNOTSUPP
from ..prot import NOEXEC, READ, WRITE
from .base import EMPTY, OA, TABLE, Format

if TYPE_CHECKING:
    from ..common import Common

V = 1 << 0
R = 1 << 1
W = 1 << 2
X = 1 << 3
U = 1 << 4
G = 1 << 5
A = 1 << 6
D = 1 << 7
PPN_SHIFT = 10
PPN_MASK = ((1 << 54) - 1) & ~((1 << 10) - 1)  # bits 53:10
PPN_64K_MASK = ((1 << 54) - 1) & ~((1 << 14) - 1)  # bits 53:14
N = 1 << 63
NAPOT_64K_SZ = 1 << 13  # ppn[3:0] = 0b1000

SVNAPOT_64K = F.FMT_START
NAPOT_CONTIG_LG2 = 4


class RiscV64(Format):
    name = "riscv64"
    granule_lg2sz = 12
    max_top_level = 4
    max_va_lg2 = 57
    max_oa_lg2 = 56
    top_phys_mask = ((1 << 56) - 1) & ~((1 << 12) - 1)  # bits 55:12
    supported = F.bit(F.SIGN_EXTEND) | F.bit(F.FLUSH_RANGE) | F.bit(SVNAPOT_64K)
    private_features = {"riscv_svnapot_64k": SVNAPOT_64K}  # noqa: RUF012
    kunit_cfgs: tuple[dict[str, Any], ...] = (
        {"features": F.bit(SVNAPOT_64K), "hw_max_oasz_lg2": 56, "hw_max_vasz_lg2": 39},
        {"features": 0, "hw_max_oasz_lg2": 56, "hw_max_vasz_lg2": 48},
        {"features": F.bit(SVNAPOT_64K), "hw_max_oasz_lg2": 56, "hw_max_vasz_lg2": 57},
    )
    kunit_fmt_features = F.bit(SVNAPOT_64K)

    def can_have_leaf(self, level: int) -> bool:
        return True

    def contig_count_lg2(self, common: Common, level: int) -> int:
        return NAPOT_CONTIG_LG2 if level == 0 and common.feature(SVNAPOT_64K) else 0

    def entry_type(self, level: int, raw: int) -> int:
        if not raw & V:
            return EMPTY
        if level == 0 or raw & (X | W | R):
            return OA
        return TABLE

    def table_pa(self, common: Common, raw: int) -> int:
        return ((raw & PPN_MASK) >> PPN_SHIFT) << self.granule_lg2sz

    def entry_oa(self, common: Common, level: int, raw: int) -> int:
        if common.feature(SVNAPOT_64K) and raw & N:
            common.warn_on(level != 0, "riscv NAPOT leaf above level 0")
            return ((raw & PPN_64K_MASK) >> 14) << 16
        return ((raw & PPN_MASK) >> PPN_SHIFT) << self.granule_lg2sz

    def entry_num_contig_lg2(self, common: Common, level: int, raw: int) -> int:
        if common.supported & F.bit(SVNAPOT_64K) and raw & N:
            common.warn_on(not common.feature(SVNAPOT_64K), "riscv NAPOT without Svnapot")
            common.warn_on(level != 0, "riscv NAPOT leaf above level 0")
            return NAPOT_CONTIG_LG2
        return 0

    def attr_from_entry(self, raw: int) -> int:
        return raw & (R | W | X | U | G | A | D)

    def table_entry(self, common: Common, level: int, table_pa: int) -> int:
        return V | (((table_pa >> self.granule_lg2sz) << PPN_SHIFT) & PPN_MASK)

    def leaf_entry(self, common: Common, level: int, oa: int, oasz_lg2: int, attrs: int) -> int:
        entry = V | (((oa >> self.granule_lg2sz) << PPN_SHIFT) & PPN_MASK) | attrs
        if common.feature(SVNAPOT_64K) and level == 0 and oasz_lg2 != self.granule_lg2sz:
            entry |= N | NAPOT_64K_SZ
        return entry

    def set_prot(self, common: Common, prot: int) -> tuple[int, int]:
        pte = A | U
        if prot & WRITE:
            pte |= W | R | D
        if prot & READ:
            pte |= R
        if not prot & NOEXEC:
            pte |= X
        if not pte & (X | W | R):
            return -EOPNOTSUPP, 0
        return 0, pte

    def fmt_init(self, common: Common, cfg: dict[str, Any]) -> int:
        top = {39: 2, 48: 3, 57: 4}.get(cfg["hw_max_vasz_lg2"])
        if top is None:
            return -EINVAL
        common.top_level = top
        common.max_oasz_lg2 = min(self.max_oa_lg2, cfg["hw_max_oasz_lg2"])
        return 0

    def hw_info(self, common: Common, top_pa: int, top_level: int) -> dict[str, int]:
        common.warn_on(top_pa & ~self.top_phys_mask != 0, "riscv root outside iosatp.PPN")
        # iosatp.MODE: 8 = Sv39, 9 = Sv48, 10 = Sv57
        return {"ppn": top_pa >> self.granule_lg2sz, "fsc_iosatp_mode": top_level + 6}


FORMAT = RiscV64()
