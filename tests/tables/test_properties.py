"""Property tests: random map / unmap / iova_to_phys sequences against a reference model.

The reference model is a dictionary of leaves ``{iova: (size, pa)}``. A map is split
into leaves the way S6 ``map_range`` does it -- at every step the largest supported
page that fits the rest of the request and to which both the IOVA and the physical
address are aligned -- so one call may produce several page sizes (generic_pt.md
4.6). Unmap follows the kernel's rules (4.8): it never splits a leaf, an unmap that
starts inside a leaf removes nothing, one that ends inside a leaf removes the whole
leaf (and reports more bytes than asked), a hole stops it. A map that overlaps any
existing leaf fails with -EADDRINUSE and, thanks to the core's rollback, leaves the
table exactly as it was.

After every operation the whole table is compared with the model: a census of every
leaf reachable from the top (contiguous blocks counted once), in the CPU view and --
from the root the hardware was given -- in the hardware view, which for a
DMA_INCOHERENT table only holds what was flushed. After ``deinit`` no table page may
be left. Every config runs with its own fixed seed, so CI is deterministic.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from iommusim.tables import PageTable, Prot, PTError
from iommusim.tables.formats.base import OA, TABLE

U64 = (1 << 64) - 1
RW = Prot.READ | Prot.WRITE
PROTS = (Prot.READ, Prot.WRITE, RW, RW | Prot.CACHE)


@dataclass(frozen=True)
class Config:
    """One table configuration under test."""

    name: str
    fmt: str
    kwargs: dict = field(default_factory=dict)
    # Bases of the IOVA windows operations draw from (each 4 GiB wide).
    bases: tuple[int, ...] = (0,)
    # Top levels a DYNAMIC_TOP table grows through: {level: VA span lg2}.
    dynamic_spans: dict[int, int] | None = None

    @property
    def sign_extend(self) -> bool:
        return "sign_extend" in self.kwargs.get("features", ())

    @property
    def incoherent(self) -> bool:
        return "dma_incoherent" in self.kwargs.get("features", ())


UPPER_48 = (U64 + 1) - (1 << 47)  # first IOVA of the sign-extended upper half, 48 bits
UPPER_39 = (U64 + 1) - (1 << 38)

CONFIGS = [
    # AMDv1 starts at level 2 (39 bits) and grows; bases reach levels 3, 4 and 5.
    Config(
        "amdv1",
        "amdv1",
        {},
        bases=(0, 1 << 40, 1 << 50, 1 << 60),
        dynamic_spans={2: 39, 3: 48, 4: 57, 5: 64},
    ),
    Config("amdv1_mock", "amdv1_mock", {}),
    Config("x86_64", "x86_64", {"features": {"sign_extend"}}, bases=(0, UPPER_48)),
    Config(
        "x86_64_incoherent",
        "x86_64",
        {"features": {"sign_extend", "dma_incoherent", "flush_range"}},
        bases=(0, UPPER_48),
    ),
    Config("x86_64_5level", "x86_64", {"vasz_lg2": 56, "top_level": 4}, bases=(0, 1 << 50)),
    Config("vtdss", "vtdss", {"vasz_lg2": 48, "top_level": 3}, bases=(0, 1 << 40)),
    Config(
        "vtdss_incoherent",
        "vtdss",
        {"vasz_lg2": 39, "top_level": 2, "features": {"dma_incoherent"}},
    ),
    Config(
        "riscv64_sv48",
        "riscv64",
        {"vasz_lg2": 48, "features": {"sign_extend", "riscv_svnapot_64k"}},
        bases=(0, UPPER_48),
    ),
    Config(
        "riscv64_sv39",
        "riscv64",
        {"vasz_lg2": 39, "features": {"sign_extend"}},
        bases=(0, UPPER_39),
    ),
    # ARMv8 stage 1 (contiguous 64K / 32M / 16G entries), incoherent, and stage 2.
    Config("armv8", "armv8", {}, bases=(0, 1 << 40)),
    Config("armv8_incoherent", "armv8", {"features": {"dma_incoherent"}}, bases=(0, 1 << 45)),
    Config("armv8_s2_39", "armv8", {"vasz_lg2": 39, "features": {"armv8_s2", "armv8_dbm"}}),
]

WINDOW_LG2 = 32


# --- the reference model ------------------------------------------------------------------
def split_into_leaves(bitmap: int, va: int, pa: int, size: int) -> list[tuple[int, int, int]]:
    """Greedy: at each step the largest page size in bitmap that fits and is aligned."""
    leaves = []
    end = va + size
    while va < end:
        remaining = end - va
        best = 0
        for lg2 in range(bitmap.bit_length() - 1, -1, -1):
            s = 1 << lg2
            if bitmap >> lg2 & 1 and s <= remaining and not (va | pa) & (s - 1):
                best = s
                break
        assert best, "the request is not tileable by the smallest page"
        leaves.append((va, best, pa))
        va += best
        pa += best
    return leaves


class Model:
    """What the table must contain: leaves, and for DYNAMIC_TOP the top level."""

    def __init__(self, cfg: Config, pt: PageTable) -> None:
        self.leaves: dict[int, tuple[int, int]] = {}
        self.bitmap = pt.pgsize_bitmap
        self.spans = cfg.dynamic_spans
        self.top_level = pt.top_level

    def containing(self, iova: int) -> tuple[int, int, int] | None:
        for start, (size, pa) in self.leaves.items():
            if start <= iova < start + size:
                return start, size, pa
        return None

    def translate(self, iova: int) -> int | None:
        leaf = self.containing(iova)
        return None if leaf is None else leaf[2] + iova - leaf[0]

    def overlaps(self, va: int, size: int) -> bool:
        return any(s < va + size and va < s + sz for s, (sz, _) in self.leaves.items())

    def fits_top(self, last: int) -> bool:
        return self.spans is None or last >> self.spans[self.top_level] == 0

    def grow_for(self, last: int) -> None:
        """check_map_range: the top grows (even if the map then fails) until it fits."""
        if self.spans is None:
            return
        while last >> self.spans[self.top_level]:
            self.top_level += 1

    def map(self, va: int, pa: int, size: int) -> int:
        """0 or the errno the map must fail with."""
        self.grow_for(va + size - 1)
        if self.overlaps(va, size):
            return errno.EADDRINUSE
        for start, sz, p in split_into_leaves(self.bitmap, va, pa, size):
            self.leaves[start] = (sz, p)
        return 0

    def unmap(self, va: int, size: int) -> int:
        """Bytes unmapped: whole leaves from va on, never split, stopping at a hole."""
        last = va + size - 1
        if not self.fits_top(last):
            return 0  # pt_check_range fails: nothing is unmapped
        cur, total = va, 0
        while cur <= last and cur in self.leaves:
            sz, _ = self.leaves.pop(cur)
            total += sz
            cur += sz
        return total


# --- reading the table back ------------------------------------------------------------
def census(pt: PageTable, cfg: Config, view: str) -> dict[int, tuple[int, int]]:
    """Every leaf reachable from the top: {iova: (entry size, oa)}.

    The CPU view starts at the software top_of_table, the hardware view at the root
    the hardware was programmed with (CHANGE_TOP) and reads DRAM only. The items of
    a contiguous block must all hold the same value (ARMv8: each its own OA, one
    stride apart).
    """
    c = pt.common
    fmt = c.fmt
    mem = pt.executor.memory
    if view == "cpu":
        words, root, top = mem.cpu, pt.top_table_pa, pt.top_level
    else:
        words = mem.hw
        root, top = pt.executor.roots[c.domain]
    get = words.get
    vasz = pt.vasz_lg2
    found: dict[int, tuple[int, int]] = {}

    def visit(table: int, level: int, base: int) -> None:
        isz = fmt.isz[level]
        items = [get(pa, 0) for pa in range(table, table + 4096, 8)]
        skip_to = 0
        for index, raw in enumerate(items):
            if not raw or index < skip_to:  # the memory is sparse: most items are 0
                continue
            kind = fmt.entry_type(level, raw)
            va = base + (index << isz)
            if level == top and cfg.sign_extend and va >> (vasz - 1):
                va |= U64 & ~((1 << vasz) - 1)
            if kind == TABLE:
                visit(fmt.table_pa(c, raw), level - 1, va)
            elif kind == OA:
                n = fmt.entry_num_contig_lg2(c, level, raw)
                assert index % (1 << n) == 0, f"contiguous block at {va:#x} misaligned"
                block = items[index : index + (1 << n)]
                stride = fmt.leaf_item_stride(c, level) if n else 0
                want = [raw + k * stride for k in range(1 << n)]
                assert block == want, f"contiguous block at {va:#x} torn"
                found[va] = (1 << (isz + n), fmt.entry_oa(c, level, raw))
                skip_to = index + (1 << n)

    visit(root, top, 0)
    return found


def check_table(pt: PageTable, cfg: Config, model: Model, probes: list[int]) -> None:
    """The table equals the model in both views; iova_to_phys agrees on the probes."""
    assert census(pt, cfg, "cpu") == model.leaves
    # The hardware root follows the software top, and the hardware sees the same
    # leaves: on an incoherent table every write was flushed before the op returned
    # (a coherent table has one memory view, so the root is all there is to check).
    assert pt.executor.roots[pt.common.domain] == (pt.top_table_pa, pt.top_level)
    if cfg.incoherent:
        assert census(pt, cfg, "hw") == model.leaves
    assert pt.top_level == model.top_level
    for iova in probes:
        want = model.translate(iova)
        assert pt.iova_to_phys(iova) == want, f"iova_to_phys({iova:#x})"
        assert pt.iova_to_phys(iova, view="hw") == want, f"hw iova_to_phys({iova:#x})"


# --- drawing operations ------------------------------------------------------------------
def draw_va(
    data: st.DataObject, cfg: Config, model: Model, granule_lg2: int, near_leaf: bool
) -> int:
    """An IOVA: near an existing leaf (collisions, unmaps inside leaves) or at random.

    It stays in the low half of one 4 GiB window, so va + size (at most 2 GiB plus a
    few pages) never leaves the window: no wrap, no sign-extension hole.
    """
    g = 1 << granule_lg2
    if model.leaves and near_leaf:
        start, (size, _) = data.draw(st.sampled_from(sorted(model.leaves.items())))
        va = data.draw(st.sampled_from([start, start, start + size, start + size // 2 // g * g]))
    else:
        base = data.draw(st.sampled_from(cfg.bases))
        align = data.draw(st.sampled_from(range(granule_lg2, WINDOW_LG2)))
        va = base + (data.draw(st.integers(0, (1 << (WINDOW_LG2 - align)) - 1)) << align)
    window = max(b for b in cfg.bases if b <= va)
    va += data.draw(st.sampled_from([0, 0, 0, -1, 1, -2, 2, 3])) * g
    return min(max(va, window), window + (1 << (WINDOW_LG2 - 1)) - (1 << 20))


def draw_size(data: st.DataObject, granule_lg2: int) -> int:
    g = 1 << granule_lg2
    shape = data.draw(st.sampled_from(["pages", "pow2", "pow2_ragged"]))
    if shape == "pages":
        return data.draw(st.integers(1, 48)) * g
    size = 1 << data.draw(st.sampled_from(range(granule_lg2, 32)))
    if shape == "pow2_ragged":
        size += data.draw(st.sampled_from([-3, -2, -1, 1, 2, 5])) * g
    return max(size, g)


def run_sequence(
    cfg: Config,
    data: st.DataObject,
    n_ops: int,
    make_table: Callable[[Config], Any] | None = None,
    model_cls: type[Model] = Model,
) -> None:
    """``make_table`` builds another implementation with the PageTable API (the old
    drivers' suite); its ``model_cls`` may answer None for an operation it leaves out."""
    pt = make_table(cfg) if make_table else PageTable(cfg.fmt, **cfg.kwargs)
    model = model_cls(cfg, pt)
    glg2 = pt.common.fmt.granule_lg2sz
    g = 1 << glg2
    rnd = random.Random(data.draw(st.integers(0, 2**32), label="probe seed"))
    oa_limit = 1 << pt.oasz_lg2
    for _ in range(n_ops):
        op = data.draw(st.sampled_from(["map", "map", "map", "unmap", "unmap", "probe"]))
        near = data.draw(st.sampled_from([False, True] if op == "map" else [False, True, True]))
        va = draw_va(data, cfg, model, glg2, near)
        probes = []
        if op == "map":
            size = draw_size(data, glg2)
            if data.draw(st.sampled_from([True, True, False])):
                # Physical address congruent with the IOVA modulo 1 GiB: large pages.
                pa = (va & ((1 << 30) - 1)) + (data.draw(st.integers(1, 255)) << 30)
            else:
                # Arbitrary alignment: small pages only, so keep the request short.
                pa = data.draw(st.integers(1, 1 << 26)) * g
                size = min(size, 256 * g)
            assert pa + size <= oa_limit
            prot = data.draw(st.sampled_from(PROTS))
            want = model.map(va, pa, size)
            if want is None:
                continue
            try:
                pt.map(va, pa, size, prot)
                got = 0
            except PTError as err:
                got = err.errno
            assert got == want, f"map {va:#x}+{size:#x} -> {pa:#x}"
            probes += [va, va + size - 1, va + rnd.randrange(size)]
        elif op == "unmap":
            choice = data.draw(st.sampled_from(["leaf", "ragged", "random"]))
            leaf = model.containing(va)
            if choice == "leaf" and leaf is not None:
                size = leaf[1] + data.draw(st.sampled_from([0, -g, g]))
            elif choice == "ragged":
                size = data.draw(st.integers(1, 64)) * g
            else:
                size = draw_size(data, glg2)
            size = max(size, g)
            removed = [s for s in model.leaves if s >= va and s < va + size + (1 << 31)]
            want = model.unmap(va, size)
            if want is None:
                continue
            assert pt.unmap(va, size) == want, f"unmap {va:#x}+{size:#x}"
            probes += [va, va + size - 1, *removed[:4]]
        else:
            probes += [va + rnd.randrange(g), va - 1]
        # A few addresses anywhere inside known leaves, with a sub-page offset.
        for start, (size, _) in rnd.sample(sorted(model.leaves.items()), min(3, len(model.leaves))):
            probes.append(start + rnd.randrange(size))
        check_table(pt, cfg, model, [p & U64 for p in probes])

    if data.draw(st.booleans(), label="unmap everything before deinit"):
        for start, (size, _) in sorted(model.leaves.items()):
            assert pt.unmap(start, size) == size
        model.leaves.clear()
        check_table(pt, cfg, model, [])
    pt.deinit()
    assert pt.live_table_pages == 0, "table pages leaked"
    assert pt.executor.allocator.bad_frees == []
    assert pt.warnings == [], "PT_WARN_ON fired"


def _random_ops_test(cfg: Config, seed_value: int, **sequence: Any):
    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        # No shrinking: a failure is reported with its draws at once instead of after
        # minutes of shrinking, which keeps the run time bounded.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @seed(seed_value)  # deterministic, and a different sequence for every config
    @given(data=st.data())
    def test(data: st.DataObject) -> None:
        run_sequence(cfg, data, n_ops=16, **sequence)

    test.__name__ = f"test_random_ops_match_model_{cfg.name}"
    test.__doc__ = (
        f"{cfg.name}: random maps (several page sizes per call, collisions), unmaps "
        "(inside a leaf, ending inside a leaf, over holes) and lookups keep the table "
        "equal to the model in the CPU and hardware views; deinit frees every page."
    )
    return test


for _n, _cfg in enumerate(CONFIGS):
    globals()[f"test_random_ops_match_model_{_cfg.name}"] = _random_ops_test(_cfg, 1000 + _n)


@pytest.mark.parametrize(
    "fmt, kwargs, va, pa, size, sizes",
    [
        # x86: 4K up to the 2M boundary, 2M up to 1G, 1G pages, then 2M and 4K.
        (
            "x86_64",
            {"features": {"sign_extend"}},
            0x3FE0_0000 - 0x2000,
            0x1_3FE0_0000 - 0x2000,
            (2 << 30) + (4 << 20) + 0x4000,
            {1 << 12: 4, 1 << 21: 2, 1 << 30: 2},
        ),
        # AMDv1: contiguous sizes 8K..1M at level 0, 2M..512M at level 1.
        (
            "amdv1",
            {},
            0x10_0000 - 0x3000,
            0x8_0010_0000 - 0x3000,
            (8 << 20) + 0x7000,
            {1 << 12: 1, 1 << 13: 1, 1 << 20: 2, 1 << 21: 1, 1 << 22: 1, 1 << 14: 1},
        ),
        # RISC-V with Svnapot: 64K NAPOT leaves between 4K and 2M.
        (
            "riscv64",
            {"vasz_lg2": 48, "features": {"riscv_svnapot_64k"}},
            0x20_0000 - 0x11000,
            0x4020_0000 - 0x11000,
            0x11000 + 0x21000,
            {1 << 12: 2, 1 << 16: 3},
        ),
        # ARMv8: the contiguous hint gives 64K between 4K and 2M ...
        (
            "armv8",
            {},
            0x20_0000 - 0x11000,
            0x4020_0000 - 0x11000,
            0x11000 + 0x21000,
            {1 << 12: 2, 1 << 16: 3},
        ),
        # ... and 32M between 2M and 1G.
        (
            "armv8",
            {},
            0x200_0000 - 0x20_0000,
            0x1_0200_0000 - 0x20_0000,
            0x20_0000 + 0x200_0000 + 0x1000,
            {1 << 21: 1, 1 << 25: 1, 1 << 12: 1},
        ),
    ],
    ids=["x86_64", "amdv1", "riscv64_napot", "armv8_64k", "armv8_32m"],
)
def test_one_map_emits_several_page_sizes(fmt, kwargs, va, pa, size, sizes) -> None:
    """S6 map_range: one call installs the greedy mix of page sizes (checked by a
    census of the table), translates every part, and unmaps in one call."""
    pt = PageTable(fmt, **kwargs)
    pt.map(va, pa, size, RW)
    cfg = Config(fmt, fmt, kwargs)
    leaves = census(pt, cfg, "cpu")
    counts: dict[int, int] = {}
    for sz, _ in leaves.values():
        counts[sz] = counts.get(sz, 0) + 1
    assert counts == sizes
    assert {
        va: (sz, p) for va, sz, p in split_into_leaves(pt.pgsize_bitmap, va, pa, size)
    } == leaves
    for off in (0, size // 3, size - 1):
        assert pt.iova_to_phys(va + off) == pa + off
    assert pt.unmap(va, size) == size
    assert census(pt, cfg, "cpu") == {}
    pt.deinit()
    assert pt.live_table_pages == 0
