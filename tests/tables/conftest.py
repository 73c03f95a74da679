"""Fixture and helpers shared by the pytest port of the iommupt kunit suites.

The kunit suites (drivers/iommu/generic_pt/kunit_generic_pt.h and kunit_iommu_pt.h)
run every test once per entry of the format's ``kunit_fmt_cfgs``; the fixture
(kunit_iommu.h, ``pt_kunit_priv_init``) turns on every debug-supported feature the
cfg list does not control, initialises the table and derives a few values the tests
share. ``KunitPriv`` is that fixture's private data plus the helpers both suites use
(``do_map``, ``do_unmap``, ``check_iova``, ``count_valids``, ...).

Tests ask for the ``kunit_cfg`` parameter through ``kunit_fmt_priv`` (generic suite)
or ``kunit_iommu_priv`` (IOMMU suite, which also checks that deinit leaves no table
page behind). ``pytest_generate_tests`` parametrises them over every format in
``FORMATS`` and every cfg, with ids like ``x86_64_cfg_2``. A test marked
``kunit_requires("sw_bit")`` only runs for formats that define SW bits: the kernel
compiles those tests only ``#ifdef pt_sw_bit``.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iommusim.tables import FORMATS, PageTable, PTError, walk
from iommusim.tables import features as F
from iommusim.tables import iter as it
from iommusim.tables.errors import EOVERFLOW
from iommusim.tables.formats.base import OA, TABLE, Format
from iommusim.tables.log2 import U64, ffs, fls, set_mod_max
from iommusim.tables.prot import RW

# The kunit runs on a 64-bit kernel: pt_vaddr_t and unsigned long are 64 bits wide.
PT_VADDR_MAX_LG2 = 64
U32_MAX = (1 << 32) - 1
TEST_OA_PATTERN = 0x74A71445DEADBEEF


# --- parametrisation --------------------------------------------------------------------
def _format_has(fmt: Format, need: str) -> bool:
    if need == "sw_bit":
        return bool(fmt.sw_bits)  # the format defines pt_sw_bit
    raise ValueError(f"unknown kunit requirement {need!r}")


def kunit_params(needs: tuple[str, ...] = ()) -> list[Any]:
    """(format name, cfg index) for every format and kunit cfg, named as kunit does."""
    params = []
    for name, fmt in FORMATS.items():
        if not all(_format_has(fmt, need) for need in needs):
            continue
        for index in range(len(fmt.kunit_cfgs)):
            params.append(pytest.param((name, index), id=f"{name}_cfg_{index}"))
    return params


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kunit_requires(*what): only run for formats that compile the kernel test "
        "(e.g. 'sw_bit' for #ifdef pt_sw_bit)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kunit_cfg" not in metafunc.fixturenames:
        return
    needs: tuple[str, ...] = ()
    for marker in metafunc.definition.iter_markers("kunit_requires"):
        needs += tuple(marker.args)
    metafunc.parametrize("kunit_cfg", kunit_params(needs))


# --- the fixture's private data -------------------------------------------------------
class KunitPriv:
    """struct kunit_iommu_priv: the table under test and the values derived at init."""

    def __init__(self, fmt_name: str, cfg_index: int, seed: str) -> None:
        fmt = FORMATS[fmt_name]
        self.fmt = fmt
        self.name = fmt_name
        cfg = dict(fmt.kunit_cfgs[cfg_index])
        # Features the cfg list does not control default to on (debug build set).
        cfg["features"] = cfg.get("features", 0) | (
            fmt.supported_features(True) & ~fmt.kunit_fmt_features
        )
        # 0 means "the format's maximum" (from_cfg applies the fixture's defaults).
        cfg.setdefault("hw_max_vasz_lg2", 0)
        cfg.setdefault("hw_max_oasz_lg2", 0)
        self.cfg = cfg
        try:
            self.pt = PageTable.from_cfg(fmt_name, cfg, debug=True)
        except PTError as err:
            if err.errno == EOVERFLOW:
                pytest.skip("This configuration cannot be tested on 32 bit")
            raise
        self.common = self.pt.common
        self.run = self.pt.executor.run
        self.rng = random.Random(seed)
        self.derive_values()

    def derive_values(self) -> None:
        """The values pt_kunit_priv_init derives from the initialised table (also used
        by fixtures that build their table another way, e.g. an old driver's)."""
        # get_info(); size_t is 64 bits, so the truncation changes nothing.
        self.pgsize_bitmap = self.pt.pgsize_bitmap & U64
        self.smallest_pgsz_lg2 = ffs(self.pgsize_bitmap)
        self.smallest_pgsz = 1 << self.smallest_pgsz_lg2
        self.largest_pgsz_lg2 = fls(self.pgsize_bitmap) - 1
        self.test_oa = TEST_OA_PATTERN & ((1 << self.common.max_oasz_lg2) - 1)
        # Page sizes below half the VA space, safe to pass through dma_addr_t.
        va_lg2sz = self.common.max_vasz_lg2
        self.safe_pgsize_bitmap = self.pgsize_bitmap & ((1 << (va_lg2sz - 1)) - 1)

    # --- randomness (get_random_*) ------------------------------------------------------
    def random_u64(self) -> int:
        return self.rng.getrandbits(64)

    def random_u32_below(self, ceil: int) -> int:
        assert 0 < ceil <= U32_MAX
        return self.rng.randrange(ceil)

    def random_u32_inclusive(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    # --- ranges (pt_iter.h) -------------------------------------------------------------
    def feature(self, f: int) -> bool:
        return self.common.feature(f)

    def top_of_table(self) -> int:
        """READ_ONCE(common->top_of_table)."""
        return self.pt.top_of_table

    def top_range(self) -> it.Range:
        return it.top_range(self.common, self.top_of_table())

    def upper_range(self) -> it.Range:
        return it.upper_range(self.common, self.top_of_table())

    def make_range(self, va: int, last_va: int) -> it.Range:
        return it.make_range(self.common, self.top_of_table(), va, last_va)

    def set_prot(self, prot: int) -> int:
        """pt_iommu_set_prot: asserts success and returns the descriptor bits."""
        err, attrs = self.fmt.set_prot(self.common, prot)
        assert err == 0, f"errno {err} from pt_iommu_set_prot"
        return attrs

    # --- the iommu API ------------------------------------------------------------------
    def iommu_map(self, va: int, pa: int, length: int, prot: int = RW) -> int:
        return self.run(self.pt.map_op(va, pa, length, prot))

    def iommu_unmap(self, va: int, length: int) -> int:
        return self.run(self.pt.unmap_op(va, length))

    def do_map(self, va: int, pa: int, length: int) -> None:
        """iommu_map(READ | WRITE) must succeed."""
        assert length == length & U64
        ret = self.iommu_map(va, pa, length, RW)
        assert ret == 0, f"errno {ret} from map_pages ({va:#x}, {pa:#x}, {length:#x})"

    def do_unmap(self, va: int, length: int) -> None:
        """iommu_unmap must unmap exactly the requested length."""
        ret = self.iommu_unmap(va, length)
        assert ret == length, f"unmap {va:#x}+{length:#x} returned {ret:#x}"

    def check_iova(self, va: int, pa: int, length: int) -> None:
        """kunit check_iova: iova_to_phys of every smallest page of [va, va+len) is pa
        plus the page's offset.

        The kernel asks once per page. Every page under one leaf entry takes the same
        walk (the indexes come from the IOVA bits above the leaf) and differs only in
        the offset OR-ed into the leaf's OA, so the port asks iova_to_phys of the first
        and the last page of each leaf's share of the range, and the walk reports how
        far the leaf reaches: the same assertion for every page, at two walks per leaf
        instead of up to 2^18 (a 1 GiB leaf of 4 KiB pages)."""
        s = self.smallest_pgsz
        run = self.run
        common = self.common
        lookup_leaf = walk.lookup_leaf
        top = self.top_of_table()  # the walks start here, not at a word in memory
        iova, end = va, va + length
        while iova < end:
            ret, res, leaf_lg2 = run(lookup_leaf(common, iova, top))
            expect = pa + (iova - va)
            assert ret == 0 and res == expect, (
                f"iova_to_phys({iova:#x}) = {res:#x} (errno {ret}), expected {expect:#x}"
            )
            leaf_end = min(end, ((iova >> leaf_lg2) + 1) << leaf_lg2)
            last = leaf_end - s
            if last != iova:
                ret, res = run(walk.lookup(common, last, top))
                expect = pa + (last - va)
                assert ret == 0 and res == expect, (
                    f"iova_to_phys({last:#x}) = {res:#x} (errno {ret}), expected {expect:#x}"
                )
            iova = leaf_end

    # --- counting leaves ----------------------------------------------------------------
    def _count_valids_walk(self, rng: it.Range, per_size: list[int], level: int, table: int):
        """__count_valids: count OA entries per entry size; a contiguous entry is one."""
        pts = it.State(rng, level, table)
        it.iter_first(pts)
        while pts.index < pts.end_index:
            t = yield from it.load_entry(pts)
            if t == TABLE:
                yield from it.descend(pts, self._count_valids_walk, per_size)
            elif t == OA:
                per_size[it.entry_oa_lg2sz(pts)] += 1
            it.next_entry(pts)
        return 0

    def valids_per_size(self) -> list[int]:
        """Walk pt_top_range (the lower half with SIGN_EXTEND); counts by size lg2."""
        rng = self.top_range()
        per_size = [0] * PT_VADDR_MAX_LG2
        ret = self.run(self._count_valids_walk(rng, per_size, rng.top_level, rng.top_table))
        assert ret == 0
        return per_size

    def count_valids(self) -> int:
        return sum(self.valids_per_size())

    def count_valids_single(self, pgsz: int) -> int:
        """Only one page size may be present; returns how many entries of it."""
        total = 0
        for lg2, count in enumerate(self.valids_per_size()):
            if 1 << lg2 == pgsz:
                total = count
            else:
                assert count == 0, f"{count} entries of size 2^{lg2}, only {pgsz:#x} expected"
        return total

    # --- check_all_levels (kunit_generic_pt.h) -------------------------------------------
    def check_all_levels(self, fn: Callable[..., Any], arg: Any = None) -> None:
        """Map one smallest page at the highest VA, walk down its path checking the
        indexes, then run ``fn(priv, pts, arg)`` bottom-up at each level
        on a free slot: index 0, or 1 when increase_top put the old top at index 0."""
        rng = self.top_range()
        if self.feature(F.DYNAMIC_TOP) and self.common.max_vasz_lg2 > rng.max_vasz_lg2:
            rng.last_va = set_mod_max(rng.va, self.common.max_vasz_lg2)
        rng.va = rng.last_va - (self.smallest_pgsz - 1)
        self.do_map(rng.va, 0, self.smallest_pgsz)

        rng = self.make_range(rng.va, rng.last_va)
        ret = self.run(self._check_all_levels(rng, (fn, arg), rng.top_level, rng.top_table))
        assert ret == 0

    def _check_all_levels(self, rng: it.Range, chk: tuple[Any, Any], level: int, table: int):
        fn, arg = chk
        pts = it.State(rng, level, table)
        it.iter_first(pts)

        # The path to the highest VA always uses the last index of each table.
        isz = it.isz(pts)
        if self.feature(F.SIGN_EXTEND) and pts.level == rng.top_level:
            expect = (1 << (rng.max_vasz_lg2 - 1 - isz)) - 1
        else:
            expect = (1 << (it.table_oa_lg2sz(pts) - isz)) - 1
        assert pts.index == expect, f"level {level}: index {pts.index}, expected {expect}"

        if pts.level > 0:  # pt_can_have_table
            t = yield from it.load_single_entry(pts)
            assert t == TABLE, f"level {level}: the path entry is not a table"
            ret = yield from it.descend(pts, self._check_all_levels, chk)
            assert ret == 0
            # Index 0 is the test's slot, so the path must not use it.
            assert pts.index != 0

        # One-item tables would leave no free slot for the test.
        assert pts.end_index > 1

        # increase_top leaves the old top at index 0: test on index 1 instead.
        pts.index = 0
        it.index_to_va(pts)
        t = yield from it.load_single_entry(pts)
        if t == TABLE and pts.end_index > 2:
            pts.index = 1
            it.index_to_va(pts)
        res = fn(self, pts, arg)
        if inspect.isgenerator(res):  # callbacks that touch memory are generators
            yield from res
        return 0

    # --- state helpers ------------------------------------------------------------------
    @staticmethod
    def copy_state(pts: it.State) -> it.State:
        """A struct copy of a pt_state (the range is shared, as in C)."""
        sub = it.State(pts.range, pts.level, pts.table)
        sub.table_lower = pts.table_lower
        sub.entry = pts.entry
        sub.type = pts.type
        sub.index = pts.index
        sub.end_index = pts.end_index
        return sub


def _make_priv(request: pytest.FixtureRequest, kunit_cfg: tuple[str, int]) -> KunitPriv:
    name, index = kunit_cfg
    return KunitPriv(name, index, seed=request.node.name)


@pytest.fixture
def kunit_fmt_priv(
    request: pytest.FixtureRequest, kunit_cfg: tuple[str, int]
) -> Iterator[KunitPriv]:
    """pt_kunit_generic_pt_init / _exit: set up the table, deinit it afterwards."""
    priv = _make_priv(request, kunit_cfg)
    yield priv
    priv.pt.deinit()
    assert priv.pt.warnings == [], "PT_WARN_ON fired"


@pytest.fixture
def kunit_iommu_priv(
    request: pytest.FixtureRequest, kunit_cfg: tuple[str, int]
) -> Iterator[KunitPriv]:
    """pt_kunit_iommu_init / _exit: as the generic fixture, and after deinit no table
    page may be left (the kunit's NR_SECONDARY_PAGETABLE check)."""
    priv = _make_priv(request, kunit_cfg)
    yield priv
    kunit_iommu_exit(priv)


def kunit_iommu_exit(priv: KunitPriv) -> None:
    """pt_kunit_iommu_exit: deinit; no table page left, no PT_WARN_ON fired."""
    priv.pt.deinit()
    assert priv.pt.live_table_pages == 0, "table pages leaked"
    assert priv.pt.warnings == [], "PT_WARN_ON fired"
