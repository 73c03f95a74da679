"""Checks that need the table format or the hardware, run before anything simulates.

Two facts belong to the experiment layer, which builds tables and computes metrics:
whether the scenario's table can be created, and which metric names exist. They are
handed in as ``RunChecks`` (``experiment.load`` does), so the input language imports
nothing above it; without them those two checks are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import Problem, did_you_mean, format_path
from ..hwmodels.config import HardwareConfig
from ..tables import PTError, get_format
from ..tables.features import feature_mask
from ..tables.iopgtable import IMPLEMENTATIONS as IOPGTABLE
from ..tables.iopgtable import LegacyTable
from ..tables.iopgtable.arm_lpae import DBM_FEATURE
from ..tables.iopgtable.vtd import (
    FEATURE_FORCE_SNOOP,
    FEATURE_NESTED_PARENT,
    FEATURE_NO_1G,
    FEATURE_SP_OFF,
)
from ..tables.log2 import ffs
from .conditions import parse_condition
from .schema import Op, Scenario
from .yamldoc import JsonDoc, Loc, Override, YamlDoc

Report = Callable[[Loc, str], None]


@dataclass(frozen=True)
class RunChecks:
    """What the experiment layer knows: how to create the table (raises PTError), and
    the metric vocabulary of ``expect:``."""

    make_table: Callable[[Scenario, HardwareConfig], Any]
    metric_known: Callable[[str], bool]
    metric_names: Callable[[], list[str]]


def check_experiment(
    s: Scenario, hw: HardwareConfig, doc: YamlDoc | JsonDoc,
    origins: dict[Loc, Override] | None = None,
    run: RunChecks | None = None,
) -> list[Problem]:
    """``origins``: the scenario keys ``--set`` or a sweep point changed; a problem inside
    one of them is reported against that override, not the file."""
    out: list[Problem] = []

    def problem(loc: Loc, message: str) -> None:
        for ov_loc, ov in (origins or {}).items():
            if loc[: len(ov_loc)] == ov_loc:
                out.append(ov.problem(message))
                return
        out.append(Problem(doc.source, doc.line_of(loc), format_path(loc), message))

    fmt = get_format(s.table.format)
    if s.table.implementation == "io-pgtable":
        bad_table = _check_iopgtable(s, problem)
    else:
        bad_table = _check_genpt_features(s, problem)
    if not bad_table and run is not None:
        try:
            pt = run.make_table(s, hw)
        except (PTError, ValueError) as exc:
            problem(("table",), f"the {fmt.name} table cannot be created: {exc}")
        else:
            last = pt.aperture_end if isinstance(pt, LegacyTable) else pt.common.aperture_end
            _check_addresses(s, pt.pgsize_bitmap, last, problem, getattr(pt, "oasz_lg2", None))
            if not fmt.dirty_bit:
                for loc, _, _ in _ops(s, "read_and_clear_dirty"):
                    problem(loc, f"the {fmt.name} format has no dirty tracking")

    _check_size(s, problem)
    if hw.cpu.count > MAX_CPUS:  # the machine builds every core: 10**9 would never start
        problem(("hardware",), f"cpu.count is {hw.cpu.count:,}; a simulated machine has at "
                f"most {MAX_CPUS} CPUs")
    if len(s.cpus) > hw.cpu.count:
        problem(("cpus",), f"{len(s.cpus)} CPUs in the scenario, the hardware has {hw.cpu.count}")
    _check_names(s, problem)
    _check_events(s, problem)
    for name, expectation in s.expect.items():
        if run is not None and not run.metric_known(name):
            hint = did_you_mean(name, run.metric_names())
            problem(("expect", name), f"unknown metric {name!r}{hint}")
        try:
            parse_condition(expectation.condition)
        except ValueError as exc:
            problem(("expect", name), str(exc))
    if s.regression is not None:
        _check_regression(s, run, problem)
    return out


def _check_regression(s: Scenario, run: RunChecks | None, problem: Report) -> None:
    """The guard's metrics exist (a sweep over its switch is fine for ``run``; only
    ``iommusim check`` refuses it, in experiment.regression)."""
    guard = s.regression
    assert guard is not None
    for name in guard.symptom:
        if run is not None and not run.metric_known(name):
            hint = did_you_mean(name, run.metric_names())
            problem(("regression", "symptom", name), f"unknown metric {name!r}{hint}")


def _check_genpt_features(s: Scenario, problem: Report) -> bool:
    """Unknown feature names (a name only an old driver reads says so); True if any."""
    fmt = get_format(s.table.format)
    bad = False
    for i, name in enumerate(s.table.features):
        try:
            feature_mask([name], fmt.private_features)
        except ValueError as exc:
            old = IOPGTABLE.get(s.table.format)
            only_old = old is not None and name in IOPGTABLE_FEATURES[s.table.format][0]
            hint = f" ('{name}' is read by the io-pgtable {old[0]} code only)" if only_old else ""
            problem(("table", "features", i), f"{exc}{hint}")
            bad = True
    return bad


# What each old driver does with table.features, by genpt format: (the names it reads,
# genpt features naming what it does anyway). Any other name is an error: a genpt
# feature the old code cannot honour would otherwise be silently dropped.
IOPGTABLE_FEATURES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "vtdss": (
        frozenset({"dma_incoherent", FEATURE_FORCE_SNOOP, FEATURE_NESTED_PARENT,
                   FEATURE_SP_OFF, FEATURE_NO_1G}),
        frozenset(),
    ),
    # increase_address_space always grows the top; leaves always carry FC; __sme_set
    # (SME is not modelled: the identity, as genpt with sme_mask 0).
    "amdv1": (
        frozenset(),
        frozenset({"dynamic_top", "amdv1_force_coherence", "amdv1_encrypt_tables"}),
    ),
    "x86_64": (frozenset(), frozenset({"x86_64_amd_encrypt_tables"})),
    "armv8": (frozenset({"dma_incoherent", DBM_FEATURE}), frozenset()),
}
# Why a genpt feature means nothing to an old driver, where the reason is not just
# "that code has no such option".
IOPGTABLE_WHY: dict[tuple[str, str], str] = {
    ("amdv1", "dma_incoherent"): "it never cleans a CPU cache line (the AMD IOMMU snoops)",
    ("x86_64", "dma_incoherent"): "it never cleans a CPU cache line (the AMD IOMMU snoops)",
    ("x86_64", "sign_extend"): "PASID 0 translates the lower canonical half only",
    ("armv8", "armv8_s2"): "it is the stage-1 table (ARM_64_LPAE_S1)",
}


def _check_iopgtable(s: Scenario, problem: Report) -> bool:
    """The format had old code, and every feature means something to it; True if not."""
    fmt = s.table.format
    if fmt not in IOPGTABLE:
        have = ", ".join(f"{f} ({old})" for f, (old, _) in IOPGTABLE.items())
        problem(("table", "implementation"), f"the {fmt} format had no io-pgtable "
                f"implementation; io-pgtable exists for {have}; use genpt for {fmt}")
        return True
    old = IOPGTABLE[fmt][0]
    reads, always = IOPGTABLE_FEATURES[fmt]
    valid = ", ".join(sorted(reads | always)) or "none"
    genpt = get_format(fmt)
    bad = False
    for i, name in enumerate(s.table.features):
        if name in reads or name in always:
            continue
        try:
            feature_mask([name], genpt.private_features)
        except ValueError:
            msg = f"unknown feature {name!r}"
        else:
            why = IOPGTABLE_WHY.get((fmt, name))
            msg = f"{name!r} is a genpt feature the io-pgtable {old} code does not have"
            msg += f" ({why})" if why else ""
        problem(("table", "features", i), f"{msg}; io-pgtable {old} takes: {valid}")
        bad = True
    return bad


def _ops(s: Scenario, kind: str) -> Iterator[tuple[Loc, object, tuple[int, ...]]]:
    """Every op of a kind with the address offsets of its first and last repetition."""
    for ci, cpu in enumerate(s.cpus):
        yield from _ops_in(cpu.ops, ("cpus", ci, "ops"), (0,), kind)


def _ops_in(
    ops: list[Op], loc: Loc, offsets: tuple[int, ...], kind: str
) -> Iterator[tuple[Loc, object, tuple[int, ...]]]:
    for oi, op in enumerate(ops):
        if op.kind == kind:
            yield (*loc, oi, kind), op.body, offsets
        if op.kind == "repeat":
            r = op.body
            inner = tuple(sorted({o + k * r.stride for o in offsets for k in (0, r.count - 1)}))
            yield from _ops_in(r.ops, (*loc, oi, "repeat", "ops"), inner, kind)


def _check_addresses(
    s: Scenario, bitmap: int, last_va: int, problem: Report, oa_bits: int | None = None
) -> None:
    """Alignment, and every address inside what the table can hold: IOVAs up to its last
    IOVA, physical addresses below its output width (``oa_bits``). Such an op validates
    as a schema but fails at run time, mid-simulation, with -EINVAL / -ERANGE."""
    page = 1 << ffs(bitmap)
    last_pa = (1 << oa_bits) - 1 if oa_bits is not None else None

    def aligned(loc: Loc, what: str, value: int) -> None:
        if value % page:
            problem((*loc, what), f"{value:#x} is not aligned to the smallest page ({page:#x})")

    def inside(loc: Loc, iova: int, size: int) -> None:
        if iova + size - 1 > last_va:
            problem(loc, f"{iova:#x}+{size:#x} lies outside the table (last IOVA {last_va:#x})")

    def reachable(loc: Loc, pa: int, size: int) -> None:
        if last_pa is not None and pa + size - 1 > last_pa:
            problem(loc, f"{pa:#x}+{size:#x} lies beyond the table's {oa_bits}-bit output "
                    f"addresses (last PA {last_pa:#x})")

    for loc, r, _ in _ops(s, "repeat"):
        aligned(loc, "stride", r.stride)
    for loc, m, offsets in _ops(s, "map"):
        for what in ("iova", "pa", "size"):
            aligned(loc, what, getattr(m, what))
        for offset in offsets:
            inside(loc, m.iova + offset, m.size)
            reachable((*loc, "pa"), m.pa + offset, m.size)
    for kind in ("unmap", "read_and_clear_dirty"):
        for loc, u, offsets in _ops(s, kind):
            aligned(loc, "iova", u.iova)
            aligned(loc, "size", u.size)
            for offset in offsets:
                inside(loc, u.iova + offset, u.size)
    for loc, r, _ in _ops(s, "map_range_random"):
        for i, size in enumerate(r.sizes):
            if size & (size - 1) or not size & bitmap:
                problem((*loc, "sizes", i), f"{size:#x} is not a page size of this table")
        aligned((*loc, "region"), "base", r.region.base)
        aligned((*loc, "region"), "size", r.region.size)
        inside((*loc, "region"), r.region.base, r.region.size)
        reachable((*loc, "pa_base"), r.pa_base, r.region.size)
    for di, dev in enumerate(s.devices):
        for ri, dma in enumerate(dev.dma):
            if dma.iova % page + dma.size > page:
                problem(("devices", di, "dma", ri), "a DMA must not cross a page boundary")
        if dev.stream is not None:
            st = dev.stream
            loc = ("devices", di, "stream")
            if st.size & (st.size - 1) or st.size > page:
                problem((*loc, "size"), f"a request size must be a power of two <= {page:#x}")
            if st.region.base % st.size or st.region.size % st.size:
                problem((*loc, "region"), "the region must be aligned to the request size")


MAX_CPUS = 256
"""CPU cores of a simulated machine (``cpu.count``)."""
MAX_POINTS = 1_000
"""Sweep points of one scenario (the cross product of its ``sweep:`` lists)."""
MAX_RUNS = 100_000
"""Runs of one command: sweep points times seeds."""


def _check_size(s: Scenario, problem: Report) -> None:
    """Bound the cross product before anything enumerates it: ten keys of ten values are
    ten billion points, which would exhaust memory building the list of runs."""
    points = math.prod(len(v) for v in s.sweep.values())
    if points > MAX_POINTS:
        problem(("sweep",), f"{points:,} sweep points; at most {MAX_POINTS:,}")
    elif points * len(s.run.seeds) > MAX_RUNS:
        problem(("run", "seeds"), f"{points:,} sweep point(s) x {len(s.run.seeds):,} seeds = "
                f"{points * len(s.run.seeds):,} runs; at most {MAX_RUNS:,}")


def _check_names(s: Scenario, problem: Report) -> None:
    cpus = {c.name for c in s.cpus}
    for di, dev in enumerate(s.devices):
        if dev.follow is not None and dev.follow.cpu not in cpus:
            hint = did_you_mean(dev.follow.cpu, cpus)
            problem(("devices", di, "follow", "cpu"), f"no CPU named {dev.follow.cpu!r}{hint}")
    seen: dict[str, Loc] = {}
    units = [(("cpus", i), c.name) for i, c in enumerate(s.cpus)]
    units += [(("devices", i), d.name) for i, d in enumerate(s.devices)]
    for loc, name in units:
        if name in seen:
            problem((*loc, "name"), f"{name!r} is already the name of {format_path(seen[name])}")
        seen.setdefault(name, loc)


def _check_events(s: Scenario, problem: Report) -> None:
    signalled = {str(name) for _, name, _ in _ops(s, "signal")}

    def need(loc: Loc, event: str | None) -> None:
        if event is not None and event not in signalled:
            hint = did_you_mean(event, signalled)
            problem(loc, f"nobody signals {event!r}{hint}")

    for ci, cpu in enumerate(s.cpus):
        need(("cpus", ci, "after"), cpu.after)
    for loc, name, _ in _ops(s, "wait"):
        need(loc, str(name))
    for di, dev in enumerate(s.devices):
        need(("devices", di, "after"), dev.after)
        for ri, dma in enumerate(dev.dma):
            need(("devices", di, "dma", ri, "after"), dma.after)
        if dev.stream is not None:
            need(("devices", di, "stream", "after"), dev.stream.after)
