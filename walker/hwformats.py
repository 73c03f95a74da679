"""How the IOMMU hardware reads each format's table items.

Every decoder takes its bit layout from the hardware specification it models, never
from ``tables/formats``: a wrong bit in a software format must show up as a
disagreement (tests/walker/test_hw_vs_sw.py encodes with the software format and
decodes here, item by item), not be copied into the "hardware". Sources:

- AMDv1: AMD I/O Virtualization Technology (IOMMU) Specification (48882), "I/O Page
  Tables for Host Translations": the PDE and PTE formats.
- x86-64: Intel SDM Vol. 3A, section 4.5 (4- and 5-level paging), tables 4-14..4-20.
- VT-d second stage: Intel VT-d Specification, section 9.8 (second-stage paging
  entries).
- RISC-V: the privileged ISA's Sv39/Sv48/Sv57 PTE and Svnapot, as the RISC-V IOMMU
  specification's first-stage (iosatp) walk uses them.
- ARMv8: Arm ARM DDI 0487, D8.3 (VMSAv8-64 descriptors, 4 KiB granule), as an
  SMMUv3 context descriptor's TTB0 walk uses them.

They differ from the kernel's software view where the hardware does:

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
- ARMv8: a level-0 item with bit 1 clear and a block at level 3 are invalid (software
  reads the first as a page); APTable restricts everything below a table; device
  accesses are unprivileged, so a page without AP[1] is inaccessible; the contiguous
  hint is not used (each item translates its own 4 KiB / 2 MiB / 1 GiB).

A decoder returns a ``HwItem``; the walker does the rest (index, permissions, A/D).
"""

from __future__ import annotations

from typing import NamedTuple

NOT_PRESENT = 0
TABLE = 1
LEAF = 2
RESERVED = 3


def bits(high: int, low: int) -> int:
    """The mask of bits high..low (GENMASK)."""
    return ((1 << (high + 1)) - 1) & ~((1 << low) - 1)


def _lowest_zero(value: int) -> int:
    """Number of trailing one bits (the run length of an NL=7 size code)."""
    return ((value + 1) & ~value).bit_length() - 1


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
    accessed_bit = 0  # set by the walker on use (0: not modelled)
    dirty_bit = 0  # set by the walker on a write (0: not modelled)
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
    """AMD IOMMU host page table (PDE/PTE, IOMMU spec 48882)."""

    name = "amdv1"
    PR = 1 << 0
    A = 1 << 5
    D = 1 << 6
    NEXT_LEVEL_SHIFT = 9
    NEXT_LEVEL = bits(11, 9)
    ADDRESS = bits(51, 12)
    IR = 1 << 61
    IW = 1 << 62
    NL_PAGE = 0  # a PTE of the level's own size
    NL_SIZED = 7  # a PTE whose size is encoded in its low address bits
    accessed_bit = A
    dirty_bit = D

    def decode(self, level: int, raw: int) -> HwItem:
        if not raw & self.PR:
            return _NOT_PRESENT
        r = bool(raw & self.IR)
        w = bool(raw & self.IW)
        nl = (raw & self.NEXT_LEVEL) >> self.NEXT_LEVEL_SHIFT
        field = (raw & self.ADDRESS) >> 12
        if nl == self.NL_PAGE:
            return HwItem(LEAF, field << self.granule_lg2, 0, self.item_lg2(level), r, w)
        if nl == self.NL_SIZED:
            # The page size is 2**(granule + 1 + number of ones in the low OA bits).
            ones = _lowest_zero(field)
            size_lg2 = self.granule_lg2 + ones + 1
            if size_lg2 < self.item_lg2(level):
                return _RESERVED
            base = (field & ~((1 << ones) - 1)) << self.granule_lg2
            return HwItem(LEAF, base & ~((1 << size_lg2) - 1), 0, size_lg2, r, w)
        if level == 0 or nl > level:
            return _RESERVED  # a PTE's NL must be 0 or 7; a table cannot be above us
        return HwItem(TABLE, field << self.granule_lg2, nl - 1, 0, r, w)


class AmdV1MockHw(AmdV1Hw):
    """The iommufd selftest's mock: AMDv1 items over a 2 KiB granule."""

    name = "amdv1_mock"
    granule_lg2 = 11


class X86_64Hw(HwFormat):
    """x86 4/5-level paging (Intel SDM Vol. 3A 4.5), as AMD v2 and VT-d first stage."""

    name = "x86_64"
    P = 1 << 0
    RW = 1 << 1
    A = 1 << 5
    D = 1 << 6
    PS = 1 << 7
    ADDRESS = bits(51, 12)
    PAT_LARGE = 1 << 12  # the PAT bit of a 2M/1G leaf
    accessed_bit = A
    dirty_bit = D
    sign_extended = True

    def decode(self, level: int, raw: int) -> HwItem:
        if not raw & self.P:
            return _NOT_PRESENT
        w = bool(raw & self.RW)
        addr = raw & self.ADDRESS
        if level == 0:
            return HwItem(LEAF, addr, 0, 12, True, w)
        if raw & self.PS:
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
    """VT-d second-stage paging entries (VT-d spec 9.8)."""

    name = "vtdss"
    R = 1 << 0
    W = 1 << 1
    PS = 1 << 7
    A = 1 << 8
    D = 1 << 9
    ADDRESS = bits(51, 12)
    accessed_bit = A
    dirty_bit = D

    def decode(self, level: int, raw: int) -> HwItem:
        r = bool(raw & self.R)
        w = bool(raw & self.W)
        if not (r or w):
            return _NOT_PRESENT
        addr = raw & self.ADDRESS
        if level == 0:
            return HwItem(LEAF, addr, 0, 12, r, w)
        if raw & self.PS:
            if level > 2:
                return _RESERVED
            size_lg2 = self.item_lg2(level)
            if addr & ((1 << size_lg2) - 1):
                return _RESERVED
            return HwItem(LEAF, addr, 0, size_lg2, r, w)
        return HwItem(TABLE, addr, level - 1, 0, r, w)


class RiscV64Hw(HwFormat):
    """RISC-V Sv39/48/57 PTEs with Svnapot (privileged ISA; RISC-V IOMMU iosatp)."""

    name = "riscv64"
    V = 1 << 0
    R = 1 << 1
    W = 1 << 2
    X = 1 << 3
    U = 1 << 4
    A = 1 << 6
    D = 1 << 7
    PPN_SHIFT = 10
    PPN = bits(53, 10)
    N = 1 << 63
    NAPOT_64K = 0b1000  # ppn[3:0] of a 64 KiB NAPOT leaf
    accessed_bit = A
    dirty_bit = D
    sign_extended = True

    def decode(self, level: int, raw: int) -> HwItem:
        if not raw & self.V:
            return _NOT_PRESENT
        r = bool(raw & self.R)
        w = bool(raw & self.W)
        x = bool(raw & self.X)
        if w and not r:
            return _RESERVED
        ppn = (raw & self.PPN) >> self.PPN_SHIFT
        if not (r or w or x):
            if raw & (self.D | self.A | self.U | self.N):
                return _RESERVED  # reserved in a pointer to the next table
            return HwItem(TABLE, ppn << 12, level - 1, 0) if level else _RESERVED
        if raw & self.N:
            if level != 0 or ppn & 0xF != self.NAPOT_64K:
                return _RESERVED
            return HwItem(LEAF, (ppn & ~0xF) << 12, 0, 16, r, w)
        size_lg2 = self.item_lg2(level)
        if ppn & ((1 << (size_lg2 - 12)) - 1):
            return _RESERVED  # a misaligned superpage
        return HwItem(LEAF, ppn << 12, 0, size_lg2, r, w)


class ArmV8Hw(HwFormat):
    """VMSAv8-64 stage-1 descriptors, 4 KiB granule, 48-bit output (Arm ARM D8.3).

    Modelled SMMU context: TTB0 with T0SZ from the table's span; device accesses are
    unprivileged (PCIe requests carry no privilege); CD.HA = 1, so the walker sets AF
    itself; CD.HD = 0, so DBM is ignored and AP[2] alone makes a page read-only.
    Execute permission (PXN/UXN) and memory attributes do not affect a DMA here.
    """

    name = "armv8"
    VALID = 1 << 0
    TYPE = 1 << 1  # levels 1-3: table (set) or block; level 0: must be set (page)
    AP_EL0 = 1 << 6  # AP[1]: unprivileged access
    AP_RO = 1 << 7  # AP[2]: read-only
    AF = 1 << 10
    ADDRESS = bits(47, 12)
    DBM = 1 << 51
    CONTIGUOUS = 1 << 52
    PXN = 1 << 53
    UXN = 1 << 54
    AP_TABLE_NO_EL0 = 1 << 61  # APTable[0]: no unprivileged access below
    AP_TABLE_RO = 1 << 62  # APTable[1]: no write access below
    BLOCK_LEVELS = (1, 2)  # 2 MiB and 1 GiB blocks (Arm levels 2 and 1)
    accessed_bit = AF

    def decode(self, level: int, raw: int) -> HwItem:
        if not raw & self.VALID:
            return _NOT_PRESENT
        if level == 0:
            if not raw & self.TYPE:
                return _NOT_PRESENT  # 0b01 at Arm level 3 is reserved: invalid
            return self._leaf(level, raw)
        if raw & self.TYPE:
            no_el0 = bool(raw & self.AP_TABLE_NO_EL0)
            ro = bool(raw & self.AP_TABLE_RO)
            return HwItem(TABLE, raw & self.ADDRESS, level - 1, 0, not no_el0, not (no_el0 or ro))
        if level not in self.BLOCK_LEVELS:
            return _NOT_PRESENT  # no blocks at Arm level 0 without LPA2: invalid
        return self._leaf(level, raw)

    def _leaf(self, level: int, raw: int) -> HwItem:
        size_lg2 = self.item_lg2(level)
        # The OA bits below a block's size are RES0: ignored, not a fault.
        addr = raw & self.ADDRESS & ~((1 << size_lg2) - 1)
        el0 = bool(raw & self.AP_EL0)
        return HwItem(LEAF, addr, 0, size_lg2, el0, el0 and not raw & self.AP_RO)


HW_FORMATS: dict[str, HwFormat] = {
    f.name: f
    for f in (AmdV1Hw(), AmdV1MockHw(), X86_64Hw(), VtdSSHw(), RiscV64Hw(), ArmV8Hw())
}
