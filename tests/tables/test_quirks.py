"""Kernel quirks the port reproduces on purpose (generic_pt.md 1.7, 1.8, 4.4, 4.9.1, 9).

Each test names one quirk and pins the kernel's (odd) behaviour, so that a
"cleanup" that silently changes it fails here first.
"""

from __future__ import annotations

import errno

import pytest

from iommusim.tables import PageTable, Prot
from iommusim.tables import iter as it

RW = Prot.READ | Prot.WRITE
U64 = (1 << 64) - 1


def test_quirk_iova_to_phys_returns_negative_errno_cast_to_phys() -> None:
    """Quirk (4.4): the kernel's iova_to_phys of an IOVA outside the table returns
    -ERANGE cast to phys_addr_t (0xFFFF_FFFF_FFFF_FFDE); an unmapped IOVA inside the
    table returns 0. The Python API turns both into None."""
    pt = PageTable("x86_64", features={"sign_extend"})  # 48 bits, sign-extended
    pt.map(0x1000, 0x1234_5000, 0x1000, RW)
    non_canonical = 1 << 47  # bit 47 set, upper bits clear
    assert pt.kernel_iova_to_phys(non_canonical) == (-errno.ERANGE) & U64
    assert pt.kernel_iova_to_phys(non_canonical) == 0xFFFF_FFFF_FFFF_FFDE
    assert pt.kernel_iova_to_phys(0x2000) == 0
    assert pt.kernel_iova_to_phys(0x1ABC) == 0x1234_5ABC
    assert pt.iova_to_phys(non_canonical) is None
    assert pt.iova_to_phys(0x2000) is None
    # Without SIGN_EXTEND, anything at or above 2**vasz is out of range.
    pt2 = PageTable("vtdss", vasz_lg2=39, top_level=2)
    assert pt2.kernel_iova_to_phys(1 << 39) == (-errno.ERANGE) & U64


def test_quirk_check_range_sign_extension_leniency_upper_bits() -> None:
    """Quirk (1.7): pt_check_range compares only bits 63..N with the sign prefix, so
    0xFFFF_0000_0000_0000 (upper bits set, bit 47 clear -- not canonical) passes; its
    top index comes from the low 48 bits, so it aliases IOVA 0."""
    pt = PageTable("x86_64", features={"sign_extend"})
    alias = 0xFFFF_0000_0000_0000
    pt.map(alias, 0x7777_0000, 0x1000, RW)
    assert pt.iova_to_phys(0) == 0x7777_0000
    assert pt.iova_to_phys(alias + 0x123) == 0x7777_0123
    assert pt.unmap(0, 0x1000) == 0x1000
    assert pt.iova_to_phys(alias) is None


def test_quirk_check_range_sign_extension_leniency_last_va() -> None:
    """Quirk (1.7): a lower-half range whose last_va has bit 47 set but upper bits
    clear passes too: the map runs into the first upper-half top slot, so its second
    page is reachable at the canonical upper-half IOVA 0xFFFF_8000_0000_0000."""
    pt = PageTable("x86_64", features={"sign_extend"})
    start = (1 << 47) - 0x1000
    pt.map(start, 0x5000_0000, 0x2000, RW)
    assert pt.iova_to_phys(start) == 0x5000_0000
    assert pt.iova_to_phys(0xFFFF_8000_0000_0000) == 0x5000_1000
    assert pt.iova_to_phys(1 << 47) is None  # the literal address is non-canonical


@pytest.mark.parametrize("fmt, block_items", [("amdv1", 16), ("amdv1_mock", 32)])
def test_quirk_record_dirty_off_by_one_for_contiguous_block(fmt: str, block_items: int) -> None:
    """Quirk (4.9.1): record_dirty compares an inclusive last index with the exclusive
    end index, so a dirty contiguous block (64 KiB here) lying wholly inside the range
    is reported one item short; a block the range ends inside is reported exactly."""
    pt = PageTable(fmt)
    item = 1 << pt.common.fmt.granule_lg2sz
    block = block_items * item  # 64 KiB: one contiguous leaf
    assert block == 0x10000
    va, pa = 0x4000_0000, 0x1000_0000
    pt.map(va, pa, block, RW)
    assert pt.walk(va)[-1].raw == pt.walk(va + block - item)[-1].raw  # one contiguous entry
    pt.set_dirty(va + 3 * item)
    assert pt.read_and_clear_dirty(va, 2 * block, no_clear=True) == [(va, block - item)]
    assert pt.read_and_clear_dirty(va, block, no_clear=True) == [(va, block - item)]
    # The range ends inside the block: end_index is the smaller bound, exact length.
    assert pt.read_and_clear_dirty(va, 4 * item, no_clear=True) == [(va, 4 * item)]
    # Cleaning clears the whole block (every item's D bit).
    assert pt.read_and_clear_dirty(va, 2 * block) == [(va, block - item)]
    assert pt.read_and_clear_dirty(va, 2 * block) == []


def test_quirk_item_oa_ors_the_whole_table_index() -> None:
    """Quirk (1.8): the derived item_oa is entry_oa | (index << isz), ORing the whole
    table index rather than the index inside the block: right for a block at index
    0 (the only kunit use), wrong for an entry anywhere else."""
    pt = PageTable("amdv1")
    oa = 0x8000_0000
    pt.map(0x10000, oa, 0x10000, RW)  # 64K contiguous block at level-0 index 16
    pt.map(0x0, oa + 0x10000, 0x10000, RW)  # 64K block at index 0

    def item_oa(iova: int) -> tuple[int, int]:
        step = pt.walk(iova)[-1]
        pts = it.State(it.make_range(pt.common, pt.top_of_table, iova, iova), 0, step.table_pa)
        pts.index, pts.entry = step.index, step.raw
        return it.entry_oa(pts), it.item_oa(pts)

    # Block at index 0: item 3 is entry_oa + 3 pages, as it should be.
    assert item_oa(0x3000) == (oa + 0x10000, oa + 0x10000 + 0x3000)
    # Block at index 16: item 19 gets 19 pages ORed in, not 3.
    entry, item = item_oa(0x13000)
    assert entry == oa
    assert item == oa | (19 << 12)
    assert item != oa + 0x3000
    # The core uses entry_oa, so translation is right regardless.
    assert pt.iova_to_phys(0x13000) == oa + 0x3000
