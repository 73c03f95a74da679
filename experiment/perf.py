"""The kernel's own map/unmap benchmark (kunit_iommu_perf.h), timed on a modelled CPU.

``drivers/iommu/generic_pt/kunit_iommu_perf.h`` (jgunthorpe/linux) times
``iommu_map``/``iommu_unmap`` on two domains of one format: the generic page table
(new) and the io-pgtable code it replaced (old). Per case -- a single IOPTE of every
supported page size 2^k, then 256 IOPTEs of 4K, 2M and 1G -- it throws the first
map/unmap away (no allocation is timed), then runs LOOPS iterations of map (new, old)
then unmap (new, old), and prints ``avg new,old ns, min new,old ns, min %`` with
min % = (old_min - new_min) * 100 / old_min.

Here both domains live on one simulated machine (``hwmodels.Machine``), built at
cycle 0 with the zero-time executor, and one CPU core runs every call, so the
latencies are the model's: memory transactions through the cache model plus named
CPU work (``tables.work``, ``cpu.work.<name>``). What the kunit fixture does that a
driver would not, the bench does too: its domains have no IOMMU behind them
(``pt_kunit_iotlb_sync`` only frees the gathered pages, there is no
``iotlb_sync_map``), so IOMMU commands cost nothing here.

Both domains sit behind the iommu core of the era the benchmark was published in
(``tables.iopgtable.iommu``: ``iommu_pgsize`` splits the request, then the domain's
``map_pages``/``unmap_pages``), as in the published numbers: genpt's ops of that
time (S5) are ``map_range``/``unmap_range`` of one chunk (``GenptOps``). Today's
core calls ``map_range`` directly (S6), one ``iommu_pgsize`` cheaper per call.

Two things the table code cannot know are added per timed call (``timed_cycles``):
the part of the two ``ktime_get()`` calls that falls inside the measured interval
(``TIMER_CYCLES``), and a per-iteration noise draw, so that avg and min differ as on
hardware while min stays the deterministic cost (see ``noise_cycles``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..hwmodels.component import component_rng
from ..hwmodels.config import HardwareConfig, InvalidationConfig
from ..hwmodels.machine import Machine
from ..hwmodels.sim import SimEnvironment
from ..tables import PageTable
from ..tables import features as F
from ..tables.formats import get_format
from ..tables.gather import Gather
from ..tables.iopgtable import LegacyTable, implementation_for
from ..tables.iopgtable import iommu as era_core
from ..tables.iter import Gen, top_range
from ..tables.map import map_range
from ..tables.prot import RW
from ..tables.transactions import FREE_TABLE, WORK
from ..tables.unmap import unmap_range
from ..tables.work import OP_CALL

FORMATS = ("amdv1", "x86_64", "vtdss", "armv8")
"""The four pairs the kernel compares, by genpt format (old: ``implementation_for``)."""

# Which of the format's kunit cfgs the bench uses: the one whose geometry is the old
# driver's default (AMD v1 mode 3; 4-level, 48-bit x86_64 / VT-d / ARM LPAE).
KUNIT_CFG = {"amdv1": 0, "x86_64": 0, "vtdss": 1, "armv8": 0}

WALKERS = ("coherent", "incoherent")
TEST_OA = 0x74A71445DEADBEEF  # kunit_iommu.h: test_oa before the OA-width mod
MAX_LOOPS = 1_000_000

TIMER_CYCLES = 60
"""Cycles of the two ``ktime_get()`` calls inside each timed interval: the end of the
first (after its TSC read: the clocksource multiply/shift, the seqcount re-check and
the return, ~15 instructions) and the start of the second (call, seqcount read,
``rdtsc_ordered``: LFENCE + RDTSC, ~25-30 cycles on Skylake-family cores per Agner
Fog's instruction tables). An estimate, fixed before the fit and not fitted."""

NOISE_FRACTION = 0.03
NOISE_CYCLES = 10
"""Per-iteration noise: an exponential draw with mean ``NOISE_FRACTION`` of the call's
deterministic cycles plus ``NOISE_CYCLES`` (branch and cache variation, the timer's
own jitter). An assumption set once, never fitted: it only makes avg exceed min by a
few percent as on a quiet machine; min stays within a cycle or two of the
deterministic cost, so the calibration points do not depend on it."""


@dataclass(frozen=True)
class Case:
    """One line of the kernel's report: ``count`` IOPTEs of 2^``pgsz_lg2``."""

    count: int
    pgsz_lg2: int
    va: int
    pa: int

    @property
    def name(self) -> str:
        return f"2^{self.pgsz_lg2}" if self.count == 1 else f"{self.count}*2^{self.pgsz_lg2}"

    @property
    def length(self) -> int:
        return self.count << self.pgsz_lg2


@dataclass
class CaseTimes:
    """Deterministic cycles of every timed call of one case, per op and side."""

    case: Case
    cycles: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (op, side)
    work: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)  # one call's


@dataclass(frozen=True)
class Row:
    """One row of ``perf.json``: what the kernel prints for one case and op."""

    format: str
    old: str
    walker: str
    op: str
    case: str
    avg_new_ns: float
    avg_old_ns: float
    min_new_ns: float
    min_old_ns: float
    min_pct: float


# --- the two domains ------------------------------------------------------------------
def genpt_cfg(fmt: str, incoherent: bool) -> dict[str, Any]:
    """The kunit fixture's cfg (pt_kunit_priv_init): the chosen kunit cfg, every other
    supported feature on, DMA_INCOHERENT only for an incoherent walker (the fixture
    itself always clears it: "DMA flushing can't be tested using the kunit device")."""
    f = get_format(fmt)
    cfg = dict(f.kunit_cfgs[KUNIT_CFG[fmt]])
    features = cfg.get("features", 0) | (f.supported & ~f.kunit_fmt_features)
    features &= ~F.bit(F.DMA_INCOHERENT)
    if incoherent and f.supported & F.bit(F.DMA_INCOHERENT):
        features |= F.bit(F.DMA_INCOHERENT)
    cfg["features"] = features
    cfg.setdefault("hw_max_vasz_lg2", 0)
    cfg.setdefault("hw_max_oasz_lg2", 0)
    return cfg


def _kunit_iotlb_sync(gather: Any) -> Gen:
    """pt_kunit_iotlb_sync: no IOMMU to invalidate, just free the gathered pages."""
    for pa in gather.freelist:
        yield (FREE_TABLE, pa)
    gather.freelist = []


def _no_sync_map(iova: int, size: int) -> Gen:
    """The kunit's io-pgtable domain ops have no iotlb_sync_map."""
    return 0
    yield  # pragma: no cover - makes this a generator


def _without_op_call(op: Gen) -> Gen:
    """``op`` minus its own OP_CALL: the era's core charges the op's entry itself."""
    skipped = False
    result: Any = None
    while True:
        try:
            tx = op.send(result)
        except StopIteration as stop:
            return stop.value
        if not skipped and tx[0] is WORK and len(tx) == 3 and tx[1] == OP_CALL:
            skipped = True
            result = None
            continue
        result = yield tx


class GenptOps:
    """A genpt domain as the S5 iommu core drove it: the driver interface of
    ``tables.iopgtable.iommu`` over genpt's ``map_range``/``unmap_range``, with the
    kunit fixture's iotlb_sync (free the gathered pages) and no iotlb_sync_map."""

    def __init__(self, pt: PageTable) -> None:
        self.pt = pt
        self.common = pt.common
        self.pgsize_bitmap = pt.pgsize_bitmap

    def map_pages(self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int,
                  mapped: list[int]) -> Gen:
        return _without_op_call(map_range(self.common, iova, paddr, pgsize * pgcount, prot,
                                          mapped))

    def unmap_pages(self, iova: int, pgsize: int, pgcount: int, gather: Gather) -> Gen:
        return _without_op_call(unmap_range(self.common, iova, pgsize * pgcount, gather))

    def iotlb_sync(self, gather: Gather) -> Gen:
        return _kunit_iotlb_sync(gather)

    def iotlb_sync_map(self, iova: int, size: int) -> Gen:
        return _no_sync_map(iova, size)

    def map_op(self, iova: int, pa: int, size: int, prot: int) -> Gen:
        return era_core.iommu_map(self, iova, pa, size, prot)  # type: ignore[arg-type]

    def unmap_op(self, iova: int, size: int) -> Gen:
        return era_core.iommu_unmap(self, iova, size)  # type: ignore[arg-type]


class Bench:
    """One pair's two domains on one machine, driven as the kunit test drives them."""

    def __init__(
        self,
        hw: HardwareConfig,
        fmt: str,
        walker: str = "coherent",
        *,
        compare_fix: str | None = None,
        seed: int = 0,
    ) -> None:
        incoherent = walker == "incoherent"
        iommu = hw.iommu.model_copy(
            update={
                "coherent_walk": not incoherent,
                "invalidation": InvalidationConfig(submit=0, command=0, wait=0),
            }
        )
        self.hw = hw.model_copy(update={"iommu": iommu})
        self.machine = Machine(self.hw, seed=seed, env=SimEnvironment(lookahead=True))
        self.env = self.machine.env
        self.core = self.machine.cpus[0]
        self.fmt = fmt
        cfg = genpt_cfg(fmt, incoherent)
        self.genpt = PageTable.from_cfg(fmt, cfg, executor=self.machine.executor, domain=1,
                                        debug=False)
        self.new = GenptOps(self.genpt)
        self.old: GenptOps | LegacyTable
        if compare_fix is not None:
            self.old_name = f"genpt:{compare_fix}=off"
            self.old = GenptOps(PageTable.from_cfg(
                fmt, cfg, executor=self.machine.executor, domain=2, debug=False,
                fixes={compare_fix: False}))
        else:
            self.old_name = implementation_for(fmt)
            c = self.genpt.common
            features = ["dma_incoherent"] if incoherent else []
            self.old = LegacyTable(fmt, vasz_lg2=c.max_vasz_lg2, oasz_lg2=c.max_oasz_lg2,
                                   features=features, executor=self.machine.executor,
                                   domain=2, debug=False)
            self.old.drv.iotlb_sync = _kunit_iotlb_sync  # type: ignore[method-assign]
            self.old.drv.iotlb_sync_map = _no_sync_map  # type: ignore[method-assign]

    # --- the cases -------------------------------------------------------------------
    def cases(self) -> list[Case]:
        """test_map_unmap_benchmark's cases, in its order, with its addresses."""
        c = self.genpt.common
        top = top_range(c, self.genpt.top_of_table)
        bitmap = self.genpt.pgsize_bitmap & ((1 << (c.max_vasz_lg2 - 1)) - 1)  # safe_pgsize
        test_oa = TEST_OA & ((1 << c.max_oasz_lg2) - 1)
        cases = []
        for count, restrict in ((1, 0), (256, (1 << 12) | (1 << 21) | (1 << 30))):
            if restrict:
                bitmap &= restrict
            for k in range(64):
                if not bitmap >> k & 1 or count << k >= top.last_va:
                    continue
                pa = test_oa & ~((1 << k) - 1)
                # An OA aligned to the page size, a VA that differs from it in bit k,
                # so that no larger page can ever be used ("no page combining").
                va = (~pa & (1 << k)) | top.va
                cases.append(Case(count, k, va, pa))
        return cases

    # --- timing ----------------------------------------------------------------------
    def op(self, side: str, op: str, case: Case) -> Gen:
        table = self.new if side == "new" else self.old
        if op == "map":
            return table.map_op(case.va, case.pa, case.length, RW)
        return table.unmap_op(case.va, case.length)

    def call(self, side: str, op: str, case: Case, work: Counter[str] | None = None) -> int:
        """Run one call on the core; its cycles. A call that does not do what the
        kunit test expects (map returns 0, unmap returns the length) is a bug."""
        gen = self.op(side, op, case)
        if work is not None:
            gen = counting(gen, work)
        start = self.env.now
        proc = self.env.process(self.core.execute(gen, f"{side}.{op}"))
        self.env.run(until=proc)
        expect = 0 if op == "map" else case.length
        if proc.value != expect:
            raise RuntimeError(
                f"{self.fmt} {side} {op} {case.name}: returned {proc.value!r}, kunit "
                f"expects {expect!r}"
            )
        return int(self.env.now - start)

    def run_case(self, case: Case, loops: int, *, count_work: bool = False) -> CaseTimes:
        """The first map/unmap thrown away, then ``loops`` timed iterations."""
        times = CaseTimes(case)
        keys = [(op, side) for op in ("map", "unmap") for side in ("new", "old")]
        for key in keys:
            times.cycles[key] = []
            times.work[key] = Counter()
        for iteration in range(loops + 1):
            for op, side in keys:
                work = times.work[op, side] if count_work and iteration == 1 else None
                cycles = self.call(side, op, case, work)
                if iteration:
                    times.cycles[op, side].append(cycles)
        return times


def counting(op: Gen, counts: Counter[str]) -> Gen:
    """Pass ``op``'s transactions through, counting its named work by name."""
    result: Any = None
    while True:
        try:
            tx = op.send(result)
        except StopIteration as stop:
            return stop.value
        if tx[0] is WORK and len(tx) == 3:
            counts[tx[1]] += tx[2]
        result = yield tx


# --- from cycles to the kernel's numbers ----------------------------------------------
def noise_cycles(rng: random.Random, cycles: int) -> float:
    """One iteration's noise (see ``NOISE_FRACTION``)."""
    return rng.expovariate(1.0 / (NOISE_FRACTION * cycles + NOISE_CYCLES))


def timed_cycles(cycles: int) -> int:
    """What ktime would see for a call of ``cycles``: plus the timer's bracket."""
    return cycles + TIMER_CYCLES


def case_rows(bench: Bench, times: CaseTimes, walker: str, rng: random.Random) -> list[Row]:
    """The map and unmap rows of one case; noise drawn in the kernel's call order."""
    ghz = bench.hw.clock_ghz
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in times.cycles}
    loops = len(times.cycles["map", "new"])
    for i in range(loops):
        for key in (("map", "new"), ("map", "old"), ("unmap", "new"), ("unmap", "old")):
            cycles = timed_cycles(times.cycles[key][i])
            samples[key].append((cycles + noise_cycles(rng, cycles)) / ghz)
    rows = []
    for op in ("map", "unmap"):
        new, old = samples[op, "new"], samples[op, "old"]
        min_new, min_old = min(new), min(old)
        rows.append(Row(
            format=bench.fmt, old=bench.old_name, walker=walker, op=op, case=times.case.name,
            avg_new_ns=round(sum(new) / loops, 1), avg_old_ns=round(sum(old) / loops, 1),
            min_new_ns=round(min_new, 1), min_old_ns=round(min_old, 1),
            min_pct=round((min_old - min_new) * 100 / min_old, 2),
        ))
    return rows


def run_pair(
    hw: HardwareConfig,
    fmt: str,
    walker: str,
    loops: int,
    seed: int = 0,
    *,
    compare_fix: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Every case of one pair: map rows then unmap rows, as the kernel reports them."""
    bench = Bench(hw, fmt, walker, compare_fix=compare_fix, seed=seed)
    rng = component_rng(seed, f"perf.{fmt}.{walker}")
    rows: list[Row] = []
    for case in bench.cases():
        if progress is not None:
            progress(f"{fmt} {case.name}")
        rows += case_rows(bench, bench.run_case(case, loops), walker, rng)
    return [r for r in rows if r.op == "map"] + [r for r in rows if r.op == "unmap"]


def run_perf(
    hw: HardwareConfig,
    formats: Iterable[str] = FORMATS,
    walker: str = "coherent",
    loops: int = 20,
    seed: int = 0,
    *,
    compare_fix: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """The benchmark for each chosen pair, in the order given."""
    rows: list[Row] = []
    for fmt in formats:
        rows += run_pair(hw, fmt, walker, loops, seed, compare_fix=compare_fix,
                         progress=progress)
    return rows


def check_args(formats: Iterable[str], walker: str, loops: int,
               compare_fix: str | None) -> list[str]:
    """Everything wrong with a request, as messages (empty when it can run)."""
    from ..tables.fixes import FIX_DESCRIPTIONS

    problems = []
    for fmt in formats:
        if fmt not in FORMATS:
            problems.append(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if walker not in WALKERS:
        problems.append(f"unknown walker {walker!r}; valid: {', '.join(WALKERS)}")
    if not 1 <= loops <= MAX_LOOPS:
        problems.append(f"--loops must be between 1 and {MAX_LOOPS}, not {loops}")
    if compare_fix is not None and compare_fix not in FIX_DESCRIPTIONS:
        problems.append(
            f"unknown fix switch {compare_fix!r}; valid: {', '.join(FIX_DESCRIPTIONS)}"
        )
    return problems

