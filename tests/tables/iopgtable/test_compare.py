"""Old against new on the same requests, in the spirit of kunit_iommu_cmp.h.

Each old implementation (``LegacyView``: the old driver behind the iommu core of its
era) and its genpt twin (the ``PageTable`` of the same format and geometry) receive the
same seeded sequences of maps and unmaps: runs of 4K, 2M and 1G pages (and 2M runs
with a 4K tail), aligned, in a few 8 GiB windows. After every step:

- both returned the same thing;
- both translate the same way, and as the reference model of test_properties.py says:
  the first and last byte of the touched range, the start of every page of the request
  and of every leaf in it, through the CPU view of both and the hardware view of the old
  driver (its root as last programmed);
- where the kernel says the two write identical tables (AMD v1 vs amdv1, AMD v2 vs
  x86_64), the tables are compared item by item from their roots: leaves by value,
  table items by their non-address bits, recursing (the table addresses differ because
  allocation order differs) -- kunit_iommu_cmp.h's ``__compare_tables``.

Every legitimate difference is a named entry of ``DIFFERENCES`` (conftest.py) with the
kernel functions on both sides: an operation in one of its cases is left out of the
sequence (and counted), or the table comparison applies its adjustment. The
deterministic tests port test_cmp_one_map and test_cmp_unmap_split; on an excluded case
they assert the difference is real and then resynchronise the two tables.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from iommusim.tables import PageTable, Prot, walk
from iommusim.tables.formats.base import EMPTY, OA, TABLE
from iommusim.tables.iopgtable import IMPLEMENTATIONS, implementation_for
from iommusim.tables.iopgtable.amd_v2 import PAGE_DIRTY, PAGE_RW
from tests.tables.iopgtable.conftest import (
    DIFFERENCES,
    EMPTY_TABLES_KEPT,
    EXCLUDE,
    MAP_OVER_MAPPED,
    READ_ONLY_DIRTY,
    TABLE_DIRTY,
    UNMAP_ENDS_INSIDE,
    UNMAP_HOLE,
    UNMAP_INSIDE,
    UNMAP_SPLIT,
    Difference,
    LegacyView,
    classify_unmap,
    differences,
    missing,
    twin,
)
from tests.tables.test_properties import Config, Model, split_into_leaves

K, M, G = 1 << 12, 1 << 21, 1 << 30
U64 = (1 << 64) - 1
WINDOW = 8 * G
RW = Prot.READ | Prot.WRITE
PROTS = (Prot.READ, Prot.WRITE, RW, RW | Prot.CACHE)

# Where the kernel says old and new write the same items (kunit_iommu_cmp.h runs
# __compare_tables for these pairs).
BIT_IDENTICAL = frozenset({"amd-v1", "amd-v2"})
BASES = {
    "amdv1": (0, 1 << 40),  # 1 << 40 makes both grow from level 2 to 3
    "x86_64": (1 << 32, (U64 + 1) - (1 << 47)),  # and the sign-extended upper half
    "vtdss": (0, 1 << 40),
    "armv8": (0, 1 << 40),
}

# The contiguous hint is a genpt-only page size on ARM: named here, beside the conftest
# table, because only this test maps runs long enough to produce it.
MAP_CONTIG = "map whose genpt leaves include a contiguous-hint size"
CONTIG = Difference(
    "arm-lpae", MAP_CONTIG, EXCLUDE,
    "arm_lpae_map_pages: pgsize_bitmap 4K|2M|1G, ARM_LPAE_PTE_CONT never set",
    "armv8: pgsize_bitmap adds 64K/32M/16G, 16 aligned items as one contiguous entry",
)  # fmt: skip


def named(impl: str) -> dict[str, Difference]:
    diffs = differences(impl)
    if impl == CONTIG.impl:
        diffs[MAP_CONTIG] = CONTIG
    return diffs


# --- comparing the tables item by item -----------------------------------------------------
def by_page(table: LegacyView | PageTable) -> dict[int, dict[int, int]]:
    """The non-zero words of live table pages, by page: {page: {index: value}} -- the
    tables are sparse, so comparing only what is there is what makes this fast."""
    live = table.executor.allocator.is_live
    pages: dict[int, dict[int, int]] = {}
    for pa, value in table.executor.memory.cpu.items():
        if live(pa):
            pages.setdefault(pa & ~0xFFF, {})[(pa & 0xFFF) >> 3] = value
    return pages


@dataclass
class TableCompare:
    """__compare_tables with the named memory adjustments of one implementation."""

    old: LegacyView
    new: PageTable
    diffs: dict[str, Difference]

    def expected_old(self, kind: int, raw: int) -> int:
        """What the old code writes where genpt wrote ``raw`` (table bits or a leaf)."""
        if kind == TABLE and TABLE_DIRTY in self.diffs:
            raw |= PAGE_DIRTY
        if kind == OA and READ_ONLY_DIRTY in self.diffs and not raw & PAGE_RW:
            raw |= PAGE_DIRTY
        return raw

    def run(self) -> None:
        assert self.old.top_level == self.new.top_level, "the tops are at different levels"
        self.old_pages = by_page(self.old)
        self.new_pages = by_page(self.new)
        self.level(self.old.top_level, self.old.top_table_pa, self.new.top_table_pa, "top")

    def level(self, level: int, old_table: int, new_table: int, path: str) -> None:
        c = self.new.common
        fmt = c.fmt
        old_items = self.old_pages.get(old_table, {})
        new_items = self.new_pages.get(new_table, {})
        for index in sorted(old_items.keys() | new_items.keys()):
            o, n = old_items.get(index, 0), new_items.get(index, 0)
            where = f"{path}/{index}"
            to, tn = fmt.entry_type(level, o), fmt.entry_type(level, n)
            if to == tn == TABLE:
                old_pa, new_pa = fmt.table_pa(c, o), fmt.table_pa(c, n)
                assert self.old.executor.allocator.is_live(old_pa), f"{where}: freed table"
                want = self.expected_old(TABLE, n ^ new_pa)
                assert o ^ old_pa == want, f"{where}: table bits {o ^ old_pa:#x} != {want:#x}"
                self.level(level - 1, old_pa, new_pa, where)
            elif to == TABLE and tn == EMPTY and EMPTY_TABLES_KEPT in self.diffs:
                assert not self.leaves_below(level - 1, fmt.table_pa(c, o)), where
            else:
                want = self.expected_old(tn, n)
                assert (to, o) == (tn, want), f"{where}: old {o:#x}, genpt {n:#x}"

    def leaves_below(self, level: int, table: int) -> int:
        """Leaves in an old subtree (an empty one stands for an empty item)."""
        c = self.new.common
        fmt = c.fmt
        found = 0
        for raw in self.old_pages.get(table, {}).values():
            kind = fmt.entry_type(level, raw)
            if kind == OA:
                found += 1
            elif kind == TABLE:
                found += self.leaves_below(level - 1, fmt.table_pa(c, raw))
        return found


# --- one comparison: two tables, one model ----------------------------------------------------
@dataclass
class Comparison:
    """An old table and its twin fed the same operations, checked after each one."""

    fmt: str
    old: LegacyView = field(init=False)
    new: PageTable = field(init=False)
    model: Model = field(init=False)
    excluded: Counter = field(default_factory=Counter)
    compare_each_step: bool = True  # False: the caller runs compare_tables() itself

    def __post_init__(self) -> None:
        self.impl = implementation_for(self.fmt)
        self.diffs = named(self.impl)
        self.old = LegacyView(self.fmt)
        self.new = twin(self.fmt)
        self.model = Model(Config(self.fmt, self.fmt), self.new)

    def excluded_case(self, case: str | None) -> bool:
        diff = self.diffs.get(case) if case else None
        if diff is not None and diff.action == EXCLUDE:
            self.excluded[case] += 1
            return True
        return False

    def map_case(self, va: int, pa: int, size: int) -> str | None:
        if self.model.overlaps(va, size):
            return MAP_OVER_MAPPED
        old_sizes = self.old.pgsize_bitmap
        leaves = split_into_leaves(self.new.pgsize_bitmap, va, pa, size)
        return MAP_CONTIG if any(not sz & old_sizes for _, sz, _ in leaves) else None

    def map(self, va: int, pa: int, size: int, prot: int) -> bool:
        """Map on both unless excluded; False when excluded."""
        if self.excluded_case(self.map_case(va, pa, size)):
            return False
        want = self.model.map(va, pa, size)
        old = self.old.run(self.old.map_op(va, pa, size, prot))
        new = self.new.run(self.new.map_op(va, pa, size, prot))
        assert old == new == -want, f"map {va:#x}+{size:#x}: old {old}, genpt {new}"
        self.check(va, size, [])
        return True

    def unmap(self, va: int, size: int) -> bool:
        """Unmap on both unless excluded; False when excluded."""
        if self.excluded_case(classify_unmap(self.model.leaves, va, size)):
            return False
        before = dict(self.model.leaves)
        want = self.model.unmap(va, size)
        old, new = self.old.unmap(va, size), self.new.unmap(va, size)
        assert old == new == want, f"unmap {va:#x}+{size:#x}: old {old:#x}, genpt {new:#x}"
        removed = [s for s in before if s not in self.model.leaves]
        self.check(va, max(size, want), removed)
        return True

    def check(self, va: int, size: int, extra: list[int]) -> None:
        """Translations in the touched range agree; tables agree where they must."""
        for iova in probes(self.model.leaves, va, size, extra):
            want = self.model.translate(iova)
            got = (
                self.old.iova_to_phys(iova),
                self.old.iova_to_phys(iova, view="hw"),
                self.new.iova_to_phys(iova),
            )
            assert got == (want, want, want), f"iova_to_phys({iova:#x}): {got}, model {want}"
        if self.compare_each_step:
            self.compare_tables()
        assert self.new.warnings == []
        assert self.old.executor.allocator.bad_frees == []

    def compare_tables(self) -> None:
        if self.impl in BIT_IDENTICAL:
            TableCompare(self.old, self.new, self.diffs).run()

    def finish(self) -> None:
        self.old.deinit()
        self.new.deinit()
        assert self.old.live_table_pages == self.new.live_table_pages == 0


def probes(leaves: dict[int, tuple[int, int]], va: int, size: int, extra: list[int]) -> set[int]:
    """The first and last byte of [va, va + size), the start of each of its 4K pages
    when it is small, the first, middle and last byte of (at most 16 of) the leaves in
    it, and the first page of every leaf removed."""
    found = {va, va + size - 1, *extra}
    if size <= 64 * K:
        found.update(range(va, va + size, K))
    inside = sorted(s for s, (sz, _) in leaves.items() if s < va + size and va < s + sz)
    for start in inside[:: max(1, len(inside) // 16)] + inside[-1:]:
        sz = leaves[start][0]
        found.update((start, start + sz - 1, start + sz // 2))
    for start in extra[:: max(1, len(extra) // 16)]:
        found.add(start + K - 1)
    return {iova & U64 for iova in found}


# --- random sequences ------------------------------------------------------------------------
def draw_map(rng: random.Random, cmp: Comparison) -> tuple[int, int, int, int]:
    """A run of pages of one size (or 2M pages with a 4K tail), aligned, in a window;
    small pages mostly in the first 64 MiB so tables are shared."""
    base = rng.choice(BASES[cmp.fmt])
    pgsize = rng.choice((K, K, K, M, M, G))
    count = rng.choice((1, 1, 2, 3, 5, 8)) if pgsize != G else rng.choice((1, 2, 3))
    whole = pgsize == K and rng.random() < 0.1  # a full level-0 table of 4K leaves
    size = M if whole else pgsize * count
    if pgsize == M and rng.random() < 0.25:
        size += K * rng.randint(1, 7)
    span = 64 * M if pgsize != G and rng.random() < 0.8 else WINDOW
    va = base + rng.randrange((span - size) // pgsize) * pgsize
    if whole:
        va &= ~(M - 1)
    if pgsize == K and (whole or rng.random() < 0.3):
        pa = rng.randrange(1, 1 << 26) * K  # any alignment: only 4K leaves
    else:
        pa = (va & (G - 1)) + rng.randrange(1, 64) * G
    return va, pa, size, rng.choice(PROTS)


def draw_unmap(rng: random.Random, cmp: Comparison) -> tuple[int, int]:
    """Exact runs of leaves mostly; also smaller than a leaf, inside one, over holes."""
    leaves = sorted(cmp.model.leaves.items())
    shape = rng.choice(("exact", "exact", "exact", "split", "inside", "hole", "through", "table"))
    if not leaves or shape == "hole":
        base = rng.choice(BASES[cmp.fmt])
        return base + rng.randrange(64 * M // K) * K, rng.choice((K, 4 * K, M, 2 * M))
    i = rng.randrange(len(leaves))
    start, (size, _) = leaves[i]
    if shape == "split":
        return start, rng.choice([s for s in (K, M) if s < size] or [size])
    if shape == "inside":
        return start + rng.randrange(1, max(2, size // K)) * K, K
    if shape == "table":  # the 2M block around the leaf: frees a whole table in genpt
        return start & ~(M - 1), max(M, size)
    end = start + size
    for nxt, (sz, _) in leaves[i + 1 : i + 1 + rng.randrange(4)]:
        if nxt != end:
            break
        end = nxt + sz
    return start, (end - start) + (K * rng.randint(1, 3) if shape == "through" else 0)


def runs(leaves: dict[int, tuple[int, int]]) -> list[tuple[int, int]]:
    """The mapped ranges: adjacent leaves joined."""
    joined: list[tuple[int, int]] = []
    for start, (size, _) in sorted(leaves.items()):
        if joined and sum(joined[-1]) == start:
            joined[-1] = (joined[-1][0], joined[-1][1] + size)
        else:
            joined.append((start, size))
    return joined


def run_sequence(fmt: str, seed: int, steps: int) -> Counter:
    """One seeded sequence; returns how many operations each named case left out."""
    rng = random.Random(seed)
    cmp = Comparison(fmt)
    cmp.check(0, K, [])  # the empty tables compare
    for _ in range(steps):
        if cmp.model.leaves and rng.random() < 0.45:
            cmp.unmap(*draw_unmap(rng, cmp))
        else:
            cmp.map(*draw_map(rng, cmp))
    for start, size in runs(cmp.model.leaves):
        assert cmp.unmap(start, size)
    cmp.finish()
    return cmp.excluded


@pytest.mark.parametrize("seed", range(4))
def test_random_sequences_agree(legacy_fmt: str, seed: int) -> None:
    """Seeded map/unmap sequences: same answers, same translations, and (AMD) the same
    tables item for item, apart from the named differences."""
    run_sequence(legacy_fmt, 1000 * seed + 14, steps=40)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_random_sequences_agree_long(legacy_fmt: str, seed: int) -> None:
    """The same, longer and over more seeds."""
    run_sequence(legacy_fmt, 77_000 + seed, steps=150)


# --- kunit_iommu_cmp.h's deterministic cases ----------------------------------------------------
def common_sizes(cmp: Comparison) -> list[int]:
    """Page sizes both sides have, below half the VA space (safe_pgsize_bitmap)."""
    bitmap = cmp.old.pgsize_bitmap & cmp.new.pgsize_bitmap
    bitmap &= (1 << (cmp.new.vasz_lg2 - 1)) - 1
    return [1 << b for b in range(64) if bitmap >> b & 1]


def test_cmp_one_map(legacy_fmt: str) -> None:
    """test_cmp_one_map: every prot with READ or WRITE, every common page size mapped
    then unmapped one by one; translations compared after every call, the tables after
    each pass (the kernel compares them after every call too: quadratic in the number
    of page sizes, 40 for AMD v1)."""
    cmp = Comparison(legacy_fmt, compare_each_step=False)
    top = cmp.new.top_table_pa and 0
    oa = 0x74A71445DEADBEEF & ((1 << min(cmp.new.oasz_lg2, 48)) - 1)
    for prot in range(1, 32):
        if not prot & RW:
            continue
        va = top + K * 256
        placed = []
        for size in common_sizes(cmp):
            va = -(-va // size) * size
            assert cmp.map(va, oa & ~(size - 1), size, prot)
            placed.append((va, size))
            va += size
        cmp.compare_tables()
        for va, size in placed:
            assert cmp.unmap(va, size)
        cmp.compare_tables()
    cmp.finish()


def test_cmp_unmap_split(legacy_fmt: str) -> None:
    """test_cmp_unmap_split: a large page unmapped by a smaller size at its start is
    removed whole on both sides -- or, where a named difference says otherwise, the
    old code's answer differs as named and the old table is brought back in line."""
    cmp = Comparison(legacy_fmt)
    sizes = common_sizes(cmp)
    for base_len in sizes:
        for next_len in (s for s in sizes if s > base_len):
            assert cmp.map(0, 0, next_len, RW | Prot.CACHE)
            if cmp.unmap(0, base_len):
                continue
            # Excluded: show the named difference, then resynchronise.
            assert classify_unmap(cmp.model.leaves, 0, base_len) in cmp.diffs
            old, new = cmp.old.unmap(0, base_len), cmp.new.unmap(0, base_len)
            assert (old, new) == (0, next_len), cmp.diffs
            assert cmp.old.unmap(0, next_len) == next_len
            cmp.model.unmap(0, next_len)
            cmp.check(0, next_len, [0])
    cmp.finish()


def test_cmp_high_va(legacy_fmt: str) -> None:
    """test_cmp_high_va: the last page of the lower VA span (AMD v1: after growing)."""
    cmp = Comparison(legacy_fmt)
    last = (1 << (cmp.new.vasz_lg2 - (1 if cmp.new.common.sign_extend else 0))) - 1
    assert cmp.map(last - K + 1, 0, K, RW)
    cmp.finish()


# --- every named difference is real ---------------------------------------------------------
A = 1 << 30  # aligned for every page size used below, in every lower half
P = 0x80_0000_0000


def steps(t: LegacyView | PageTable, iova: int) -> list[Any]:
    """The items a walk of ``iova`` reads, decoded with the genpt format."""
    return t.run(walk.walk_steps(t.common, iova, t.top_of_table))


def demo_answers(t: LegacyView | PageTable, case: str) -> tuple[Any, ...]:
    """Set up and run the smallest example of ``case``: (its answer, what is left
    mapped or written, whether a WARN fired)."""
    run, warned = t.run, lambda: bool(t.warnings)
    if case == MAP_OVER_MAPPED:
        t.map(A, P, K, RW)
        return run(t.map_op(A, P + K, K, RW)), t.iova_to_phys(A), warned()
    if case == UNMAP_HOLE:
        t.map(A + K, P, K, RW)  # a level-0 table exists; A itself is a hole
        return t.unmap(A, M), t.iova_to_phys(A + K), warned()
    if case in (UNMAP_INSIDE, UNMAP_SPLIT):
        t.map(A, P, M, RW)
        return t.unmap(A + K if case == UNMAP_INSIDE else A, K), t.iova_to_phys(A), warned()
    if case == UNMAP_ENDS_INSIDE:
        t.map(A, P, 2 * M, RW)
        return t.unmap(A, 3 * M), t.iova_to_phys(A + 2 * M), warned()
    if case == MAP_CONTIG:
        t.map(A, P, 16 * K, RW)
        return t.unmap(A, K), t.iova_to_phys(A + K), warned()
    if case == EMPTY_TABLES_KEPT:
        t.map(A, P + K, M, RW)  # 512 4K leaves: the pa is not 2M aligned
        return t.unmap(A, M), [step.kind for step in steps(t, A)]
    if case == TABLE_DIRTY:
        t.map(A, P, K, RW)
        return tuple(step.raw & 0xFFF for step in steps(t, A)[:-1])
    if case == READ_ONLY_DIRTY:
        t.map(A, P, K, Prot.READ)
        return (steps(t, A)[-1].raw & 0xFFF,)
    raise AssertionError(f"no example for {case!r}")


@pytest.mark.parametrize(
    "diff",
    [
        pytest.param(
            d,
            id=f"{d.impl}-{d.case.replace(' ', '_')}",
            marks=pytest.mark.skipif(missing(fmt) is not None, reason=str(missing(fmt))),
        )
        for d in [*DIFFERENCES, CONTIG]
        for fmt in [f for f, (impl, _) in IMPLEMENTATIONS.items() if impl == d.impl]
    ],
)
def test_named_difference_is_real(diff: Difference) -> None:
    """Each named difference, on its smallest example: the old implementation and its
    twin answer (or write) differently -- so the table names only real differences."""
    fmt = next(f for f, (impl, _) in IMPLEMENTATIONS.items() if impl == diff.impl)
    old, new = demo_answers(LegacyView(fmt), diff.case), demo_answers(twin(fmt), diff.case)
    assert old != new, f"{diff.impl}: {diff.case} -- old: {diff.old}; genpt: {diff.new}"
