"""One seed of one experiment: build the machine, run the workloads, measure.

The table is created and attached at cycle 0 with the zero-time executor (the
driver's set-up before any DMA); then CPUs and devices run under SimPy until all of
them finish or ``run.until`` cycles pass. At the end the table is torn down (deinit)
to count leaked pages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import simpy
from simpy.events import Process

from ..hwmodels.component import component_rng, merge_stats
from ..hwmodels.cpu import CpuCore
from ..hwmodels.dma import DmaDevice, DmaFeed, DmaRequest, latency_groups
from ..hwmodels.machine import Machine
from ..hwmodels.sim import RunLimit, SimEnvironment, run_bounded
from ..hwmodels.trace import TraceRecord
from ..scenarios.resolve import Experiment
from ..scenarios.schema import FollowSpec
from ..walker import Iommu
from ..walker.iommu import Incident
from . import metrics
from .opstats import OpStats
from .oracles import Oracles
from .table import Table, make_table
from .workload import Barriers, CpuRunner, Placer, Signals, barrier_parties, device_program


class Explorer(Protocol):
    """What ``simulate`` needs of a schedule explorer (``explore.control.Controller``):
    its environment, and the CPU and device processes and cores before the run."""

    env: simpy.Environment

    def attach(self, machine: Machine, processes: list[tuple[str, Process]],
               cores: dict[str, CpuCore]) -> None: ...


@dataclass
class RunResult:
    """What one seed produced: metrics, fault and incident records, distributions,
    every hardware block's ``stats()`` by block name, and the oracles' findings."""

    seed: int
    metrics: dict[str, float]
    faults: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    distributions: dict[str, dict[str, dict[int, int]]]
    trace: list[TraceRecord] = field(default_factory=list)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    # (issue cycle, incident) of each stale translation after a completed unmap
    stale_after_unmap: list[tuple[int, Incident]] = field(default_factory=list)
    # Why the run stopped before its CPUs and devices finished (run.until reached, or
    # the run limit), and who had not finished, with how far each got.
    stopped: str | None = None
    unfinished: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "stopped": self.stopped,
            "unfinished": self.unfinished,
            "metrics": self.metrics,
            "stats": self.stats,
            "faults": self.faults,
            "incidents": self.incidents,
            "distributions": {
                name: {group: {str(k): n for k, n in sorted(h.items())} for group, h in d.items()}
                for name, d in self.distributions.items()
            },
        }


@dataclass
class Assembly:
    """The machine of one seed with its table, walker, workloads and oracles."""

    machine: Machine
    pt: Table  # genpt PageTable or io-pgtable LegacyTable
    iommu: Iommu
    runners: list[CpuRunner]
    devices: list[DmaDevice]  # filled as the devices start
    processes: list[tuple[str, Process]]
    oracles: Oracles
    ops: OpStats = field(default_factory=OpStats)  # the CPUs' operations, as they end
    finished: bool = False
    live_pages: int = 0  # table pages at the end, before deinit
    late: list[tuple[int, Incident]] = field(default_factory=list)

    @property
    def env(self) -> simpy.Environment:
        return self.machine.env


def build(exp: Experiment, seed: int, *, trace: bool = False,
          env: simpy.Environment | None = None, keep_records: bool = False) -> Assembly:
    """Wire the machine, table, walker, CPU and device processes and oracles. Blocks
    keep statistics, not a record per operation, unless ``keep_records`` (tests)."""
    s, hw = exp.scenario, exp.hardware
    cpu_configs = {
        i: hw.cpu.model_copy(update={"interrupts": c.interrupts})
        for i, c in enumerate(s.cpus)
        if c.interrupts is not None
    }
    machine = Machine(hw, seed=seed, trace=trace, cpu_configs=cpu_configs,
                      env=env if env is not None else SimEnvironment(lookahead=s.run.lookahead))
    pt = make_table(s, hw, machine.executor, seed)
    domain = s.table.domain

    def truth(_domain: int, iova: int) -> int | None:
        return pt.iova_to_phys(iova, view="peek")

    iommu = Iommu(machine, {domain: s.table.format}, truth=truth)
    env = machine.env
    signals, placer = Signals(env), Placer()
    barriers = Barriers(env, barrier_parties(s.cpus))
    runners = {
        spec.name: CpuRunner(spec, machine.cpus[i], pt, signals, barriers, placer,
                             component_rng(seed, f"workload.{spec.name}"))
        for i, spec in enumerate(s.cpus)
    }
    oracles = Oracles()
    oracles.watch(iommu, domain, list(runners.values()))
    ops = OpStats()
    for runner in runners.values():
        if not keep_records:
            runner.core.records = None  # statistics as operations end, no list of them
        ops.watch(runner)
    devices: list[DmaDevice] = []
    processes = []
    for spec in s.devices:
        feed = None
        if spec.follow is not None:
            feed = DmaFeed(env)
            follow(runners[spec.follow.cpu], feed, spec.follow)
        program = device_program(
            spec, env, signals, iommu, machine.dram, domain, seed, machine.tracer, devices, feed,
            oracles.watch_device, keep_records,
        )
        processes.append((spec.name, env.process(program)))
    processes += [(name, env.process(r.program())) for name, r in runners.items()]
    return Assembly(machine, pt, iommu, list(runners.values()), devices, processes, oracles, ops)


def simulate(
    exp: Experiment, seed: int, *, trace: bool = False, explorer: Explorer | None = None
) -> RunResult:
    """Run one seed. ``explorer`` supplies the environment and gets the CPU and
    device processes and cores before the run (schedule exploration); None runs
    stock SimPy."""
    run = build(exp, seed, trace=trace, env=explorer.env if explorer is not None else None)
    if explorer is not None:
        cores = {r.spec.name: r.core for r in run.runners}
        explorer.attach(run.machine, run.processes, cores)
    env = run.env
    everything = env.all_of([p for _, p in run.processes])
    limit = RunLimit(env, exp.scenario.run.max_events)
    for runner in run.runners:
        runner.limit = limit
    until = exp.scenario.run.until
    run_bounded(env, env.any_of([everything, env.timeout(until)]), limit, _owner_namer(run))
    run.finished = everything.triggered
    stopped = None
    if not run.finished:
        stopped = limit.reason or f"run.until ({until:,} cycles) reached"
    run.live_pages = run.pt.live_table_pages
    run.pt.deinit()
    run.late = run.oracles.stale_after_unmap()
    return RunResult(
        seed,
        metrics.collect(run),
        [f._asdict() for f in run.iommu.faults],
        [i._asdict() for i in run.iommu.incidents],
        distributions(run),
        run.machine.tracer.records if run.machine.tracer is not None else [],
        block_stats(run),
        run.late,
        stopped,
        unfinished(run, exp) if stopped else [],
    )


def unfinished(run: Assembly, exp: Experiment) -> list[dict[str, Any]]:
    """Every CPU and device that had not finished, with how far it got."""
    out: list[dict[str, Any]] = []
    runners = {r.spec.name: r for r in run.runners}
    specs = {d.name: d for d in exp.scenario.devices}
    for name, proc in run.processes:
        if proc.triggered:
            continue
        runner = runners.get(name)
        if runner is not None:
            out.append({"name": name, "kind": "cpu", "done": runner.ops_done,
                        "total": runner.ops_total, "progress": runner.progress()})
            continue
        spec = specs[name]
        done = sum(d.completed for d in run.devices if d.name == name)
        total = len(spec.dma) + (spec.stream.count if spec.stream is not None else 0)
        what = f"{done:,} of {total:,} DMA requests done" if spec.follow is None else (
            f"{done:,} DMA requests done, following {spec.follow.cpu}")
        if not any(d.name == name for d in run.devices):
            what += ", not started"
        out.append({"name": name, "kind": "device", "done": done,
                    "total": total if spec.follow is None else None, "progress": what})
    return out


def _owner_namer(run: Assembly) -> Callable[[simpy.Event], str | None]:
    """Whose process waits for an event: a CPU or device of the scenario by name, else
    the name of the object whose generator it runs (a DMA engine)."""
    names = {proc: name for name, proc in run.processes}

    def owner(event: simpy.Event) -> str | None:
        for cb in event.callbacks or ():
            proc = getattr(cb, "__self__", None)
            if isinstance(proc, Process):
                if proc in names:
                    return names[proc]
                frame = getattr(proc._generator, "gi_frame", None)
                obj = frame.f_locals.get("self") if frame is not None else None
                if getattr(obj, "name", None):
                    return str(obj.name)
        return None

    return owner


def block_stats(run: Assembly) -> dict[str, dict[str, float]]:
    """Every hardware block's full ``stats()``, under its name (the config key path,
    as gem5's stats dump): the machine's blocks, the walker and the DMA devices."""
    out: dict[str, dict[str, float]] = {}
    for block in [*run.machine.components(), run.iommu, *run.devices]:
        stats = block.stats()
        out[block.name] = merge_stats(out[block.name], stats) if block.name in out else stats
    return out


def follow(runner: CpuRunner, feed: DmaFeed, spec: FollowSpec) -> None:
    """Hand the device a DMA for every range the CPU maps, as the map returns."""

    def on_map(iova: int, pa: int, size: int) -> None:
        feed.put(DmaRequest(iova + spec.offset, spec.size, spec.access == "write"))

    runner.listeners.append(on_map)
    runner.closers.append(feed.close)


def distributions(run: Assembly) -> dict[str, dict[str, dict[int, int]]]:
    """Histograms (value -> count) the plots draw: DMA latency by how it was served,
    CPU operation latency by kind and size ("map 4K"), cache lines flushed per
    operation by kind and cause ("map.leaf")."""
    dma = latency_groups(run.devices)
    return {
        "dma.latency": {k: dma[k].as_dict() for k in sorted(dma)},
        "cpu.latency": {k: h.as_dict() for k, h in sorted(run.ops.latency_groups.items())},
        "cpu.flush_lines": {k: h.as_dict() for k, h in sorted(run.ops.flush_groups.items())},
    }
