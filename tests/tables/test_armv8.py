"""The ARMv8 format (genpt fmt/armv8.h): encodings, init errors and the kernel's quirks.

The kunit suites and the property tests run it through the generic algorithms; these
tests pin what is particular to it, each quirk named after the kernel behaviour it
keeps, so a "cleanup" that changes one fails here first.
"""

from __future__ import annotations

import errno

import pytest

from iommusim.tables import PageTable, Prot, PTError
from iommusim.tables import iter as it
from iommusim.tables.formats import armv8 as A
from iommusim.tables.prot import CACHE, MMIO, NOEXEC, READ, WRITE

RW = READ | WRITE
KB64, MB2, MB32 = 1 << 16, 1 << 21, 1 << 25


def _items(pt: PageTable, iova: int, n: int) -> list[int]:
    """The raw values of n consecutive leaf items from the one holding iova."""
    step = pt.walk(iova, view="peek")[-1]
    return [pt.executor.memory.load(step.entry_pa + 8 * k) for k in range(n)]


def test_geometry_and_page_sizes() -> None:
    """48-bit VA: four levels (Arm 0-3), leaves at Arm levels 1-3, each also as a
    16-item contiguous entry: 4K 64K 2M 32M 1G 16G."""
    pt = PageTable("armv8")
    assert (pt.top_level, pt.vasz_lg2, pt.oasz_lg2) == (3, 48, 48)
    sizes = [b for b in range(64) if pt.pgsize_bitmap >> b & 1]
    assert sizes == [12, 16, 21, 25, 30, 34]
    assert PageTable("armv8", vasz_lg2=39).top_level == 2
    assert PageTable("armv8", vasz_lg2=30).top_level == 1


def test_contiguous_items_each_hold_their_own_oa() -> None:
    """Unlike every other format, the 16 items of a contiguous entry are not copies:
    item k holds OA + k * item size, CONTIG set in each."""
    pt = PageTable("armv8")
    pt.map(MB32, 0x8_0000_0000 + MB32, MB32, RW)
    items = _items(pt, MB32, 16)
    assert [raw & A.OA_MASK for raw in items] == [0x8_0200_0000 + k * MB2 for k in range(16)]
    assert all(raw & A.CONTIG and not raw & A.TABLE_BIT for raw in items)
    assert pt.iova_to_phys(MB32 + 5 * MB2 + 0x123) == 0x8_0200_0000 + 5 * MB2 + 0x123


def test_page_and_block_descriptors() -> None:
    """Level 0 leaves are pages (bit 1 set), levels 1-2 blocks (bit 1 clear); table
    items have bits 1:0 = 11; AF is always set (no access-flag faults)."""
    pt = PageTable("armv8")
    pt.map(0x4000_0000, 0x4000_0000, MB2 + 0x1000, RW)
    *tables, block = pt.walk(0x4000_0000, view="peek")
    page = pt.walk(0x4000_0000 + MB2, view="peek")[-1]
    assert all(t.raw & 3 == 3 for t in tables)
    assert (block.level, block.raw & 3) == (1, A.VALID)
    assert (page.level, page.raw & 3) == (0, A.VALID | A.PAGE)
    assert block.raw & A.AF and page.raw & A.AF


@pytest.mark.parametrize(
    ("prot", "ap", "attrindx", "sh", "xn"),
    [
        (READ, A.AP_RDONLY | A.AP_UNPRIV, A.MAIR_ATTR_IDX_NC, A.SH_OS, False),
        (RW, A.AP_UNPRIV, A.MAIR_ATTR_IDX_NC, A.SH_OS, False),
        (WRITE, A.AP_UNPRIV, A.MAIR_ATTR_IDX_NC, A.SH_OS, False),
        (RW | CACHE, A.AP_UNPRIV, A.MAIR_ATTR_IDX_CACHE, A.SH_IS, False),
        (RW | MMIO | CACHE, A.AP_UNPRIV, A.MAIR_ATTR_IDX_DEV, A.SH_IS, False),
        (READ | NOEXEC, A.AP_RDONLY | A.AP_UNPRIV, A.MAIR_ATTR_IDX_NC, A.SH_OS, True),
        (RW | A.IOMMU_PRIV, 0, A.MAIR_ATTR_IDX_NC, A.SH_OS, False),
    ],
)
def test_stage1_prot(prot, ap, attrindx, sh, xn) -> None:
    pt = PageTable("armv8")
    err, pte = pt.common.fmt.set_prot(pt.common, prot)
    assert err == 0
    assert (pte & A.AP) >> A.AP_SHIFT == ap
    assert (pte & A.ATTRINDX) >> A.ATTRINDX_SHIFT == attrindx
    assert (pte & A.SH) >> A.SH_SHIFT == sh
    assert bool(pte & (A.UXN | A.PXN)) == xn
    assert pte & A.UXN and pte & A.PXN if xn else True
    assert pte & A.NG and pte & A.AF
    assert not pte & (A.DBM | A.NS)


@pytest.mark.parametrize(
    ("prot", "features", "s2ap", "memattr"),
    [
        (READ, set(), A.S2AP_READ, A.MEMATTR_NC),
        (RW, set(), A.S2AP_READ | A.S2AP_WRITE, A.MEMATTR_NC),
        (RW | CACHE, set(), A.S2AP_READ | A.S2AP_WRITE, A.MEMATTR_OIWB),
        (RW | CACHE, {"armv8_s2fwb"}, A.S2AP_READ | A.S2AP_WRITE, A.MEMATTR_FWB_WB),
        (WRITE | MMIO, set(), A.S2AP_WRITE, A.MEMATTR_DEV),
    ],
)
def test_stage2_prot(prot, features, s2ap, memattr) -> None:
    pt = PageTable("armv8", features={"armv8_s2", *features})
    err, pte = pt.common.fmt.set_prot(pt.common, prot)
    assert err == 0
    assert (pte & A.S2AP) >> A.S2AP_SHIFT == s2ap
    assert (pte & A.S2MEMATTR) >> A.S2MEMATTR_SHIFT == memattr
    assert not pte & A.NG


def test_dbm_writable_entries_start_dirty() -> None:
    """With DBM, a writable leaf is written dirty (DBM set, AP[2] clear) so the
    hardware never has to; read_and_clear_dirty reports it, then write-protects it."""
    pt = PageTable("armv8", features={"armv8_dbm"})
    pt.map(0, 0x10_0000, KB64, RW)
    pt.map(KB64, 0x20_0000, 0x1000, READ)
    assert pt.read_and_clear_dirty(0, 2 * KB64, no_clear=True) == [(0, KB64 - 0x1000)]
    assert all(raw & A.DBM for raw in _items(pt, 0, 16))
    assert not _items(pt, KB64, 1)[0] & A.DBM  # read-only: never dirty
    pt.read_and_clear_dirty(0, 2 * KB64)
    assert all(raw & (A.AP_RDONLY << A.AP_SHIFT) for raw in _items(pt, 0, 16))
    assert pt.read_and_clear_dirty(0, 2 * KB64) == []
    with pytest.raises(PTError) as exc:
        PageTable("armv8").read_and_clear_dirty(0, KB64)  # no DBM: no dirty tracking
    assert exc.value.errno == errno.EOPNOTSUPP


# --- init ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("vasz", "features", "err"),
    [
        (48, {"armv8_s2", "armv8_ns"}, errno.EOPNOTSUPP),  # NS has no meaning at stage 2
        (12, set(), errno.EINVAL),  # no VA bit above the granule
        (21, {"armv8_s2"}, errno.EINVAL),  # one-level stage 2 needs FEAT_TTST
        (49, set(), errno.EINVAL),  # beyond the format's 48 bits
    ],
)
def test_init_errors(vasz, features, err) -> None:
    with pytest.raises(PTError) as exc:
        PageTable("armv8", vasz_lg2=vasz, features=features)
    assert exc.value.errno == err


def test_hw_info() -> None:
    """What the SMMU driver programs: TTB, T0SZ, TG0 = 4K, IPS, and the walk's
    cacheability: inner/outer write-back inner-shareable, or non-cacheable outer
    shareable on a non-coherent SMMU."""
    info = PageTable("armv8", vasz_lg2=39).hw_info
    assert (info["tsz"], info["tg"], info["ps"], info["sh"], info["irgn"]) == (25, 0, 5, 3, 1)
    assert "sl0" not in info
    info = PageTable("armv8", oasz_lg2=40, features={"dma_incoherent"}).hw_info
    assert (info["tsz"], info["ps"], info["sh"], info["irgn"], info["orgn"]) == (16, 2, 2, 0, 0)
    assert PageTable("armv8", features={"armv8_s2"}).hw_info["sl0"] == 2  # starts at Arm L0


# --- quirks ----------------------------------------------------------------------------
def test_quirk_s2_concatenated_top_is_refused_by_init() -> None:
    """Quirk (armv8.h: "FIXME S2 concatenated tables"): for a 40-bit stage-2 IPA,
    fmt_init folds the 2-item top level into two concatenated level-2 tables, but
    num_items_lg2 knows nothing of concatenation, so pt_init_common finds the top
    table too small and init fails with -EOPNOTSUPP. Stage 1 at 40 bits is fine."""
    with pytest.raises(PTError) as exc:
        PageTable("armv8", vasz_lg2=40, features={"armv8_s2"})
    assert exc.value.errno == errno.EOPNOTSUPP
    assert PageTable("armv8", vasz_lg2=40).top_level == 3
    # A top of more than 16 items is not folded: 48 bits keep four levels.
    assert PageTable("armv8", vasz_lg2=48, features={"armv8_s2"}).top_level == 3


def test_quirk_contiguous_install_leaves_pts_entry_past_the_block() -> None:
    """Quirk (armv8pt_install_leaf_entry): the loop adds one item's OA step per item
    written and then stores the running value in pts->entry, so after a contiguous
    install pts.entry names the item after the block; after a single one, the item."""
    pt = PageTable("armv8")
    c = pt.common
    attrs = c.fmt.set_prot(c, RW)[1]
    table = pt.executor.allocator.alloc(12)
    pts = it.State(it.top_range(c, pt.top_of_table), 0, table)
    pt.run(it.install_leaf_entry(pts, 0x5_0000, 16, attrs))
    first = pt.executor.memory.load(table)
    assert pts.entry == first + 16 * 0x1000
    assert pts.entry & A.OA_MASK == 0x6_0000
    pts.index = 16
    pt.run(it.install_leaf_entry(pts, 0x9000, 12, attrs))
    assert pts.entry == pt.executor.memory.load(table + 16 * 8)


def test_quirk_ns_survives_attr_from_entry_through_the_s2_memattr_mask() -> None:
    """Quirk: attr_from_entry does not name NS (bit 5), but its mask includes the
    stage-2 MemAttr field (bits 5:2), so a stage-1 NS leaf rebuilt from its own
    attributes keeps NS."""
    pt = PageTable("armv8", features={"armv8_ns"})
    c = pt.common
    attrs = c.fmt.set_prot(c, RW)[1]
    assert attrs & A.NS
    raw = c.fmt.leaf_entry(c, 0, 0x7000, 12, attrs)
    assert c.fmt.attr_from_entry(raw) & A.NS
    assert A.NS & A.S2MEMATTR


@pytest.mark.parametrize(
    ("features", "field", "before", "after"),
    [
        ({"armv8_dbm"}, A.AP, A.AP_RDONLY | A.AP_UNPRIV, 0),
        ({"armv8_dbm", "armv8_s2"}, A.S2AP, A.S2AP_READ, A.S2AP_WRITE),
    ],
    ids=["stage1_loses_unpriv", "stage2_loses_read"],
)
def test_quirk_make_write_dirty_rewrites_the_whole_permission_field(
    features, field, before, after
) -> None:
    """Quirk (armv8pt_entry_make_write_dirty, the iommufd set_dirty path): the AP /
    S2AP field is cleared and rewritten, not just its write bit. A clean stage-1 item
    comes out with AP = 00 (privileged only); a clean stage-2 item with S2AP = write
    only. make_write_clean, by contrast, changes only the write bit."""
    pt = PageTable("armv8", features=features)
    pt.map(0, 0x10_0000, 0x1000, RW)
    pt.read_and_clear_dirty(0, 0x1000)  # clean: write-protect
    shift = A.AP_SHIFT
    assert (_items(pt, 0, 1)[0] & field) >> shift == before
    pt.set_dirty(0)
    assert (_items(pt, 0, 1)[0] & field) >> shift == after
    assert pt.read_and_clear_dirty(0, 0x1000, no_clear=True) == [(0, 0x1000)]


def test_set_dirty_without_dbm_on_the_item_fails() -> None:
    """A read-only leaf has no DBM: make_write_dirty refuses (set_dirty: -EAGAIN)."""
    pt = PageTable("armv8", features={"armv8_dbm"})
    pt.map(0, 0x10_0000, 0x1000, Prot.READ)
    with pytest.raises(PTError) as exc:
        pt.set_dirty(0)
    assert exc.value.errno == errno.EAGAIN
