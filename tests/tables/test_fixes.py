"""The fix switches (ARCHITECTURE.md 4, generic_pt.md 8): each one on and off.

Every test shows the historical behaviour with the switch off and the fixed one with
it on, through what the code does to memory, the allocator and the IOMMU commands
-- not through the switch value itself.
"""

from __future__ import annotations

import dataclasses
import errno
from typing import Any

import pytest

from iommusim.tables import (
    FIX_DESCRIPTIONS,
    DirectExecutor,
    FaultInjector,
    Fixes,
    PageTable,
    Prot,
    PTError,
)
from iommusim.tables.fixes import GENPT_FIXES, IOPGTABLE_FIXES
from iommusim.tables.formats import x86_64 as x86
from iommusim.tables.transactions import (
    CAUSE_UNMAP,
    FLUSH,
    FREE_TABLE,
    INVALIDATE_RANGE,
    WAIT_INVALIDATION,
)

RW = Prot.READ | Prot.WRITE
U64 = (1 << 64) - 1
SZ_2M = 2 << 20

SWITCHES = [
    "flush_done_sw_bit",
    "increase_top",
    "table_alloc_error",
    "unmap_flush_changed_only",
    "gather_always_add_range",
    "gather_unmapped_length",
    "vtd_top_level",
    "cache_flush",
    "free_after_sync",
    "dirty_clear_flush",
]


class RecordingExecutor(DirectExecutor):
    """A direct executor that also logs every transaction it performs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log: list[tuple] = []

    def execute(self, tx: tuple, cpu: int = 0) -> Any:
        self.log.append(tx)
        return super().execute(tx, cpu)


def invalidations(pt: PageTable) -> list[tuple[int, int]]:
    """(iova, size) of every INVALIDATE_RANGE the driver glue sent."""
    return [(c[2], c[3]) for c in pt.executor.commands if c[0] == INVALIDATE_RANGE]


# --- the switches themselves ---------------------------------------------------------------
def test_every_switch_exists_defaults_on_and_is_described() -> None:
    """The ten genpt switches of ARCHITECTURE.md 4 exist (GENPT_FIXES), followed by the
    io-pgtable-only ones; all default to on (fixed), each has a description and
    nothing else does; a table built without fixes has them all on."""
    assert list(GENPT_FIXES) == SWITCHES
    every = [*SWITCHES, *IOPGTABLE_FIXES]
    assert [f.name for f in dataclasses.fields(Fixes)] == every
    assert Fixes().as_dict() == dict.fromkeys(every, True)
    assert set(FIX_DESCRIPTIONS) == set(every)
    assert all(FIX_DESCRIPTIONS[name].strip() for name in every)
    assert all("io-pgtable" in FIX_DESCRIPTIONS[name] for name in IOPGTABLE_FIXES)
    assert PageTable("x86_64").fixes == Fixes()
    off = PageTable("x86_64", fixes={"cache_flush": False}).fixes
    assert off.as_dict() == {**dict.fromkeys(every, True), "cache_flush": False}


@pytest.mark.parametrize(
    "make",
    [
        lambda: Fixes.from_mapping({"flush_done_bit": False}),
        lambda: PageTable("x86_64", fixes={"no_such_fix": True}),
    ],
    ids=["Fixes.from_mapping", "PageTable"],
)
def test_unknown_switch_is_an_error_listing_valid_ones(make) -> None:
    """An unknown switch name is rejected with a message naming every valid one."""
    with pytest.raises(ValueError) as err:
        make()
    for name in SWITCHES:
        assert name in str(err.value)


def test_switch_values_must_be_booleans() -> None:
    """A switch given something other than True/False is rejected."""
    with pytest.raises(ValueError, match="cache_flush"):
        Fixes.from_mapping({"cache_flush": "no"})


# --- table_alloc_error (7a089c5d) ------------------------------------------------------------
# Each scenario: a table with one page mapped, then a map that needs several new
# tables (and, for AMDv1, a new top).
ALLOC_SCENARIOS = {
    "x86_64": ("x86_64", {"features": {"sign_extend"}}, (1 << 30) - 0x2000, 0x4000),
    "x86_64_incoherent": (
        "x86_64",
        {"features": {"sign_extend", "dma_incoherent"}},
        (1 << 30) - 0x2000,
        0x4000,
    ),
    "vtdss_incoherent": ("vtdss", {"features": {"dma_incoherent"}}, (1 << 39) - 0x2000, 0x4000),
    "amdv1_growth": ("amdv1", {}, (1 << 39) - 0x2000, 0x4000),
    "riscv64": ("riscv64", {"vasz_lg2": 39}, (1 << 30) - 0x2000, 0x4000),
}
OLD_IOVA, OLD_PA, NEW_PA = 0x1000, 0x7000_1000, 0x9000_0000


def alloc_table(name: str, fix: bool, debug: bool = True) -> PageTable:
    fmt, kwargs, _, _ = ALLOC_SCENARIOS[name]
    if fmt == "amdv1" and not debug:
        # A production build requires the format's forced features to be asked for.
        kwargs = {"features": {"dynamic_top", "amdv1_encrypt_tables", "amdv1_force_coherence"}}
    pt = PageTable(fmt, fixes={"table_alloc_error": fix}, debug=debug, **kwargs)
    pt.map(OLD_IOVA, OLD_PA, 0x1000, RW)
    return pt


def allocations_of_new_map(name: str) -> int:
    pt = alloc_table(name, True)
    _, _, iova, size = ALLOC_SCENARIOS[name]
    before = pt.executor.allocator.allocations
    pt.map(iova, NEW_PA, size, RW)
    return pt.executor.allocator.allocations - before


@pytest.mark.parametrize("name", list(ALLOC_SCENARIOS))
def test_table_alloc_error_fixed(name: str) -> None:
    """Fix on: failing any one of the map's allocations gives -ENOMEM, leaves the
    table as it was (old IOVA unchanged in both views, new range unmapped, even the
    part mapped before the failure) and leaks nothing after deinit."""
    _, _, iova, size = ALLOC_SCENARIOS[name]
    n_allocs = allocations_of_new_map(name)
    assert n_allocs >= 3
    for nth in range(1, n_allocs + 1):
        pt = alloc_table(name, True)
        top_before = pt.top_level
        pt.executor.allocator.faults = FaultInjector(fail_nth=nth)
        with pytest.raises(PTError) as err:
            pt.map(iova, NEW_PA, size, RW)
        assert err.value.errno == errno.ENOMEM, f"allocation {nth}"
        assert pt.executor.allocator.faults.failures == 1
        for view in ("cpu", "hw"):
            assert pt.iova_to_phys(OLD_IOVA, view=view) == OLD_PA
            for page in range(iova, iova + size, 0x1000):
                assert pt.iova_to_phys(page, view=view) is None, f"allocation {nth}"
        assert pt.top_level >= top_before
        assert not any(s.table_pa == 0 for s in pt.walk(iova) + pt.walk(iova + size - 1))
        pt.deinit()
        assert pt.live_table_pages == 0, f"allocation {nth}: pages leaked"
        assert pt.executor.allocator.bad_frees == []


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
@pytest.mark.parametrize("name", list(ALLOC_SCENARIOS))
def test_table_alloc_error_historical(name: str, debug: bool) -> None:
    """Fix off (before 7a089c5d): a failed allocation returns NULL, which is linked
    into the tree as a table at physical address 0 -- the walk of the new range reads
    page 0 -- and deinit later "frees" page 0."""
    _, _, iova, size = ALLOC_SCENARIOS[name]
    for nth in range(1, allocations_of_new_map(name) + 1):
        pt = alloc_table(name, False, debug=debug)
        pt.executor.allocator.faults = FaultInjector(fail_nth=nth)
        try:
            pt.map(iova, NEW_PA, size, RW)
        except PTError as err:
            # The debug build's NULL check in pt_descend stops the walk (-EINVAL).
            assert debug and err.errno == errno.EINVAL
        pages = range(iova, iova + size, 0x1000)
        assert any(s.table_pa == 0 for p in pages for s in pt.walk(p)), f"allocation {nth}"
        assert pt.iova_to_phys(OLD_IOVA) == OLD_PA
        pt.deinit()
        assert 0 in pt.executor.allocator.bad_frees


@pytest.mark.parametrize("fix", [False, True], ids=["fix_off", "fix_on"])
def test_table_alloc_error_at_init(fix: bool) -> None:
    """A failed top-table allocation at init: -ENOMEM with the fix; without it the
    NULL top is published (the table's top is physical page 0)."""
    kwargs = {"fixes": {"table_alloc_error": fix}, "alloc_faults": FaultInjector(fail_nth=1)}
    if fix:
        with pytest.raises(PTError) as err:
            PageTable("x86_64", **kwargs)
        assert err.value.errno == errno.ENOMEM
    else:
        pt = PageTable("x86_64", **kwargs)
        assert pt.top_table_pa == 0
        assert pt.executor.roots[pt.common.domain][0] == 0


# --- unmap_flush_changed_only (5815d930, spec 5.6) -----------------------------------------------
@pytest.mark.parametrize("fmt", ["x86_64", "vtdss"])
@pytest.mark.parametrize("fix, items", [(False, 4), (True, 1)], ids=["fix_off", "fix_on"])
def test_unmap_flush_changed_only(fmt: str, fix: bool, items: int) -> None:
    """Unmapping one 4 KiB page of a 4-level incoherent table flushes one item per
    visited level (4 items, 32 bytes) before the fix, only the cleared leaf (1 item,
    8 bytes) after it; either way the hardware stops translating it."""
    pt = PageTable(
        fmt,
        vasz_lg2=48,
        top_level=3,
        features={"dma_incoherent"},
        fixes={"unmap_flush_changed_only": fix},
    )
    pt.map(0x4000_0000, 0x1000_0000, 0x1000, RW)
    ex = pt.executor
    ex.flush_bytes.clear()
    ex.flush_lines.clear()
    assert pt.unmap(0x4000_0000, 0x1000) == 0x1000
    assert dict(ex.flush_bytes) == {CAUSE_UNMAP: 8 * items}
    assert dict(ex.flush_lines) == {CAUSE_UNMAP: items}
    assert pt.iova_to_phys(0x4000_0000, view="hw") is None


# --- gather_always_add_range (b48ca920) ----------------------------------------------------
@pytest.mark.parametrize("fix", [False, True], ids=["fix_off", "fix_on"])
def test_gather_always_add_range_no_gaps_only(fix: bool) -> None:
    """NO_GAPS-only table (x86_64 with flush_range_no_gaps, without flush_range):
    with the fix the unmap's invalidation covers [iova, iova+len-1]; before it the
    gather stays empty and the driver sends the bogus (ULONG_MAX, 2) invalidation."""
    pt = PageTable(
        "x86_64",
        features={"sign_extend", "flush_range_no_gaps"},
        fixes={"gather_always_add_range": fix},
    )
    pt.map(0x4000_0000, 0x1000_0000, 0x3000, RW)
    pt.executor.commands.clear()
    assert pt.unmap(0x4000_1000, 0x2000) == 0x2000
    if fix:
        assert invalidations(pt) == [(0x4000_1000, 0x2000)]
    else:
        assert invalidations(pt) == [(U64, 2)]
    assert pt.executor.commands[-1] == (WAIT_INVALIDATION,)


@pytest.mark.parametrize("fix", [False, True], ids=["fix_off", "fix_on"])
def test_gather_always_add_range_after_no_gaps_sync(fix: bool) -> None:
    """The spec's [OBSERVATION] (6.2): with FLUSH_RANGE and NO_GAPS, a map that
    replaces two non-adjacent empty tables by 2M leaves syncs the gather when the
    second range is disjoint. Before the fix the 'elif' then skips recording the
    second range: its table is freed after a bogus invalidation and [4M, 6M) is never
    invalidated; with the fix it is."""
    pt = PageTable(
        "x86_64",
        features={"sign_extend", "flush_range", "flush_range_no_gaps"},
        fixes={"gather_always_add_range": fix},
    )
    for va in (0, 4 << 20):  # leave empty level-0 tables at 0 and 4M
        pt.map(va, 0x1000_0000, 0x1000, RW)
        assert pt.unmap(va, 0x1000) == 0x1000
    live = pt.live_table_pages
    pt.executor.commands.clear()
    pt.map(0, 0x4000_0000, 6 << 20, RW)  # three 2M leaves
    assert pt.live_table_pages == live - 2  # both empty tables were freed
    first = (0, SZ_2M)
    if fix:
        assert invalidations(pt) == [first, (4 << 20, SZ_2M)]
    else:
        assert invalidations(pt) == [first, (U64, 2)]


@pytest.mark.parametrize("fix", [False, True], ids=["fix_off", "fix_on"])
def test_gather_unmapped_length(fix: bool) -> None:
    """Unmapping 4K at the start of a 2M leaf removes the whole leaf (returns 2M); the
    invalidation covers the whole 2M with the fix, only the 4K asked for without."""
    pt = PageTable("x86_64", features={"sign_extend"}, fixes={"gather_unmapped_length": fix})
    pt.map(0x4000_0000, 0x1000_0000, SZ_2M, RW)
    pt.executor.commands.clear()
    assert pt.unmap(0x4000_0000, 0x1000) == SZ_2M
    assert invalidations(pt) == [(0x4000_0000, SZ_2M if fix else 0x1000)]


@pytest.mark.parametrize(
    "features",
    [
        (),
        ("flush_range",),
        ("flush_range_no_gaps",),
        ("flush_range", "flush_range_no_gaps"),
    ],
    ids=["none", "flush_range", "no_gaps", "both"],
)
@pytest.mark.parametrize("fmt", ["x86_64", "amdv1"])
def test_gather_covers_what_was_unmapped(fmt: str, features: tuple[str, ...]) -> None:
    """Spec 7.5 item 6: after an unmap -- one ending inside a large leaf, one over
    several leaves, one over a freed table -- the invalidation covers exactly
    [iova, iova+unmapped-1] (never empty), whatever the flush features."""
    pt = PageTable(fmt, features=set(features) | ({"sign_extend"} if fmt == "x86_64" else set()))
    base = 0x4000_0000
    pt.map(base, 0x1000_0000, SZ_2M, RW)  # one 2M leaf
    pt.map(base + SZ_2M, 0x2000_1000, SZ_2M, RW)  # 4K leaves filling a table
    for iova, size, expect in [
        (base, 0x1000, SZ_2M),  # ends inside the 2M leaf
        (base + SZ_2M, 0x3000, 0x3000),  # several small leaves
        (base + SZ_2M + 0x3000, SZ_2M - 0x3000, SZ_2M - 0x3000),  # the rest: frees a table
    ]:
        pt.executor.commands.clear()
        assert pt.unmap(iova, size) == expect
        assert invalidations(pt) == [(iova, expect)]
    pt.deinit()
    assert pt.live_table_pages == 0


# --- vtd_top_level (d856f9d2, 1eb0ae6f; spec 7.5 item 7) ----------------------------------------
@pytest.mark.parametrize("fmt, info", [("vtdss", "aw"), ("x86_64", "levels")])
def test_vtd_top_level_fixed(fmt: str, info: str) -> None:
    """Fix on: (vasz 39, top_level 3) builds a 4-level table (vtdss aw 2, x86_64
    levels 4) whose aperture is still 39 bits: a VA at 2**39 gives -ERANGE."""
    pt = PageTable(fmt, vasz_lg2=39, top_level=3)
    assert pt.top_level == 3
    assert pt.hw_info[info] == {"aw": 2, "levels": 4}[info]
    assert pt.vasz_lg2 == 39
    pt.map((1 << 39) - 0x1000, 0x1000, 0x1000, RW)
    with pytest.raises(PTError) as err:
        pt.map(1 << 39, 0x1000, 0x1000, RW)
    assert err.value.errno == errno.ERANGE
    assert pt.walk((1 << 39) - 0x1000)[0].level == 3


@pytest.mark.parametrize("fmt, info, value", [("vtdss", "aw", 1), ("x86_64", "levels", 3)])
def test_vtd_top_level_historical(fmt: str, info: str, value: int) -> None:
    """Fix off: the depth comes from the 39-bit address width alone, whatever
    top_level the driver asked for: a 3-level table (vtdss aw 1, x86_64 levels 3),
    which hardware that only walks 4 levels rejects."""
    pt = PageTable(fmt, vasz_lg2=39, top_level=3, fixes={"vtd_top_level": False})
    assert pt.top_level == 2
    assert pt.hw_info[info] == value


@pytest.mark.parametrize(
    "fmt, kwargs, fix, err",
    [
        ("x86_64", {"vasz_lg2": 39, "top_level": 2}, True, errno.EOPNOTSUPP),  # 3 or 4 only
        ("vtdss", {"vasz_lg2": 39, "top_level": 1}, True, errno.EOPNOTSUPP),  # 2..4 only
        ("vtdss", {"vasz_lg2": 48, "top_level": 2}, True, errno.EOPNOTSUPP),  # table too small
        ("x86_64", {"vasz_lg2": 30}, False, errno.EINVAL),  # before: vasz in [31, 57]
        ("vtdss", {"vasz_lg2": 30}, False, errno.EOPNOTSUPP),  # before: vasz > 30
    ],
    ids=["x86_top2", "vtdss_top1", "vtdss_too_small", "x86_old_vasz30", "vtdss_old_vasz30"],
)
def test_vtd_top_level_init_errors(fmt: str, kwargs: dict, fix: bool, err: int) -> None:
    """The init checks of both versions (spec 3.3, 3.4) return the kernel's errno."""
    with pytest.raises(PTError) as exc:
        PageTable(fmt, fixes={"vtd_top_level": fix}, **kwargs)
    assert exc.value.errno == err


# --- cache_flush (efa03dab) ----------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["x86_64", "vtdss"])
@pytest.mark.parametrize("fix", [False, True], ids=["fix_off", "fix_on"])
def test_cache_flush(fmt: str, fix: bool) -> None:
    """Fix off (S0): an incoherent map issues no FLUSH at all and the walker, reading
    DRAM, cannot translate; on, it can. The CPU view translates either way."""
    pt = PageTable(
        fmt, vasz_lg2=48, top_level=3, features={"dma_incoherent"}, fixes={"cache_flush": fix}
    )
    pt.executor.counts.clear()
    pt.map(0x4000_0000, 0x1000_0000, 0x3000, RW)
    assert (pt.executor.counts[FLUSH] > 0) == fix
    assert pt.iova_to_phys(0x4000_2000) == 0x1000_2000
    assert pt.iova_to_phys(0x4000_2000, view="hw") == (0x1000_2000 if fix else None)


# --- free_after_sync ------------------------------------------------------------------------
@pytest.mark.parametrize("fix", [False, True], ids=["fix_off", "fix_on"])
def test_free_after_sync(fix: bool) -> None:
    """An unmap that removes a whole level-0 table: with the fix the table is freed
    after the INVALIDATE_RANGE and its WAIT; without it, before either."""
    ex = RecordingExecutor()
    pt = PageTable("x86_64", features={"sign_extend"}, fixes={"free_after_sync": fix}, executor=ex)
    pt.map(0x4000_0000, 0x1000_1000, SZ_2M, RW)  # misaligned pa: 512 4K leaves
    table = pt.walk(0x4000_0000)[-1].table_pa
    ex.log.clear()
    assert pt.unmap(0x4000_0000, SZ_2M) == SZ_2M
    kinds = [tx[0] for tx in ex.log if tx[0] in (FREE_TABLE, INVALIDATE_RANGE, WAIT_INVALIDATION)]
    frees = [tx[1] for tx in ex.log if tx[0] == FREE_TABLE]
    assert frees == [table]
    if fix:
        assert kinds == [INVALIDATE_RANGE, WAIT_INVALIDATION, FREE_TABLE]
    else:
        assert kinds == [FREE_TABLE, INVALIDATE_RANGE, WAIT_INVALIDATION]
    assert pt.executor.allocator.is_free(table)


# --- dirty_clear_flush ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["amdv1", "vtdss"])
@pytest.mark.parametrize("fix", [False, True], ids=["fix_off", "fix_on"])
def test_dirty_clear_flush(fmt: str, fix: bool) -> None:
    """read_and_clear_dirty that cleans a D bit issues the IOTLB sync for the cleaned
    range with the fix and no invalidation at all without; NO_CLEAR never syncs."""
    pt = PageTable(fmt, fixes={"dirty_clear_flush": fix})
    pt.map(0x4000_0000, 0x1000_1000, 0x2000, RW)  # two single 4K leaves
    pt.set_dirty(0x4000_1000)
    pt.executor.commands.clear()
    assert pt.read_and_clear_dirty(0x4000_0000, 0x2000, no_clear=True) == [(0x4000_1000, 0x1000)]
    assert invalidations(pt) == []
    assert pt.read_and_clear_dirty(0x4000_0000, 0x2000) == [(0x4000_1000, 0x1000)]
    assert invalidations(pt) == ([(0x4000_1000, 0x1000)] if fix else [])
    # The bit was cleaned either way.
    pt.executor.commands.clear()
    assert pt.read_and_clear_dirty(0x4000_0000, 0x2000, no_clear=True) == []


# --- x86 set_prot (1978fac2, spec 7.5 item 8) ------------------------------------------------
def test_x86_set_prot_dirty_only_when_writable() -> None:
    """x86_64: READ has no D (and no RW); READ|WRITE has RW and D -- in the attrs
    set_prot returns and in the leaves map writes."""
    pt = PageTable("x86_64", features={"sign_extend"})
    err, attrs = pt.common.fmt.set_prot(pt.common, Prot.READ)
    assert err == 0 and not attrs & (x86.D | x86.RW)
    err, attrs = pt.common.fmt.set_prot(pt.common, RW)
    assert err == 0 and attrs & x86.D and attrs & x86.RW
    pt.map(0x1000, 0x1000_0000, 0x1000, Prot.READ)
    pt.map(0x2000, 0x1000_1000, 0x1000, RW)
    ro, rw = pt.walk(0x1000)[-1].raw, pt.walk(0x2000)[-1].raw
    assert not ro & (x86.D | x86.RW)
    assert rw & x86.D and rw & x86.RW
