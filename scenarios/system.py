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
from ..hwmodels.trace import TraceRecord
from ..tables.transactions import CHANGE_TOP, FLUSH_CAUSES
from ..walker import Iommu
from .metrics import CPU_OPS, FAULT_REASONS, STATS
from .resolve import Experiment
from .schema import FollowSpec, format_size
from .table import make_table
from .workload import Barriers, CpuRunner, Placer, Signals, barrier_parties, device_program


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


def simulate(exp: Experiment, seed: int, *, trace: bool = False) -> RunResult:
    s, hw = exp.scenario, exp.hardware
    cpu_configs = {
        i: hw.cpu.model_copy(update={"interrupts": c.interrupts})
        for i, c in enumerate(s.cpus)
        if c.interrupts is not None
    }
    machine = Machine(hw, seed=seed, trace=trace, cpu_configs=cpu_configs)
    env = machine.env
    pt = make_table(s, hw, machine.executor, seed)
    faults = pt.executor.allocator.faults
    if faults is not None:
        faults.count = 0  # injected failures count the workload's allocations only
    domain = s.table.domain

    def truth(_domain: int, iova: int) -> int | None:
        return pt.iova_to_phys(iova, view="peek")

    iommu = Iommu(machine, {domain: s.table.format}, truth=truth)
    signals = Signals(env)
    barriers = Barriers(env, barrier_parties(s.cpus))
    placer = Placer()
    invisible = [0]

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
    devices: list[DmaDevice] = []
    procs = []
    for spec in s.devices:
        feed = None
        if spec.follow is not None:
            feed = DmaFeed(env)
            follow(runners[spec.follow.cpu], feed, spec.follow)
        program = device_program(
            spec, env, signals, iommu, machine.dram, domain, seed, machine.tracer, devices, feed
        )
        procs.append(env.process(program))
    procs += [env.process(r.program()) for r in runners.values()]
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
    metrics["table.alloc_failures"] = faults.failures if faults is not None else 0
    metrics["table.bad_frees"] = len(pt.executor.allocator.bad_frees)
    return RunResult(
        seed,
        metrics,
        [f._asdict() for f in iommu.faults],
        [i._asdict() for i in iommu.incidents],
        distributions(devices, list(runners.values())),
        machine.tracer.records if machine.tracer is not None else [],
    )


def follow(runner: CpuRunner, feed: DmaFeed, spec: FollowSpec) -> None:
    """Hand the device a DMA for every range the CPU maps, as the map returns."""

    def on_map(iova: int, pa: int, size: int) -> None:
        feed.put(DmaRequest(iova + spec.offset, spec.size, spec.access == "write"))

    runner.listeners.append(on_map)
    runner.closers.append(feed.close)


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
    m["sim.events"] = next(env._eid)  # SimPy's count of scheduled events
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
    m["invalidation.commands"] = sum(machine.invalidation.counts.values())

    ops: list[OpRecord] = [r for c in cpus for r in c.records]
    for op in CPU_OPS:
        mine = [r for r in ops if r.label == op]
        m[f"cpu.{op}.count"] = len(mine)
        m[f"cpu.{op}.errors"] = sum(isinstance(r.result, int) and r.result < 0 for r in mine)
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
