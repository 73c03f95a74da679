"""Calibrating the named CPU work (``cpu.work.<name>``) on four published points.

The kernel developers published the generic page table's own benchmark
(kunit_iommu_perf.h) when they converted AMD IOMMU v1: AMDv1 genpt, coherent walker,
warm table, Intel i7-12700, gcc 13.3. Four of its minima are the *only* numbers the
work costs are fitted to (``POINTS``); everything else ``iommusim perf`` prints is a
prediction.

The rule, fixed before looking at any residual:

1. ``level`` is not fitted: a level costs the load-to-use latency of the dependent
   load that follows it (Golden Cove L1D: 5 cycles) less the ``cpu.load_hit`` the
   memory model already charges for that load. Its index arithmetic (~8
   instructions) issues in the shadow of that latency on a 6-wide core.
2. The other names get an instruction count each, estimated by reading the C code
   (``INSTRUCTIONS``), and fall in two groups: per-call work (the core and op entry,
   the page-size choice, gather bookkeeping, a loop's set-up) and per-item work (the
   tight loops). Within a group, costs keep the ratios of the instruction counts;
   each group gets one cycles-per-instruction scale.
3. The two scales are the least-squares solution over the four points, on relative
   error (each point counts the same however long it is).

The points were measured on S5, whose iommu core called ``iommu_pgsize()`` before
every ``map_pages``/``unmap_pages``; the bench runs genpt behind that core too
(``perf.GenptOps``), so the counts below are those of the measured kernel.

Counts come from running the benchmark with every work cost at zero and counting the
named work each call yields (``perf.counting``); a call's cycles are its memory
cycles plus the sum of count times cost, so the fit is linear.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..hwmodels.config import HardwareConfig, WorkConfig
from ..tables.work import (
    CONTIG_SETUP,
    CORE_CALL,
    GATHER,
    ITEM_EXAMINE,
    ITEM_WRITE,
    LEVEL,
    OP_CALL,
    PGSIZE_SPLIT,
)
from .perf import TIMER_CYCLES, Bench


@dataclass(frozen=True)
class Point:
    """One published minimum: genpt amdv1 ``op`` of ``case``, in ns."""

    op: str
    case: str
    ns: float


POINTS = (
    Point("map", "2^12", 62),
    Point("map", "256*2^12", 367),
    Point("unmap", "2^12", 71),
    Point("unmap", "256*2^12", 364),
)
SOURCE = (
    "min new ns of the kunit_iommu_perf report in 'iommupt: Add the AMD IOMMU v1 page "
    "table format' (Jason Gunthorpe, v5 2025-09; linux 879ced2b): AMDv1 genpt, coherent "
    "walker, warm table, Intel i7-12700, gcc 13.3"
)

L1_LOAD_TO_USE = 5  # Golden Cove L1D (Chips and Cheese; configs/i7-12700.yaml [cnc])

INSTRUCTIONS = {
    # iommu_map / iommu_unmap: domain, ops and bitmap checks, min-page alignment, the
    # rollback bookkeeping, the sync call (gather init and iotlb_sync for unmap)
    CORE_CALL: 80,
    # map_range / unmap_range entry: prot checks, set_prot, make_range, READ_ONCE of the
    # top, check_map_range, the walk's dispatch, *mapped; the old drivers' op wrappers
    OP_CALL: 100,
    # iommu_pgsize / pt_compute_best_pgsize + pt_pgsz_count: ffs, fls, masks, compares
    PGSIZE_SPLIT: 25,
    # gather_range_pages / iommu_iotlb_gather_add_page: a few compares and stores
    GATHER: 12,
    # one loop's set-up: pt_init, index and end index, step, flush-span bookkeeping
    CONTIG_SETUP: 15,
    # one item in a tight loop: type decode and dispatch, the index step
    ITEM_EXAMINE: 6,
    # one item written: OR the OA into the prepared attributes, advance the OA
    ITEM_WRITE: 4,
}
CALL_WORK = (CORE_CALL, OP_CALL, PGSIZE_SPLIT, GATHER, CONTIG_SETUP)
ITEM_WORK = (ITEM_EXAMINE, ITEM_WRITE)


@dataclass(frozen=True)
class Measured:
    """One calibration point as the model sees it with all work costs at zero."""

    point: Point
    memory_cycles: int  # the call's cycles without work: its memory transactions
    work: Counter[str]  # named work counted in the call


@dataclass(frozen=True)
class Fit:
    """The fitted costs, the scales they came from and the points they fit."""

    costs: dict[str, float]
    call_scale: float  # cycles per instruction of per-call work
    item_scale: float  # cycles per instruction of per-item work
    measured: tuple[Measured, ...]
    clock_ghz: float

    def predicted_ns(self, m: Measured) -> float:
        cycles = m.memory_cycles + TIMER_CYCLES + sum(
            n * self.costs[name] for name, n in m.work.items()
        )
        return cycles / self.clock_ghz

    def residuals(self) -> list[float]:
        """Relative error at each point, in percent."""
        return [
            (self.predicted_ns(m) - m.point.ns) * 100 / m.point.ns for m in self.measured
        ]


def zero_work(hw: HardwareConfig) -> HardwareConfig:
    """``hw`` with every named work cost at zero (a call then costs its memory only)."""
    cpu = hw.cpu.model_copy(update={"work": WorkConfig(**dict.fromkeys(INSTRUCTIONS, 0),
                                                       level=0)})
    return hw.model_copy(update={"cpu": cpu})


def measure(hw: HardwareConfig) -> tuple[Measured, ...]:
    """Run genpt amdv1 (coherent) on ``hw`` for the calibration cases, work at zero."""
    bench = Bench(zero_work(hw), "amdv1", "coherent")
    wanted = {p.case for p in POINTS}
    found = {}
    for case in bench.cases():
        if case.name in wanted:
            found[case.name] = bench.run_case(case, 1, count_work=True)
    out = []
    for p in POINTS:
        times = found[p.case]
        out.append(Measured(p, times.cycles[p.op, "new"][0], times.work[p.op, "new"]))
    return tuple(out)


def least_squares_2(rows: list[list[float]], rhs: list[float]) -> tuple[float, float]:
    """The (a, b) minimising sum((a*x + b*y - r)^2) over rows (x, y): the 2x2 normal
    equations, solved in closed form (no numpy needed for two unknowns)."""
    sxx = sum(x * x for x, _ in rows)
    sxy = sum(x * y for x, y in rows)
    syy = sum(y * y for _, y in rows)
    sxr = sum(x * r for (x, _), r in zip(rows, rhs, strict=True))
    syr = sum(y * r for (_, y), r in zip(rows, rhs, strict=True))
    det = sxx * syy - sxy * sxy
    return (sxr * syy - syr * sxy) / det, (syr * sxx - sxr * sxy) / det


def fit(hw: HardwareConfig) -> Fit:
    """The rule of the module docstring, on the machine ``hw`` (its clock, its
    memory costs); the returned costs are what ``WorkConfig``'s defaults hold."""
    measured = measure(hw)
    level = float(L1_LOAD_TO_USE - hw.cpu.load_hit)
    rows, rhs = [], []
    for m in measured:
        target = m.point.ns * hw.clock_ghz
        fixed = m.memory_cycles + TIMER_CYCLES + m.work[LEVEL] * level
        calls = sum(m.work[n] * INSTRUCTIONS[n] for n in CALL_WORK)
        items = sum(m.work[n] * INSTRUCTIONS[n] for n in ITEM_WORK)
        rows.append([calls / target, items / target])
        rhs.append((target - fixed) / target)
    call_scale, item_scale = least_squares_2(rows, rhs)
    costs = {LEVEL: level}
    for name in CALL_WORK:
        costs[name] = round(INSTRUCTIONS[name] * float(call_scale), 2)
    for name in ITEM_WORK:
        costs[name] = round(INSTRUCTIONS[name] * float(item_scale), 2)
    return Fit(costs, float(call_scale), float(item_scale), measured, hw.clock_ghz)


def report(f: Fit, current: WorkConfig | None = None) -> str:
    """The fit as text: the rule's inputs, the scales, the costs and the residuals."""
    lines = [
        f"Calibration points: {SOURCE}.",
        f"level = L1 load-to-use {L1_LOAD_TO_USE} - cpu.load_hit (not fitted); timer "
        f"bracket {TIMER_CYCLES} cycles (not fitted).",
        f"scales (least squares on relative error): per-call {f.call_scale:.3f}, "
        f"per-item {f.item_scale:.3f} cycles per instruction",
        "",
        f"{'name':14s} {'instr':>6s} {'fitted':>8s} {'in use':>8s}",
    ]
    for name, cycles in f.costs.items():
        instr = str(INSTRUCTIONS.get(name, "-"))
        used = "" if current is None else f"{getattr(current, name):8.2f}"
        lines.append(f"{name:14s} {instr:>6s} {cycles:8.2f} {used}")
    lines += ["", f"{'point':18s} {'published':>9s} {'model':>8s} {'error':>7s}"]
    for m, err in zip(f.measured, f.residuals(), strict=True):
        label = f"{m.point.op} {m.point.case}"
        lines.append(f"{label:18s} {m.point.ns:9.0f} {f.predicted_ns(m):8.1f} {err:+6.1f}%")
    return "\n".join(lines)
