"""One seed of one experiment: build the machine, run the workloads, measure.

The table is created and attached at cycle 0 with the zero-time executor (the
driver's set-up before any DMA); then CPUs and devices run under SimPy until all of
them finish or ``run.until`` cycles pass. At the end the table is torn down (deinit)
to count leaked pages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..hwmodels.component import component_rng
from ..hwmodels.cpu import OpRecord
from ..hwmodels.dma import FAULT, DmaDevice, DmaFeed, DmaRequest
from ..hwmodels.machine import Machine
from ..hwmodels.sim import SimEnvironment, events_processed
from ..hwmodels.trace import TraceRecord
from ..tables.memory import PAGE_LG2
from ..tables.transactions import CHANGE_TOP, FLUSH_CAUSES
from ..walker import Iommu
from ..walker.iommu import Incident
from .metrics import CPU_OPS, FAULT_REASONS, STATS
from .resolve import Experiment
from .schema import FollowSpec, format_size
from .table import make_table
from .workload import (
    Barriers,
    CpuRunner,
    DirtyScan,
    Placer,
    Signals,
    barrier_parties,
    device_program,
)


@dataclass
class RunResult:
    """What one seed produced: metrics, fault and incident records, distributions."""

    seed: int
    metrics: dict[str, float]
    faults: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    distributions: dict[str, dict[str, dict[int, int]]]
    trace: list[TraceRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "metrics": self.metrics,
            "faults": self.faults,
            "incidents": self.incidents,
            "distributions": {
                name: {group: {str(k): n for k, n in sorted(h.items())} for group, h in d.items()}
                for name, d in self.distributions.items()
            },
        }


def simulate(
    exp: Experiment, seed: int, *, trace: bool = False, explorer: Any = None
) -> RunResult:
    """Run one seed. ``explorer`` (a ``scenarios.control.Controller``) supplies the
    environment and gets the CPU and device processes and cores before the run
    (schedule exploration); None runs stock SimPy."""
    s, hw = exp.scenario, exp.hardware
    cpu_configs = {
        i: hw.cpu.model_copy(update={"interrupts": c.interrupts})
        for i, c in enumerate(s.cpus)
        if c.interrupts is not None
    }
    machine = Machine(
        hw, seed=seed, trace=trace, cpu_configs=cpu_configs,
        env=explorer.env if explorer is not None else SimEnvironment(lookahead=s.run.lookahead),
    )
    env = machine.env
    # Injected failures (allocator.fail_*, kernel.alloc_faults) hit the workload's
    # allocations only: the domain's set-up runs with them disarmed.
    allocator = machine.executor.allocator
    hw_faults, allocator.faults = allocator.faults, None
    pt = make_table(s, hw, machine.executor, seed)
    if allocator.faults is None:
        allocator.faults = hw_faults
    domain = s.table.domain

    def truth(_domain: int, iova: int) -> int | None:
        return pt.iova_to_phys(iova, view="peek")

    iommu = Iommu(machine, {domain: s.table.format}, truth=truth)
    signals = Signals(env)
    barriers = Barriers(env, barrier_parties(s.cpus))
    placer = Placer()
    invisible = [0]
    unmaps: list[tuple[int, int, int, int]] = []  # (start, end, iova, size) of each unmap

    def visibility_oracle(cpu: str) -> Callable[[int, int, int], None]:
        """A completed map must be translatable by the hardware at once."""

        def check(iova: int, pa: int, size: int) -> None:
            last = iova + size - 1
            if iommu.peek(domain, iova) != pa or iommu.peek(domain, last) != pa + size - 1:
                invisible[0] += 1
                iommu.note_invisible_map(cpu, domain, iova, pa)

        return check

    runners = {}
    for i, spec in enumerate(s.cpus):
        rng = component_rng(seed, f"workload.{spec.name}")
        runner = runners[spec.name] = CpuRunner(
            spec, machine.cpus[i], pt, signals, barriers, placer, rng
        )
        runner.listeners.append(visibility_oracle(spec.name))
        runner.unmap_listeners.append(
            lambda iova, size, start: unmaps.append((start, env.now, iova, size))
        )
    devices: list[DmaDevice] = []
    procs = []
    names = []
    for spec in s.devices:
        feed = None
        if spec.follow is not None:
            feed = DmaFeed(env)
            follow(runners[spec.follow.cpu], feed, spec.follow)
        program = device_program(
            spec, env, signals, iommu, machine.dram, domain, seed, machine.tracer, devices, feed
        )
        procs.append(env.process(program))
        names.append(spec.name)
    procs += [env.process(r.program()) for r in runners.values()]
    names += list(runners)
    if explorer is not None:
        cores = {spec.name: machine.cpus[i] for i, spec in enumerate(s.cpus)}
        explorer.attach(machine, list(zip(names, procs, strict=True)), cores)
    everything = env.all_of(procs)
    env.run(until=env.any_of([everything, env.timeout(s.run.until)]))
    finished = everything.triggered

    live_pages = pt.live_table_pages
    pt.deinit()
    metrics = collect_metrics(machine, iommu, devices, machine.cpus[: len(s.cpus)])
    metrics["sim.finished"] = int(finished)
    metrics["cpu.map.invisible"] = invisible[0]
    metrics["table.live_pages"] = live_pages
    metrics["table.leaked_pages"] = pt.live_table_pages
    faults = allocator.faults
    metrics["table.alloc_failures"] = faults.failures if faults is not None else 0
    metrics["table.bad_frees"] = len(pt.executor.allocator.bad_frees)
    metrics.update(dirty_log(devices, [scan for r in runners.values() for scan in r.scans]))
    late = stale_after_unmap(iommu.stale_log, unmaps)
    metrics["dma.stale_after_unmap"] = len(late)
    if explorer is not None:
        explorer.stale_after_unmap = late
    return RunResult(
        seed,
        metrics,
        [f._asdict() for f in iommu.faults],
        [i._asdict() for i in iommu.incidents],
        distributions(devices, list(runners.values())),
        machine.tracer.records if machine.tracer is not None else [],
    )


def stale_after_unmap(
    stale: list[tuple[int, Incident]], unmaps: list[tuple[int, int, int, int]]
) -> list[tuple[int, Incident]]:
    """The stale translations of DMAs issued after an unmap of their page had
    completed (its IOTLB sync included), while no other unmap of the page was in
    progress between the DMA's issue and its translation: the DMA used a translation
    that the completed unmap had promised to remove. A stale translation of a DMA in
    flight during an unmap is the legitimate window and does not count."""
    late = []
    for issued, inc in stale:
        page = inc.iova

        def covers(iova: int, size: int, page: int = page) -> bool:
            return iova <= page < iova + size

        done = any(end <= issued and covers(iova, size) for _, end, iova, size in unmaps)
        racing = any(
            start <= inc.cycle and end > issued and covers(iova, size)
            for start, end, iova, size in unmaps
        )
        if done and not racing:
            late.append((issued, inc))
    return late


def follow(runner: CpuRunner, feed: DmaFeed, spec: FollowSpec) -> None:
    """Hand the device a DMA for every range the CPU maps, as the map returns."""

    def on_map(iova: int, pa: int, size: int) -> None:
        feed.put(DmaRequest(iova + spec.offset, spec.size, spec.access == "write"))

    runner.listeners.append(on_map)
    runner.closers.append(feed.close)


def dirty_log(devices: list[DmaDevice], scans: list[DirtyScan]) -> dict[str, float]:
    """The dirty-log oracle of a live-migration style scan.

    After each scan the pages it reported are copied, so a device write is captured
    by a scan that reports its page and ends after the write was issued. A write
    that no such scan captured, although a scan covering its page started after the
    write completed, is missed: that scan should have reported it. Writes after the
    last scan are neither.
    """
    missed = 0
    for dev in devices:
        for w in dev.records:
            if not w.is_write or w.translation.outcome == FAULT:
                continue
            captured = any(
                s.end > w.issue and any(a <= w.iova < a + n for a, n in s.runs) for s in scans
            )
            if not captured and any(
                s.start > w.end and s.iova <= w.iova < s.iova + s.size for s in scans
            ):
                missed += 1
    reported = sum(n for s in scans for _, n in s.runs)
    return {"dirty.missed_writes": missed, "dirty.reported_pages": reported >> PAGE_LG2}


def _errno_of(result: Any) -> int:
    """An operation's return code: an int, or the first item of a (ret, data) result."""
    if isinstance(result, tuple):
        result = result[0]
    return result if isinstance(result, int) else 0


def _stats(prefix: str, values: list[int], out: dict[str, float]) -> None:
    if not values:
        for stat in STATS:
            out[f"{prefix}.{stat}"] = 0
        return
    arr = np.asarray(values, dtype=float)
    out[f"{prefix}.mean"] = float(arr.mean())
    out[f"{prefix}.p50"] = float(np.percentile(arr, 50))
    out[f"{prefix}.p99"] = float(np.percentile(arr, 99))
    out[f"{prefix}.max"] = float(arr.max())


def collect_metrics(
    machine: Machine, iommu: Iommu, devices: list[DmaDevice], cpus: list[Any]
) -> dict[str, float]:
    """The flat metrics of metrics.METRICS from the blocks of one run."""
    m: dict[str, float] = {}
    env = machine.env
    m["sim.cycles"] = env.now
    m["sim.events"] = events_processed(env)
    records = [r for d in devices for r in d.records]
    m["dma.requests"] = len(records)
    m["dma.completed"] = len(records)
    fault_records = [r for r in records if r.translation.outcome == FAULT]
    m["dma.faults"] = len(fault_records)
    reasons = Counter(r.translation.reason for r in fault_records)
    for reason in FAULT_REASONS:
        m[f"dma.faults.{reason}"] = reasons.get(reason, 0)
    iommu_stats = iommu.stats()
    m["dma.stale_translations"] = iommu_stats["stale_translations"]
    _stats("dma.latency", [r.latency for r in records], m)
    paths = Counter(r.translation.path for r in records if r.translation.outcome != FAULT)
    for path in ("iotlb", "walk_cache", "walk"):
        m[f"dma.path.{path}"] = paths.get(path, 0)

    iotlb = machine.iotlb.stats()
    for key in ("lookups", "hits", "misses", "fills", "evictions", "invalidated"):
        m[f"iotlb.{key}"] = iotlb[key]
    wc = machine.walk_cache.stats()
    for key in ("lookups", "hits", "misses"):
        m[f"walk_cache.{key}"] = wc[key]
    port = machine.port.stats()
    m["walker.walks"] = iommu_stats["walks"]
    m["walker.pte_reads"] = port["reads"]
    m["walker.stale_reads"] = port["stale_reads"]
    m["walker.merged"] = iommu_stats["merged"]
    m["walker.ad_updates"] = iommu_stats["ad_updates"]
    m["walker.root_changes"] = machine.invalidation.counts[CHANGE_TOP]
    m["uaf.events"] = iommu_stats["uaf_events"]
    m["walker.non_table_reads"] = iommu_stats["non_table_reads"]
    m["invalidation.commands"] = sum(machine.invalidation.counts.values())

    ops: list[OpRecord] = [r for c in cpus for r in c.records]
    for op in CPU_OPS:
        mine = [r for r in ops if r.label == op]
        m[f"cpu.{op}.count"] = len(mine)
        m[f"cpu.{op}.errors"] = sum(_errno_of(r.result) < 0 for r in mine)
        _stats(f"cpu.{op}.latency", [r.latency for r in mine], m)
        flushed = [sum(r.flush_lines.values()) for r in mine]
        m[f"cpu.{op}.flush.lines"] = float(np.mean(flushed)) if flushed else 0.0
    by_cause = Counter()
    for c in cpus:
        by_cause.update(c.flush_lines)
    m["cpu.flush.lines"] = sum(by_cause.values())
    for cause in FLUSH_CAUSES:
        m[f"cpu.flush.lines.{cause}"] = by_cause.get(cause, 0)
    m["cpu.lock.wait"] = sum(c.lock_wait_cycles for c in cpus)
    return m


def distributions(
    devices: list[DmaDevice], runners: list[CpuRunner]
) -> dict[str, dict[str, dict[int, int]]]:
    """Histograms (value -> count) the plots draw: DMA latency by how it was served,
    CPU operation latency by kind and size ("map 4K"), cache lines flushed per
    operation by kind and cause ("map.leaf")."""
    dma: dict[str, Counter[int]] = {}
    for d in devices:
        for r in d.records:
            key = "fault" if r.translation.outcome == FAULT else r.translation.path
            dma.setdefault(key, Counter())[r.latency] += 1
    op_latency: dict[str, Counter[int]] = {}
    op_flush: dict[str, Counter[int]] = {}
    for runner in runners:
        sized = iter(runner.sizes)
        for r in runner.core.records:
            group = r.label
            if r.label in ("map", "unmap"):
                group = f"{r.label} {format_size(next(sized)[1])}"
            op_latency.setdefault(group, Counter())[r.latency] += 1
            for cause in FLUSH_CAUSES:
                n = r.flush_lines.get(cause, 0)
                op_flush.setdefault(f"{r.label}.{cause}", Counter())[n] += 1
    return {
        "dma.latency": {k: dict(v) for k, v in sorted(dma.items())},
        "cpu.latency": {k: dict(v) for k, v in sorted(op_latency.items())},
        "cpu.flush_lines": {k: dict(v) for k, v in sorted(op_flush.items())},
    }
