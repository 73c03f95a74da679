"""Where the hardware reads a table item differently from the kernel's software walk.

Each test builds the item the software API cannot produce directly in memory (a
coherent device write into both views, ``memory.device_write``), shows what the
software walk (``tables``, CPU view) makes of it, and asserts what the hardware
walker does instead. The walker here is coherent, so it reads exactly the CPU view.
"""

from __future__ import annotations

import pytest

from iommusim.hwmodels.dma import FAULT, OK
from iommusim.tables.formats import amdv1, armv8, riscv64, vtdss, x86_64

IOVA = 0x4000_0000
PA = 0x1_2345_6000
GB, MB2 = 1 << 30, 1 << 21


def _fault(tr, reason, level):
    return (tr.outcome, tr.reason, tr.level) == (FAULT, reason, level)


def _neighbour(step, n=1):
    """The address of the item ``n`` places after a walk step's item."""
    return step.table_pa + (step.index + n) * 8


# --- VT-d second stage: no present bit; R = W = 0 is not present -----------------------


def test_vtd_item_with_only_the_flush_done_sw_bit_is_not_present(sim):
    """Software: ``entry != 0`` is present, so an item holding only SW bit 10
    (FLUSH_DONE) is a table pointer (level 1) or a leaf (level 0) at PA 0.
    Hardware: R = W = 0, not present."""
    s = sim("vtdss")
    s.map(IOVA, PA, 0x1000)
    *_, l1, l0 = s.steps(IOVA)
    flush_done = 1 << 10
    s.m.memory.device_write(_neighbour(l0), flush_done)
    s.m.memory.device_write(_neighbour(l1), flush_done)

    page = IOVA + 0x1000
    assert s.steps(page)[-1].kind == "oa"  # software: a leaf...
    assert s.pt.iova_to_phys(page, view="peek") == 0  # ...of physical page 0
    assert _fault(s.walked(page).translation, "not_present", 0)  # hardware: nothing

    big = IOVA + MB2
    assert [st.kind for st in s.steps(big)][:3] == ["table", "table", "table"]
    assert _fault(s.walked(big).translation, "not_present", 1)

    # The same items with R set are present to the hardware too.
    s.m.memory.device_write(_neighbour(l0), flush_done | vtdss.R | 0x7_7777_7000)
    tr = s.walked(page + 8).translation
    assert (tr.outcome, tr.pa) == (OK, 0x7_7777_7008)


def test_vtd_ps_above_level_2_is_reserved(sim):
    """Software: PS only counts at levels 1-2, so a level-3 item with PS is a table.
    Hardware: PS is reserved there."""
    s = sim("vtdss")
    s.map(IOVA, PA, 0x1000)
    top = s.steps(IOVA)[0]
    assert top.level == 3
    s.m.memory.device_write(_neighbour(top), vtdss.R | vtdss.W | vtdss.PS | (1 << 39))
    va = IOVA + (1 << 39)
    assert s.steps(va)[0].kind == "table"
    assert _fault(s.walked(va).translation, "reserved", 3)


# --- AMDv1: NEXT_LEVEL, level skipping ----------------------------------------------------


def _amd_pointer(table, nl, r=True, w=True):
    return amdv1.PR | nl << amdv1.NL_SHIFT | table | (amdv1.IR if r else 0) | (amdv1.IW if w else 0)


def _amd_leaf(pa):
    return amdv1.PR | pa | amdv1.IR | amdv1.IW


def test_amdv1_level_skipping(sim):
    """A level-2 item with NL=1 points straight at a level-0 table, skipping level 1.

    Hardware: translates when the skipped VA bits (level 1's index, bits 29:21) are 0,
    and faults ``reserved`` at level 2 otherwise; a skipping pointer is not
    walk-cached. Software: NL is neither 0 nor 7, so it is a table pointer; it reads
    the pointed-to page as a level-1 table, finds item 0 empty and translates
    nothing."""
    s = sim("amdv1", trace=True)
    assert s.pt.top_level == 2
    root = s.pt.top_table_pa
    l0 = s.m.allocator.alloc(12)
    s.m.memory.device_write(root + 3 * 8, _amd_pointer(l0, 1))
    s.m.memory.device_write(l0 + 7 * 8, _amd_leaf(PA))
    s.m.memory.device_write(l0 + 8 * 8, _amd_leaf(PA + 0x5000))

    va = 3 * GB + 7 * 0x1000 + 0x123
    assert s.pt.iova_to_phys(va, view="peek") is None
    tr = s.walked(va).translation
    assert (tr.outcome, tr.pa, tr.path) == (OK, PA + 0x123, "walk")
    assert s.port_reads() == [root + 3 * 8, l0 + 7 * 8]  # two items, no level 1
    assert s.m.walk_cache.stats()["fills"] == 0

    # The next page: no walk-cache entry to start from, the same two reads.
    tr = s.walked(va + 0x1000).translation
    assert (tr.outcome, tr.pa, tr.path) == (OK, PA + 0x5123, "walk")
    assert s.port_reads()[-2:] == [root + 3 * 8, l0 + 8 * 8]

    # Any skipped VA bit set: reserved, and the leaf is never read.
    for bit in (21, 25, 29):
        reads = len(s.port_reads())
        assert _fault(s.walked(va | 1 << bit).translation, "reserved", 2), bit
        assert len(s.port_reads()) == reads + 1


def test_amdv1_next_level_above_the_current_level_is_reserved(sim):
    """NL names the next table's level (+1); it cannot point above the current table.
    Software reads such items as table pointers (levels 1-2) or as a leaf whose
    address it cannot decode (level 0, NL 1-6)."""
    s = sim("amdv1")
    s.map(IOVA, PA, 0x1000)
    l2, l1, l0 = s.steps(IOVA)
    assert (l2.level, l1.level, l0.level) == (2, 1, 0)
    spare = s.m.allocator.alloc(12)
    mem = s.m.memory

    mem.device_write(_neighbour(l2), _amd_pointer(spare, 3))  # NL 3 at level 2
    assert s.steps(IOVA + GB)[0].kind == "table"
    assert _fault(s.walked(IOVA + GB).translation, "reserved", 2)

    mem.device_write(_neighbour(l1), _amd_pointer(spare, 2))  # NL 2 at level 1
    assert s.steps(IOVA + MB2)[1].kind == "table"
    assert _fault(s.walked(IOVA + MB2).translation, "reserved", 1)

    for n, nl in enumerate(range(1, 7), start=1):  # a level-0 item must have NL 0 or 7
        mem.device_write(_neighbour(l0, n), _amd_leaf(PA) | nl << amdv1.NL_SHIFT)
        assert s.steps(IOVA + n * 0x1000)[-1].kind == "oa"
        assert _fault(s.walked(IOVA + n * 0x1000).translation, "reserved", 0), nl

    # NL=7 encoding a page smaller than the level-1 item (8K at level 1).
    mem.device_write(_neighbour(l1, 2), _amd_leaf(PA) | 7 << amdv1.NL_SHIFT)
    assert _fault(s.walked(IOVA + 2 * MB2).translation, "reserved", 1)

    # The regular pointer (NL = current level) still works.
    tr = s.walked(IOVA + 8).translation
    assert (tr.outcome, tr.pa) == (OK, PA + 8)


@pytest.mark.parametrize(
    ("fmt", "write_bit"),
    [("amdv1", amdv1.IW), ("vtdss", vtdss.W), ("x86_64", x86_64.RW)],
    ids=["amdv1", "vtdss", "x86_64"],
)
def test_write_permission_is_anded_along_the_walk(sim, fmt, write_bit):
    """Software takes the permissions from the leaf alone (AMDv1 even sets IR/IW on
    every pointer so that "the leaf decides"). Hardware ANDs the write permission of
    every item on the walk: a level-1 pointer without it makes the page read-only --
    also when a later walk starts below that pointer, from the walk cache."""
    s = sim(fmt)
    s.map(IOVA, PA, 0x1000)
    l1 = s.steps(IOVA)[-2]
    assert l1.level == 1
    s.m.memory.device_write(l1.entry_pa, l1.raw & ~write_bit)
    assert s.pt.iova_to_phys(IOVA, view="peek") == PA
    tr = s.walked(IOVA).translation
    assert (tr.outcome, tr.path) == (OK, "walk")
    wc = s.m.walk_cache.stats()["level1.hits"]
    assert _fault(s.walked(IOVA, write=True).translation, "permission", 0)
    assert s.m.walk_cache.stats()["level1.hits"] == wc + 1  # started below the pointer
    # A write right after a read that filled the IOTLB: refused as well.
    s.walked(IOVA)
    assert s.dma(IOVA, write=True).translation.reason == "permission"


# --- x86-64: PS, canonical addresses --------------------------------------------------------


def test_x86_ps_at_level_3_is_reserved(sim):
    """Software: PS only counts at levels 1-2, so a level-3 (PML4E) item with PS is a
    table pointer. Hardware: reserved."""
    s = sim("x86_64")
    s.map(IOVA, PA, 0x1000)
    top = s.steps(IOVA)[0]
    assert top.level == 3
    s.m.memory.device_write(_neighbour(top), x86_64.P | x86_64.RW | x86_64.PS | (1 << 39))
    va = IOVA + (1 << 39)
    assert s.steps(va)[0].kind == "table"
    assert _fault(s.walked(va).translation, "reserved", 3)


def test_x86_large_page_address_bits(sim):
    """A 2M leaf with address bits 20:13 set is reserved. Bit 12 of a large leaf is
    PAT, not an address bit: the page stays 2M aligned (the software walk, which
    takes the page's address modulo its size, agrees)."""
    s = sim("x86_64")
    s.map(IOVA, PA, 0x1000)
    _, _, l1, _ = s.steps(IOVA)
    base = 0x1_2300_0000
    s.m.memory.device_write(_neighbour(l1), x86_64.P | x86_64.PS | (base + 0x2000))
    assert _fault(s.walked(IOVA + MB2).translation, "reserved", 1)
    s.m.memory.device_write(_neighbour(l1), x86_64.P | x86_64.PS | base)
    tr = s.walked(IOVA + MB2 + 0x1234).translation
    assert (tr.outcome, tr.pa) == (OK, base + 0x1234)
    s.m.memory.device_write(_neighbour(l1), x86_64.P | x86_64.PS | base | 1 << 12)
    assert s.pt.iova_to_phys(IOVA + MB2 + 0x1234, view="peek") == base + 0x1234
    tr = s.walked(IOVA + MB2 + 0x1234).translation
    assert (tr.outcome, tr.pa) == (OK, base + 0x1234)


def test_x86_non_canonical_va_is_an_address_range_fault(sim):
    """A 4-level x86 walk translates 48-bit canonical addresses only (bits 63:47
    equal), indexing with bits 47:12. The software table without SIGN_EXTEND maps
    2**47 (the upper half of its 48-bit space); the hardware refuses that address as
    non-canonical and reaches the very same item at the sign-extended address
    0xFFFF_8000_0000_0000, which the software says is outside the table. With
    SIGN_EXTEND the software agrees with the hardware."""
    s = sim("x86_64")
    upper, high = 1 << 47, 0xFFFF_8000_0000_0000
    s.map(upper, PA, 0x1000)
    assert s.pt.iova_to_phys(upper, view="peek") == PA
    assert s.pt.iova_to_phys(high, view="peek") is None
    for va in (upper, 1 << 48, 1 << 63):
        assert _fault(s.walked(va).translation, "address_range", 3), hex(va)
    assert s.m.port.reads == 0  # refused before the first read
    tr = s.walked(high + 0x10).translation
    assert (tr.outcome, tr.pa) == (OK, PA + 0x10)

    s = sim("x86_64", features=("sign_extend",))
    s.map(high, PA, 0x1000)
    assert s.pt.iova_to_phys(high + 0x10, view="peek") == PA + 0x10
    tr = s.walked(high + 0x10).translation
    assert (tr.outcome, tr.pa) == (OK, PA + 0x10)
    assert _fault(s.walked(upper + 0x10).translation, "address_range", 3)


def test_vtd_va_beyond_the_table_is_an_address_range_fault(sim):
    s = sim("vtdss", vasz=39)
    assert s.pt.top_level == 2
    assert _fault(s.walked(1 << 39).translation, "address_range", 2)


# --- RISC-V: leaves anywhere, W without R, alignment, NAPOT ---------------------------------


def _rv_leaf(pa, bits=riscv64.R | riscv64.W | riscv64.A | riscv64.D):
    return riscv64.V | bits | (pa >> 12) << riscv64.PPN_SHIFT


def test_riscv_w_without_r_is_reserved(sim):
    """Software: any of R/W/X makes an item a leaf. Hardware: W without R is reserved."""
    s = sim("riscv64", vasz=39)
    s.map(IOVA, PA, 0x1000)
    l0 = s.steps(IOVA)[-1]
    s.m.memory.device_write(_neighbour(l0), _rv_leaf(PA, riscv64.W | riscv64.A | riscv64.D))
    assert s.pt.iova_to_phys(IOVA + 0x1000, view="peek") == PA
    assert _fault(s.walked(IOVA + 0x1000).translation, "reserved", 0)
    assert _fault(s.walked(IOVA + 0x1000, write=True).translation, "reserved", 0)


def test_riscv_misaligned_superpage_is_reserved(sim):
    """A level-1 leaf (2M) whose PPN is not 2M aligned is reserved to the hardware;
    aligned, it is a leaf above level 0 like any other."""
    s = sim("riscv64", vasz=39)
    s.map(IOVA, PA, 0x1000)
    _, l1, _ = s.steps(IOVA)
    s.m.memory.device_write(_neighbour(l1), _rv_leaf(0x1_2300_0000 + 0x1000))
    assert s.steps(IOVA + MB2)[-1].kind == "oa"
    assert _fault(s.walked(IOVA + MB2).translation, "reserved", 1)
    s.m.memory.device_write(_neighbour(l1), _rv_leaf(0x1_2300_0000))
    tr = s.walked(IOVA + MB2 + 0x4567).translation
    assert (tr.outcome, tr.pa) == (OK, 0x1_2300_4567)


def test_riscv_napot_rules(sim):
    """N (Svnapot) marks a 64K leaf at level 0 with PPN[3:0] = 0b1000 only."""
    s = sim("riscv64", vasz=39, features=("riscv_svnapot_64k",))
    s.map(IOVA, 0x1_2345_0000, 0x1_0000)
    l0 = s.steps(IOVA)[-1]
    assert l0.raw & riscv64.N
    tr = s.walked(IOVA + 0xFFF8).translation
    assert (tr.outcome, tr.pa) == (OK, 0x1_2345_FFF8)
    assert s.m.iotlb.stats()["fills"] == 1 and s.dma(IOVA + 0x8000).translation.path == "iotlb"

    mem = s.m.memory
    wrong_size = _rv_leaf(0x1_2346_0000) | riscv64.N | 0b0100 << riscv64.PPN_SHIFT
    mem.device_write(_neighbour(l0, 16), wrong_size)
    assert _fault(s.walked(IOVA + 0x1_0000).translation, "reserved", 0)

    _, l1, _ = s.steps(IOVA)
    napot_at_1 = _rv_leaf(0x1_2340_0000) | riscv64.N | 0b1000 << riscv64.PPN_SHIFT
    mem.device_write(_neighbour(l1), napot_at_1)
    assert _fault(s.walked(IOVA + MB2).translation, "reserved", 1)


def test_riscv_pointer_with_leaf_only_bits_is_reserved(sim):
    """A non-leaf item (R = W = X = 0) with A, D or U set is reserved."""
    s = sim("riscv64", vasz=39)
    s.map(IOVA, PA, 0x1000)
    top, _, l0 = s.steps(IOVA)
    mem = s.m.memory
    mem.device_write(top.entry_pa, top.raw | riscv64.A)
    assert s.pt.iova_to_phys(IOVA, view="peek") == PA
    assert _fault(s.walked(IOVA).translation, "reserved", 2)
    mem.device_write(top.entry_pa, top.raw)
    assert s.walked(IOVA).translation.outcome == OK
    # A pointer at level 0 does not exist: a valid RWX=0 item there is reserved.
    mem.device_write(_neighbour(l0), riscv64.V | (PA >> 12) << riscv64.PPN_SHIFT)
    assert _fault(s.walked(IOVA + 0x1000).translation, "reserved", 0)


# --- ARMv8 stage 1: page bit, level-0 blocks, the contiguous hint, APTable, AF --------------


def test_armv8_level0_item_without_the_page_bit_is_invalid(sim):
    """Software: at level 0 the kernel does not check bit 1 ("must be a page"), so a
    valid item with bits 1:0 = 01 is a leaf. Hardware: 01 at Arm level 3 is a
    reserved encoding, treated as invalid (translation fault)."""
    s = sim("armv8")
    s.map(IOVA, PA, 0x2000)
    l0 = s.steps(IOVA)[-1]
    page = IOVA + 0x1000
    s.m.memory.device_write(_neighbour(l0), s.steps(page)[-1].raw & ~armv8.PAGE)
    assert s.pt.iova_to_phys(page, view="peek") == PA + 0x1000
    assert _fault(s.walked(page).translation, "not_present", 0)
    assert s.walked(IOVA).translation.outcome == OK


def test_armv8_block_at_the_top_level_is_invalid(sim):
    """No blocks at Arm level 0 with the 4K granule: software reports the item empty
    (can_have_leaf), the hardware faults as for an invalid descriptor."""
    s = sim("armv8")
    s.map(IOVA, PA, 0x1000)
    top = s.steps(IOVA)[0]
    assert top.level == 3
    s.m.memory.device_write(_neighbour(top), armv8.VALID | armv8.AF | 1 << 39)
    va = IOVA + (1 << 39)
    assert [st.kind for st in s.steps(va)] == ["empty"]
    assert _fault(s.walked(va).translation, "not_present", 3)


def test_armv8_contiguous_hint_is_not_used(sim):
    """The modelled TLB ignores the contiguous hint: each item of a 64K entry is
    walked and cached on its own (4K IOTLB entries), and translates through its own
    OA. Software takes any item's OA aligned down to the block: an item whose OA
    disagrees with its block (a misprogrammed hint) translates differently."""
    s = sim("armv8")
    s.map(IOVA, 0x1_2340_0000, 0x1_0000)
    l0 = s.steps(IOVA)[-1]
    assert l0.raw & armv8.CONTIG
    assert s.walked(IOVA).translation.pa == 0x1_2340_0000
    tr = s.dma(IOVA + 0x5008).translation
    assert (tr.outcome, tr.pa, tr.path) == (OK, 0x1_2340_5008, "walk_cache")
    assert s.m.iotlb.stats()["fills"] == 2

    item5 = _neighbour(l0, 5)
    s.m.memory.device_write(item5, (s.steps(IOVA + 0x5000)[-1].raw & ~armv8.OA_MASK) | PA)
    # Software: item 5's OA, aligned down to 64K, plus the offset in the block.
    assert s.pt.iova_to_phys(IOVA + 0x5008, view="peek") == (PA & ~0xFFFF) + 0x5008
    tr = s.walked(IOVA + 0x5008).translation
    assert (tr.outcome, tr.pa) == (OK, PA + 8)


def test_armv8_aptable_restricts_every_page_below(sim):
    """Software ignores the hierarchical permissions of a table descriptor (it never
    sets them). Hardware: APTable[1] (bit 62) makes everything below read-only, also
    when a later walk starts from the walk cache; APTable[0] (bit 61) takes the
    pages out of an unprivileged device's reach."""
    s = sim("armv8")
    s.map(IOVA, PA, 0x1000)
    l1 = s.steps(IOVA)[-2]
    assert l1.level == 1
    s.m.memory.device_write(l1.entry_pa, l1.raw | 1 << 62)
    assert s.pt.iova_to_phys(IOVA, view="peek") == PA
    assert s.walked(IOVA).translation.outcome == OK
    assert _fault(s.walked(IOVA, write=True).translation, "permission", 0)
    s.m.memory.device_write(l1.entry_pa, l1.raw | 1 << 61)
    s.m.walk_cache.invalidate_all()
    assert _fault(s.walked(IOVA).translation, "permission", 0)


def test_armv8_walker_sets_the_access_flag(sim):
    """Linux maps every leaf with AF set; a leaf without it is not an access-flag
    fault here: the modelled SMMU has CD.HA = 1 and sets AF itself."""
    s = sim("armv8")
    s.map(IOVA, PA, 0x1000)
    l0 = s.steps(IOVA)[-1]
    assert l0.raw & armv8.AF
    s.m.memory.device_write(l0.entry_pa, l0.raw & ~armv8.AF)
    assert s.walked(IOVA).translation.outcome == OK
    assert s.m.memory.load(l0.entry_pa) == l0.raw
    assert s.iommu.ad_updates == 1
