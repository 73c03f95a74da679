"""Two independent sources must agree: the software formats encode, the hardware decoders
decode, item by item.

``tables/formats`` is the kernel's view of each table format; ``walker/hwformats``
defines its own bit layouts from the hardware specifications. For every format and
every kunit cfg the hardware can walk, every level that can hold a leaf, every leaf
size, every prot the format accepts and two output addresses, the software path
(``set_prot`` then ``install_leaf_entry``) writes a leaf into a scratch table; each of
its items must decode to a leaf that translates every byte of that item to the OA the
software meant, with the permissions the prot asked for. Table items must decode to
the table they point to, without restricting anything. The software's own bits (SW
bits) and the hardware's A bit must not change what the other side reads, and the
hardware's D bit must be what the software reports as dirty.

Where the two legitimately differ, the difference is named here (``PERMISSION_QUIRKS``
and the skips), so a new difference fails until someone names it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iommusim.tables import FORMATS, PageTable
from iommusim.tables import iter as it
from iommusim.tables.formats import armv8
from iommusim.tables.prot import READ, WRITE
from iommusim.walker.hwformats import HW_FORMATS, LEAF, NOT_PRESENT, TABLE, HwFormat

TEST_OA = 0x74A71445DEADBEEF
ALL_PROT = 31  # READ | WRITE | CACHE | NOEXEC | MMIO


def test_every_software_format_has_a_hardware_decoder() -> None:
    assert set(HW_FORMATS) == set(FORMATS)


def _hardware_walks(name: str, cfg: dict) -> str | None:
    """Why the modelled hardware cannot walk this cfg's table (None: it can)."""
    if name == "armv8" and cfg.get("features", 0) & (1 << armv8.S2):
        return "the ARMv8 decoder models stage 1 (SMMU CD) walks only"
    return None


def _cases() -> Iterator[object]:
    for name, fmt in FORMATS.items():
        for index, cfg in enumerate(fmt.kunit_cfgs):
            why = _hardware_walks(name, cfg)
            marks = [pytest.mark.skip(reason=why)] if why else []
            yield pytest.param(name, index, id=f"{name}_cfg_{index}", marks=marks)


def _table(name: str, index: int) -> PageTable:
    return PageTable.from_cfg(name, FORMATS[name].kunit_cfgs[index], debug=True)


# --- permissions ---------------------------------------------------------------------
def _read_without_read_bit(name: str, prot: int) -> str | None:
    """Why a leaf mapped without IOMMU_READ may still be readable (None: it must not)."""
    if name == "x86_64":
        return "x86 paging has no read permission: present means readable"
    if name in ("riscv64", "armv8") and prot & WRITE:
        return "no write-only encoding: set_prot sets R with W (RISC-V), AP has none (Arm)"
    if name == "armv8" and not prot & (READ | WRITE):
        return "armv8 quirk: a prot without READ and WRITE maps read-write (AP = 01)"
    return None


def _write_without_write_bit(name: str, prot: int) -> str | None:
    if name == "armv8" and not prot & (READ | WRITE):
        return "armv8 quirk: a prot without READ and WRITE maps read-write (AP = 01)"
    return None


def _check_permissions(name: str, prot: int, readable: bool, writable: bool) -> None:
    where = f"{name} prot {prot:#x}"
    if prot & READ:
        assert readable, f"{where}: READ mapped but the hardware cannot read"
    elif not _read_without_read_bit(name, prot):
        assert not readable, f"{where}: no READ but the hardware can read"
    if prot & WRITE:
        assert writable, f"{where}: WRITE mapped but the hardware cannot write"
    elif not _write_without_write_bit(name, prot):
        assert not writable, f"{where}: no WRITE but the hardware can write"


def test_armv8_prot_without_read_or_write_is_read_write() -> None:
    """The quirk named above, shown on its own: genpt's set_prot marks an Arm stage-1
    entry read-only only for READ without WRITE, so prot 0 (and NOEXEC alone) gives
    AP = 01 and the SMMU reads and writes it. io-pgtable-arm refused such maps."""
    pt = PageTable("armv8")
    hw = HW_FORMATS["armv8"]
    for prot in (0, 8):  # nothing, NOEXEC
        err, attrs = pt.common.fmt.set_prot(pt.common, prot)
        assert err == 0
        item = hw.decode(0, pt.common.fmt.leaf_entry(pt.common, 0, 0x5000, 12, attrs))
        assert (item.kind, item.readable, item.writable) == (LEAF, True, True)


def test_armv8_priv_mappings_are_out_of_a_device_s_reach() -> None:
    """IOMMU_PRIV (no Prot member) leaves AP[1] clear: only privileged accesses may
    use the page, and the modelled SMMU treats device accesses as unprivileged."""
    pt = PageTable("armv8")
    hw = HW_FORMATS["armv8"]
    fmt = pt.common.fmt
    for prot, reach in ((READ | WRITE, True), (READ | WRITE | armv8.IOMMU_PRIV, False)):
        _, attrs = fmt.set_prot(pt.common, prot)
        item = hw.decode(1, fmt.leaf_entry(pt.common, 1, 1 << 21, 21, attrs))
        assert (item.kind, item.readable, item.writable) == (LEAF, reach, reach)


def test_armv8_execute_never_bit_names_are_swapped_in_the_kernel() -> None:
    """A wrong name in a software format, caught by the independent layout: genpt's
    ARMV8PT_FMT_UXN is bit 53, which the Arm ARM calls PXN, and its PXN is bit 54,
    UXN/XN. Harmless: set_prot only ever sets both (IOMMU_NOEXEC)."""
    hw = HW_FORMATS["armv8"]
    assert (armv8.UXN, armv8.PXN) == (hw.PXN, hw.UXN)
    pt = PageTable("armv8")
    for prot in range(ALL_PROT + 1):
        attrs = pt.common.fmt.set_prot(pt.common, prot)[1]
        assert bool(attrs & hw.PXN) == bool(attrs & hw.UXN)


# --- the walk over levels, sizes and prots ---------------------------------------------
def _sizes(pt: PageTable, level: int) -> list[int]:
    bitmap = pt.common.fmt.possible_sizes(pt.common, level) & pt.pgsize_bitmap
    return [b for b in range(64) if bitmap >> b & 1]


def _oas(pt: PageTable, size_lg2: int) -> tuple[int, int]:
    top = (1 << pt.oasz_lg2) - 1
    align = ~((1 << size_lg2) - 1)
    return TEST_OA & top & align, top & align


def _install_leaf(pt: PageTable, level: int, scratch: int, oa: int, lg2: int, attrs: int):
    """The software path writes one leaf at index 0 of a scratch table; its items."""
    c = pt.common
    pts = it.State(it.top_range(c, pt.top_of_table), level, scratch)
    pt.run(it.install_leaf_entry(pts, oa, lg2, attrs))
    n = 1 << (lg2 - c.fmt.isz[level])
    items = [pt.executor.memory.load(scratch + 8 * k) for k in range(n)]
    pt.run(it.clear_entries(pts, lg2 - c.fmt.isz[level]))
    return items


def _check_leaf_items(pt, hw: HwFormat, level, items, oa, prot) -> None:
    """Every item translates its own share of the leaf: first and last byte."""
    isz = pt.common.fmt.isz[level]
    for k, raw in enumerate(items):
        item = hw.decode(level, raw)
        assert item.kind == LEAF, f"level {level} item {k} of {raw:#x}: {item}"
        for va in (k << isz, ((k + 1) << isz) - 1):
            pa = item.addr | (va & ((1 << item.size_lg2) - 1))
            assert pa == oa + va, f"level {level} item {k}: {va:#x} -> {pa:#x}"
        _check_permissions(pt.common.fmt.name, prot, item.readable, item.writable)
        _check_foreign_bits(pt, hw, level, raw, leaf=True)


def _check_foreign_bits(pt: PageTable, hw: HwFormat, level: int, raw: int, leaf: bool) -> None:
    """SW bits are invisible to the hardware; the hardware's A bit (which the walker
    sets in leaves only: RISC-V reserves it in pointers) to the software."""
    c = pt.common
    fmt = c.fmt
    want = hw.decode(level, raw)
    for mask in fmt.sw_bits:
        assert hw.decode(level, raw | mask) == want, f"SW bit {mask:#x} read by hardware"
    if leaf and hw.accessed_bit:
        seen = raw | hw.accessed_bit
        assert fmt.entry_type(level, seen) == fmt.entry_type(level, raw)
        assert fmt.entry_oa(c, level, seen) == fmt.entry_oa(c, level, raw)
        assert hw.decode(level, seen) == want


@pytest.mark.parametrize(("name", "index"), list(_cases()))
def test_leaves_decode_as_encoded(name: str, index: int) -> None:
    pt = _table(name, index)
    hw = HW_FORMATS[name]
    fmt = pt.common.fmt
    scratch = pt.executor.allocator.alloc(12)
    checked = 0
    for level in range(pt.top_level + 1):
        if not fmt.can_have_leaf(level):
            continue
        for lg2 in _sizes(pt, level):
            for prot in range(ALL_PROT + 1):
                err, attrs = fmt.set_prot(pt.common, prot)
                if err:
                    continue
                for oa in _oas(pt, lg2):
                    items = _install_leaf(pt, level, scratch, oa, lg2, attrs)
                    _check_leaf_items(pt, hw, level, items, oa, prot)
                    checked += 1
    assert checked
    assert pt.warnings == []


@pytest.mark.parametrize(("name", "index"), list(_cases()))
def test_tables_and_empty_items_decode_as_encoded(name: str, index: int) -> None:
    pt = _table(name, index)
    hw = HW_FORMATS[name]
    c = pt.common
    child = pt.executor.allocator.alloc(12)
    for level in range(pt.top_level + 1):
        assert hw.decode(level, 0).kind == NOT_PRESENT
        if level == 0:
            continue
        raw = c.fmt.table_entry(c, level, child)
        item = hw.decode(level, raw)
        assert (item.kind, item.addr, item.next_level) == (TABLE, child, level - 1), item
        assert item.readable and item.writable, "a table item restricts the pages below"
        _check_foreign_bits(pt, hw, level, raw, leaf=False)


@pytest.mark.parametrize(("name", "index"), list(_cases()))
def test_hardware_dirty_bit_is_the_software_dirty_state(name: str, index: int) -> None:
    """A write DMA sets the hardware's D bit in a leaf; read_and_clear_dirty must then
    report it, and its cleaning must clear it. Where the hardware has no D bit but the
    software tracks dirt (ARMv8 DBM with CD.HD = 0), a cleaned page must not be
    writable, so that no write is ever lost unseen."""
    pt = _table(name, index)
    hw = HW_FORMATS[name]
    c = pt.common
    fmt = c.fmt
    if not fmt.dirty_supported(c):
        pytest.skip("the software format tracks no dirty state in this cfg")
    _, attrs = fmt.set_prot(c, READ | WRITE)
    for level in range(pt.top_level + 1):
        if not fmt.can_have_leaf(level):
            continue
        clean = fmt.item_make_clean(c, fmt.leaf_entry(c, level, 0, fmt.isz[level], attrs))
        assert not fmt.item_is_dirty(c, clean)
        if hw.dirty_bit:
            assert fmt.item_is_dirty(c, clean | hw.dirty_bit)
            assert fmt.item_make_clean(c, clean | hw.dirty_bit) == clean
        else:
            assert name == "armv8", "only ARMv8 DBM is tracked without a hardware D bit"
            assert not hw.decode(level, clean).writable
