"""pytest port of the kernel's generic-format kunit suite (kunit_generic_pt.h).

Suite ``<fmt>_fmt_test``: the format API is exercised directly, level by level,
through ``check_all_levels``. Every test runs for every format and kunit cfg (ids
``<fmt>_cfg_<n>``); the fixture (``kunit_fmt_priv`` in conftest.py) builds the table
the way ``pt_kunit_priv_init`` does and fails the test if a PT_WARN_ON fired.

The per-level callbacks (``lvl_*``) are generators: they read and write table items
through the transaction helpers of ``tables.iter``, run by the table's executor.
"""

from __future__ import annotations

import pytest

from iommusim.tables import dirty, walk
from iommusim.tables import iter as it
from iommusim.tables import map as pt_map
from iommusim.tables.formats.base import EMPTY, OA, TABLE
from iommusim.tables.log2 import U64, div_eq, ffs, ffz, fls, set_mod, set_mod_max
from iommusim.tables.prot import Prot

PT_VADDR_MAX_LG2 = 64
PT_OADDR_MAX_LG2 = 64
PT_VADDR_MAX = U64
U32 = (1 << 32) - 1


def assert_pt_load(pts: it.State, expected: int):
    """KUNIT_ASSERT_PT_LOAD: reload the item at pts.index and check its type."""
    t = yield from it.load_entry(pts)
    assert t == expected, f"level {pts.level} index {pts.index}: type {t}, expected {expected}"


def ilog2(value: int) -> int:
    return value.bit_length() - 1


# --- test_init / test_bitops ----------------------------------------------------------
def test_init(kunit_fmt_priv) -> None:
    """test_init: the fixture produced a non-empty page-size bitmap."""
    assert kunit_fmt_priv.pgsize_bitmap != 0


def _mod(value: int, lg2: int, width: int) -> int:
    """log2_mod_t(u<width>, value, lg2)."""
    return value & ((1 << width) - 1) & ((1 << lg2) - 1)


def test_bitops(kunit_fmt_priv) -> None:
    """test_bitops: fls/ffs/ffz at the integer limits, and their defining properties
    on random values (u32 and u64)."""
    priv = kunit_fmt_priv

    assert fls(0) == 0
    assert fls(1) == 1
    assert fls(1 << 2) == 3
    assert fls(U32) == 32

    assert fls(0) == 0
    assert fls(1) == 1
    assert fls(1 << 2) == 3
    assert fls(U64) == 64

    assert ffs(1) == 0
    assert ffs(1 << 2) == 2
    assert ffs(1 << 31) == 31

    assert ffs(1) == 0
    assert ffs(1 << 2) == 2
    assert ffs(1 << 63) == 63

    for i in range(31):
        assert ffz((1 << i) - 1) == i
    for i in range(63):
        assert ffz((1 << i) - 1) == i

    for _ in range(32):
        val = priv.random_u64()
        v32 = val & U32
        assert _mod(v32, ffs(v32), 32) == 0
        assert _mod(val, ffs(val), 64) == 0
        assert _mod(v32, ffz(v32), 32) == ((1 << ffz(v32)) - 1) & U32
        assert _mod(val, ffz(val), 64) == ((1 << ffz(val)) - 1) & U64


# --- test_best_pgsize -----------------------------------------------------------------
def ref_best_pgsize(bitmap: int, va: int, last_va: int, oa: int) -> int:
    """The constraints pt_compute_best_pgsize promises, by brute force (64-bit C
    arithmetic: the end of a page may wrap, which the straddle test then rejects)."""
    for lg2 in range(PT_VADDR_MAX_LG2 - 1, 0, -1):
        size = 1 << lg2
        va_end = (va + size - 1) & U64
        oa_end = (oa + size - 1) & U64
        if (
            bitmap & size
            and va & (size - 1) == 0
            and oa & (size - 1) == 0
            and va_end <= last_va
            and div_eq(va, va_end, lg2)
            and div_eq(oa, oa_end, lg2)
        ):
            return lg2
    return 0


def test_best_pgsize(kunit_fmt_priv) -> None:
    """test_best_pgsize: pt_compute_best_pgsize agrees with the brute-force reference
    for random prefixes with every suffix, a zero prefix, an all-ones prefix, an
    empty bitmap, and (64-bit) page sizes above 32 bits."""
    priv = kunit_fmt_priv
    c = priv.common
    rand = priv.random_u64

    def best(bitmap: int, va: int, last_va: int, oa: int) -> int:
        return pt_map.compute_best_pgsize(c, bitmap, va, last_va, oa)

    def random_case(a_lg2: int, b_lg2: int, c_lg2: int, bitmap: int) -> tuple[int, int, int]:
        va = (rand() << a_lg2) & U64
        oa = (rand() << b_lg2) & U64
        last_va = set_mod_max(rand(), c_lg2)
        if va > last_va:
            va, last_va = last_va, va
        return va, last_va, oa

    # Random prefixes, every suffix combination.
    for a_lg2 in range(1, 10):
        for b_lg2 in range(1, 10):
            for c_lg2 in range(1, 10):
                bitmap = rand()
                va, last_va, oa = random_case(a_lg2, b_lg2, c_lg2, bitmap)
                assert best(bitmap, va, last_va, oa) == ref_best_pgsize(bitmap, va, last_va, oa)

    # Zero prefix, every suffix.
    for c_lg2 in range(1, PT_VADDR_MAX_LG2 - 1):
        bitmap = rand()
        last_va = set_mod_max(0, c_lg2)
        assert best(bitmap, 0, last_va, 0) == ref_best_pgsize(bitmap, 0, last_va, 0)

    # All-ones prefix, every suffix.
    for a_lg2 in range(1, 10):
        for b_lg2 in range(1, 10):
            for _c_lg2 in range(1, 10):
                bitmap = rand()
                va = (PT_VADDR_MAX << a_lg2) & U64
                oa = (PT_VADDR_MAX << b_lg2) & U64
                last_va = PT_VADDR_MAX
                assert best(bitmap, va, last_va, oa) == ref_best_pgsize(bitmap, va, last_va, oa)

    # An empty bitmap never yields a page size.
    for a_lg2 in range(1, 10):
        for b_lg2 in range(1, 10):
            for c_lg2 in range(1, 10):
                va, last_va, oa = random_case(a_lg2, b_lg2, c_lg2, 0)
                assert best(0, va, last_va, oa) == 0

    # Page sizes above 32 bits (pt_vaddr_t is 64 bits wide here).
    for a_lg2 in range(32, 42):
        for b_lg2 in range(32, 42):
            for c_lg2 in range(32, 42):
                bitmap = rand()
                va, last_va, oa = random_case(a_lg2, b_lg2, c_lg2, bitmap)
                assert best(bitmap, va, last_va, oa) == ref_best_pgsize(bitmap, va, last_va, oa)


# --- test_table_ptr -------------------------------------------------------------------
def lvl_table_ptr(priv, pts: it.State, arg):
    paddr = set_mod(priv.test_oa, 0, priv.smallest_pgsz_lg2)
    if pts.level == 0:  # !pt_can_have_table
        return
    priv.set_prot(Prot.READ)

    yield from it.load_single_entry(pts)
    yield from assert_pt_load(pts, EMPTY)

    installed = yield from it.install_table(pts, paddr)
    assert installed
    # install_table updated pts.entry, so the same cmpxchg succeeds again.
    installed = yield from it.install_table(pts, paddr)
    assert installed is True

    yield from assert_pt_load(pts, TABLE)
    assert it.table_pa(pts) == paddr

    yield from it.clear_entries(pts, ilog2(1))
    yield from assert_pt_load(pts, EMPTY)


def test_table_ptr(kunit_fmt_priv) -> None:
    """test_table_ptr: at every level that can hold a table, install_table followed
    by table_pa gives back the address, and clear_entries empties the slot."""
    kunit_fmt_priv.check_all_levels(lvl_table_ptr)


# --- test_max_va / test_table_radix ---------------------------------------------------
def test_max_va(kunit_fmt_priv) -> None:
    """test_max_va: the table's max_vasz is at least the top range's span."""
    priv = kunit_fmt_priv
    assert priv.common.max_vasz_lg2 >= priv.top_range().max_vasz_lg2


def lvl_radix(priv, pts: it.State, radix: list[int]) -> None:
    table_lg2sz = it.table_oa_lg2sz(pts)
    isz_lg2 = it.isz(pts)

    # Every VA bit below this level is decoded by the levels below.
    assert set_mod_max(0, isz_lg2) == radix[0]
    # ... and none at or above it.
    assert radix[0] >> isz_lg2 == 0
    # A table cannot decode past the width of pt_vaddr_t.
    assert table_lg2sz <= PT_VADDR_MAX_LG2
    assert table_lg2sz >> priv.fmt.max_va_lg2 == 0

    radix[0] = set_mod_max(0, table_lg2sz)


def test_table_radix(kunit_fmt_priv) -> None:
    """test_table_radix: table_oa_lg2sz and item_lg2sz decode one contiguous run of
    VA bits across the levels, covering exactly the advertised VA space."""
    priv = kunit_fmt_priv
    radix = [priv.smallest_pgsz - 1]
    priv.check_all_levels(lvl_radix, radix)

    rng = priv.top_range()
    if rng.max_vasz_lg2 == PT_VADDR_MAX_LG2:
        assert radix[0] == PT_VADDR_MAX
    else:
        assert set_mod_max(0, rng.max_vasz_lg2) == radix[0]
        assert radix[0] >> rng.max_vasz_lg2 == 0


# --- test_entry_possible_sizes --------------------------------------------------------
def safe_num_items_lg2(priv, pts: it.State) -> int:
    """The top table's size comes from the top range, never from num_items_lg2."""
    top = priv.top_range()
    top_pts = it.State(top, top.top_level, top.top_table)
    if pts.level == top.top_level:
        return ilog2(it.range_to_end_index(top_pts))
    return priv.fmt.num_items_lg2(priv.common, pts.level)


def lvl_possible_sizes(priv, pts: it.State, arg) -> None:
    num_items_lg2 = safe_num_items_lg2(priv, pts)
    bitmap = priv.fmt.possible_sizes(priv.common, pts.level)
    isz_lg2 = it.isz(pts)

    if not priv.fmt.can_have_leaf(pts.level):
        assert bitmap == 0
        return

    # No size smaller than an item or larger than the table.
    assert bitmap & ((1 << isz_lg2) - 1) == 0
    assert bitmap >> (num_items_lg2 + isz_lg2) == 0

    # The single-item size is always possible, except on the AMDv1 level hit by the
    # 512 GiB hardware bug (the kernel names the format, so does the port).
    if bitmap != 0xFF0000000000 or priv.name != "amdv1":
        assert bitmap & (1 << isz_lg2)
    else:
        assert bitmap != 0

    # A contiguous entry never spans the whole table.
    if num_items_lg2 + isz_lg2 != PT_VADDR_MAX_LG2:
        assert not bitmap & (1 << (num_items_lg2 + isz_lg2))


def test_entry_possible_sizes(kunit_fmt_priv) -> None:
    """test_entry_possible_sizes: each level's possible_sizes bitmap is consistent
    with the level's item size and table size."""
    kunit_fmt_priv.check_all_levels(lvl_possible_sizes)


# --- test_entry_oa --------------------------------------------------------------------
def sweep_all_pgsizes(priv, pts: it.State, attrs: int, test_oaddr: int):
    bitmap = priv.fmt.possible_sizes(priv.common, pts.level)
    isz_lg2 = it.isz(pts)
    if pts.index != 0:
        return
    for len_lg2 in range(PT_VADDR_MAX_LG2 - 1):
        if not bitmap & (1 << len_lg2):
            continue
        sub = priv.copy_state(pts)
        oaddr = set_mod(test_oaddr, 0, len_lg2)
        yield from it.install_leaf_entry(pts, oaddr, len_lg2, attrs)
        # Every item of a contiguous block translates its own part of the OA.
        for sub.index in range(1 << (len_lg2 - isz_lg2)):
            yield from assert_pt_load(sub, OA)
            assert it.item_oa(sub) == oaddr + sub.index * (1 << isz_lg2)
            assert it.entry_oa(sub) == oaddr
            assert it.num_contig_lg2(sub) == len_lg2 - isz_lg2

        yield from it.clear_entries(pts, len_lg2 - isz_lg2)
        yield from assert_pt_load(pts, EMPTY)


def lvl_entry_oa(priv, pts: it.State, arg):
    max_oa_lg2 = priv.common.max_oasz_lg2
    if not priv.fmt.can_have_leaf(pts.level):
        return
    attrs = priv.set_prot(Prot.READ)

    yield from sweep_all_pgsizes(priv, pts, attrs, priv.test_oa)
    # The boundary OAs must be representable too.
    yield from sweep_all_pgsizes(priv, pts, attrs, 0)
    if max_oa_lg2 == PT_OADDR_MAX_LG2:
        yield from sweep_all_pgsizes(priv, pts, attrs, U64)
    else:
        yield from sweep_all_pgsizes(priv, pts, attrs, (1 << max_oa_lg2) - 1)


def test_entry_oa(kunit_fmt_priv) -> None:
    """test_entry_oa: install_leaf_entry and entry_oa/item_oa/num_contig agree for
    every possible size at every level, for a test OA, 0 and the largest OA; and
    clear_entries empties the whole block."""
    kunit_fmt_priv.check_all_levels(lvl_entry_oa)


# --- test_attr_from_entry -------------------------------------------------------------
ALL_PROT = Prot.READ | Prot.WRITE | Prot.CACHE | Prot.NOEXEC | Prot.MMIO


def lvl_attr_from_entry(priv, pts: it.State, arg):
    fmt = priv.fmt
    bitmap = fmt.possible_sizes(priv.common, pts.level)
    isz_lg2 = it.isz(pts)
    if not fmt.can_have_leaf(pts.level):
        return
    for len_lg2 in range(PT_VADDR_MAX_LG2):
        if not bitmap & (1 << len_lg2):
            continue
        for prot in range(ALL_PROT + 1):
            err, attrs = fmt.set_prot(priv.common, prot)
            if err:
                # A format may refuse some combinations, never READ | WRITE.
                assert prot != Prot.READ | Prot.WRITE
                continue

            oaddr = set_mod(priv.test_oa, 0, len_lg2)
            yield from it.install_leaf_entry(pts, oaddr, len_lg2, attrs)
            yield from assert_pt_load(pts, OA)
            good_entry = pts.entry

            attrs = fmt.attr_from_entry(pts.entry)

            yield from it.clear_entries(pts, len_lg2 - isz_lg2)
            yield from assert_pt_load(pts, EMPTY)

            yield from it.install_leaf_entry(pts, oaddr, len_lg2, attrs)
            yield from assert_pt_load(pts, OA)
            # The attributes read back rebuild exactly the same entry.
            assert pts.entry == good_entry

            yield from it.clear_entries(pts, len_lg2 - isz_lg2)


def test_attr_from_entry(kunit_fmt_priv) -> None:
    """test_attr_from_entry: for every leaf size and every accepted prot, the attrs
    attr_from_entry extracts reproduce the identical entry; READ|WRITE is accepted."""
    kunit_fmt_priv.check_all_levels(lvl_attr_from_entry)


# --- test_dirty -----------------------------------------------------------------------
def dirty_supported(priv) -> bool:
    """pt_dirty_supported: formats with dirty helpers support it; ARMv8 overrides the
    default and asks for PT_FEAT_ARMV8_DBM."""
    return priv.fmt.dirty_supported(priv.common)


def lvl_dirty(priv, pts: it.State, arg):
    bitmap = priv.fmt.possible_sizes(priv.common, pts.level)
    isz_lg2 = it.isz(pts)
    start_idx = pts.index
    if not priv.fmt.can_have_leaf(pts.level):
        return
    attrs = priv.set_prot(Prot.READ | Prot.WRITE)

    for len_lg2 in range(PT_VADDR_MAX_LG2):
        if not bitmap & (1 << len_lg2):
            continue
        oaddr = set_mod(priv.test_oa, 0, len_lg2)
        yield from it.install_leaf_entry(pts, oaddr, len_lg2, attrs)
        yield from assert_pt_load(pts, OA)

        yield from it.load_entry(pts)
        yield from dirty.make_write_clean(pts)
        yield from it.load_entry(pts)
        assert not (yield from dirty.is_write_dirty(pts))

        for i in range(1 << (len_lg2 - isz_lg2)):
            # Dirtying any item of the block makes the whole entry dirty.
            pts.index = start_idx + i
            yield from it.load_entry(pts)
            assert (yield from walk.make_write_dirty(pts))
            pts.index = start_idx
            yield from it.load_entry(pts)
            assert (yield from dirty.is_write_dirty(pts))

            yield from dirty.make_write_clean(pts)
            yield from it.load_entry(pts)
            assert not (yield from dirty.is_write_dirty(pts))

        yield from it.clear_entries(pts, len_lg2 - isz_lg2)


def test_dirty(kunit_fmt_priv) -> None:
    """test_dirty: make_write_dirty on any item of a leaf block makes is_write_dirty
    true for the block, and make_write_clean clears it, for every leaf size."""
    priv = kunit_fmt_priv
    if not dirty_supported(priv):
        pytest.skip("Page table features do not support dirty tracking")
    priv.check_all_levels(lvl_dirty)


# --- test_sw_bit_leaf / test_sw_bit_table ---------------------------------------------
def set_every_sw_bit(fmt, pts: it.State):
    """All SW bits of the item start clear; each, set in turn, reads back set (it was
    still clear before); at the end all are set."""
    bits = range(fmt.max_sw_bit + 1)
    for bitnr in bits:
        assert not (yield from pt_map.test_sw_bit_acquire(pts, bitnr))
    for bitnr in bits:
        assert not (yield from pt_map.test_sw_bit_acquire(pts, bitnr))
        yield from pt_map.set_sw_bit_release(pts, bitnr)
        assert (yield from pt_map.test_sw_bit_acquire(pts, bitnr))
    for bitnr in bits:
        assert (yield from pt_map.test_sw_bit_acquire(pts, bitnr))


def lvl_sw_bit_leaf(priv, pts: it.State, arg):
    fmt = priv.fmt
    bitmap = fmt.possible_sizes(priv.common, pts.level)
    isz_lg2 = it.isz(pts)
    if not fmt.can_have_leaf(pts.level):
        return
    if pts.index != 0:
        return
    attrs = priv.set_prot(Prot.READ)

    for len_lg2 in range(PT_VADDR_MAX_LG2 - 1):
        paddr = set_mod(priv.test_oa, 0, len_lg2)
        if not bitmap & (1 << len_lg2):
            continue
        yield from it.install_leaf_entry(pts, paddr, len_lg2, attrs)

        yield from set_every_sw_bit(fmt, pts)

        assert it.item_oa(pts) == paddr

        # The SW bits are not part of the attributes.
        assert fmt.attr_from_entry(pts.entry) == attrs

        yield from it.clear_entries(pts, len_lg2 - isz_lg2)
        yield from assert_pt_load(pts, EMPTY)


@pytest.mark.kunit_requires("sw_bit")
def test_sw_bit_leaf(kunit_fmt_priv) -> None:
    """test_sw_bit_leaf: every SW bit of a leaf starts clear, sets individually, and
    changes neither the OA nor the attributes."""
    kunit_fmt_priv.check_all_levels(lvl_sw_bit_leaf)


def lvl_sw_bit_table(priv, pts: it.State, arg):
    fmt = priv.fmt
    paddr = set_mod(priv.test_oa, 0, priv.smallest_pgsz_lg2)
    if not fmt.can_have_leaf(pts.level):
        return
    if pts.index != 0:
        return
    priv.set_prot(Prot.READ)

    installed = yield from it.install_table(pts, paddr)
    assert installed

    yield from set_every_sw_bit(fmt, pts)

    assert it.table_pa(pts) == paddr

    yield from it.clear_entries(pts, ilog2(1))
    yield from assert_pt_load(pts, EMPTY)


@pytest.mark.kunit_requires("sw_bit")
def test_sw_bit_table(kunit_fmt_priv) -> None:
    """test_sw_bit_table: every SW bit of a table item starts clear, sets
    individually, and does not change the table address."""
    kunit_fmt_priv.check_all_levels(lvl_sw_bit_table)
