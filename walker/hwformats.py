"""How the IOMMU hardware reads each format's table items.

These decoders follow the hardware specifications, not the kernel's software view,
and differ from it where the hardware does:

- AMDv1: NEXT_LEVEL names the level of the next table, which may skip levels (the
  skipped VA bits must be zero); NL=7 encodes the page size in the low OA bits;
  NL above the current level is an error. IR/IW are ANDed along the walk.
- VT-d second stage: an item with R=W=0 is not present whatever its other bits (the
  software bits, such as FLUSH_DONE in bit 10, are ignored); PS is reserved above
  level 2; R/W are ANDed along the walk.
- x86-64: P=0 is not present; PS marks a leaf at levels 1-2 and is reserved above
  (in such a leaf bit 12 is PAT, not an address bit); RW is ANDed along the walk;
  the VA must be canonical.
- RISC-V: V=0 is not present; W without R is reserved; a leaf may sit at any level
  but must be aligned to its size; N (Svnapot) is valid only as a 64 KiB level-0 leaf.

A decoder returns a ``HwItem``; the walker does the rest (index, permissions, A/D).
"""

from __future__ import annotations

from typing import NamedTuple

from ..tables.formats import amdv1, riscv64, vtdss, x86_64
from ..tables.log2 import ffz

NOT_PRESENT = 0
TABLE = 1
LEAF = 2
RESERVED = 3


class HwItem(NamedTuple):
    kind: int
    addr: int = 0  # TABLE: next table's address; LEAF: the page's base address
    next_level: int = 0  # TABLE: the level of the next table
    size_lg2: int = 0  # LEAF: page size
    readable: bool = True
    writable: bool = True


_RESERVED = HwItem(RESERVED)
_NOT_PRESENT = HwItem(NOT_PRESENT)


class HwFormat:
    """The walk geometry and item decoding of one format's hardware."""

    name = ""
    granule_lg2 = 12
    accessed_bit = 0
    dirty_bit = 0
    sign_extended = False  # the VA must be canonical (x86-64, RISC-V)

    def item_lg2(self, level: int) -> int:
        return self.granule_lg2 + 9 * level

    def index(self, level: int, iova: int) -> int:
        return (iova >> self.item_lg2(level)) & 511

    def va_ok(self, top_level: int, iova: int) -> bool:
        """Whether the IOVA lies in what a table with this top translates."""
        span = self.item_lg2(top_level) + 9
        if span >= 64:
            return True
        if self.sign_extended:
            upper = iova >> (span - 1)
            return upper in (0, (1 << (65 - span)) - 1)
        return iova >> span == 0

    def decode(self, level: int, raw: int) -> HwItem:
        raise NotImplementedError


class AmdV1Hw(HwFormat):
    name = "amdv1"
    accessed_bit = 1 << 5
    dirty_bit = amdv1.D
    OA_SHIFT = 12

    def decode(self, level: int, raw: int) -> HwItem:
        if not raw & amdv1.PR:
            return _NOT_PRESENT
        r = bool(raw & amdv1.IR)
        w = bool(raw & amdv1.IW)
        nl = (raw & amdv1.NL_MASK) >> amdv1.NL_SHIFT
        field = (raw & amdv1.OA_MASK) >> self.OA_SHIFT
        if nl == amdv1.NL_DEFAULT:
            return HwItem(LEAF, field << self.granule_lg2, 0, self.item_lg2(level), r, w)
        if nl == amdv1.NL_SIZE:
            # The page size is 2**(granule + 1 + number of ones in the low OA bits).
            ones = ffz(field)
            size_lg2 = self.granule_lg2 + ones + 1
            if size_lg2 < self.item_lg2(level):
                return _RESERVED
            base = (field & ~((1 << ones) - 1)) << self.granule_lg2
            return HwItem(LEAF, base & ~((1 << size_lg2) - 1), 0, size_lg2, r, w)
        if level == 0 or nl > level:
            return _RESERVED  # a PTE's NL must be 0 or 7; a table cannot be above us
        return HwItem(TABLE, field << self.granule_lg2, nl - 1, 0, r, w)


class AmdV1MockHw(AmdV1Hw):
    name = "amdv1_mock"
    granule_lg2 = 11


class X86_64Hw(HwFormat):
    name = "x86_64"
    accessed_bit = x86_64.A
    dirty_bit = x86_64.D
    sign_extended = True
    PAT_LARGE = 1 << 12  # the PAT bit of a 2M/1G leaf

    def decode(self, level: int, raw: int) -> HwItem:
        if not raw & x86_64.P:
            return _NOT_PRESENT
        w = bool(raw & x86_64.RW)
        addr = raw & x86_64.OA_MASK
        if level == 0:
            return HwItem(LEAF, addr, 0, 12, True, w)
        if raw & x86_64.PS:
            if level > 2:
                return _RESERVED
            size_lg2 = self.item_lg2(level)
            # In a large page, bit 12 is PAT, not an address bit.
            addr &= ~self.PAT_LARGE
            if addr & ((1 << size_lg2) - 1):
                return _RESERVED  # reserved low address bits of a large page
            return HwItem(LEAF, addr, 0, size_lg2, True, w)
        return HwItem(TABLE, addr, level - 1, 0, True, w)


class VtdSSHw(HwFormat):
    name = "vtdss"
    accessed_bit = vtdss.A
    dirty_bit = vtdss.D

    def decode(self, level: int, raw: int) -> HwItem:
        r = bool(raw & vtdss.R)
        w = bool(raw & vtdss.W)
        if not (r or w):
            return _NOT_PRESENT
        addr = raw & vtdss.OA_MASK
        if level == 0:
            return HwItem(LEAF, addr, 0, 12, r, w)
        if raw & vtdss.PS:
            if level > 2:
                return _RESERVED
            size_lg2 = self.item_lg2(level)
            if addr & ((1 << size_lg2) - 1):
                return _RESERVED
            return HwItem(LEAF, addr, 0, size_lg2, r, w)
        return HwItem(TABLE, addr, level - 1, 0, r, w)


class RiscV64Hw(HwFormat):
    name = "riscv64"
    accessed_bit = riscv64.A
    dirty_bit = riscv64.D
    sign_extended = True

    def decode(self, level: int, raw: int) -> HwItem:
        if not raw & riscv64.V:
            return _NOT_PRESENT
        r = bool(raw & riscv64.R)
        w = bool(raw & riscv64.W)
        x = bool(raw & riscv64.X)
        if w and not r:
            return _RESERVED
        ppn = (raw & riscv64.PPN_MASK) >> riscv64.PPN_SHIFT
        if not (r or w or x):
            if raw & (riscv64.D | riscv64.A | riscv64.U | riscv64.N):
                return _RESERVED  # reserved in a pointer to the next table
            return HwItem(TABLE, ppn << 12, level - 1, 0) if level else _RESERVED
        if raw & riscv64.N:
            if level != 0 or ppn & 0xF != 0b1000:
                return _RESERVED
            return HwItem(LEAF, (ppn & ~0xF) << 12, 0, 16, r, w)
        size_lg2 = self.item_lg2(level)
        if ppn & ((1 << (size_lg2 - 12)) - 1):
            return _RESERVED  # a misaligned superpage
        return HwItem(LEAF, ppn << 12, 0, size_lg2, r, w)


HW_FORMATS: dict[str, HwFormat] = {
    f.name: f for f in (AmdV1Hw(), AmdV1MockHw(), X86_64Hw(), VtdSSHw(), RiscV64Hw())
}
