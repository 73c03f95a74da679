"""The metrics a run reports: each group names its flat dotted metrics beside the
function that computes them from the blocks of one run.

Latencies are in cycles. Names with ``<op>`` exist per CPU operation kind
(map, unmap, read_and_clear_dirty), ``<cause>`` per flush cause
(tables.transactions.FLUSH_CAUSES), ``<reason>`` per DMA fault reason and ``<stat>``
per statistic (mean, p50, p99, max). Headline metrics keep these names; the full
``stats()`` of every hardware block is reported beside them (``assembly.block_stats``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..hwmodels.dma import latency_groups
from ..hwmodels.sim import events_processed
from ..hwmodels.stats import Histogram
from ..tables.transactions import CHANGE_TOP, FLUSH_CAUSES

if TYPE_CHECKING:
    from .assembly import Assembly

CPU_OPS = ("map", "unmap", "read_and_clear_dirty")
FAULT_REASONS = ("not_present", "permission", "reserved", "geometry", "address_range")
STATS = ("mean", "p50", "p99", "max")
PLACEHOLDERS = {"<op>": CPU_OPS, "<cause>": FLUSH_CAUSES, "<reason>": FAULT_REASONS,
                "<stat>": STATS}


@dataclass(frozen=True)
class Group:
    """Metrics named together with their computation (``compute(run) -> values``)."""

    names: dict[str, str]  # name (with placeholders) -> meaning
    compute: Callable[[Assembly], dict[str, float]]


GROUPS: list[Group] = []


def group(names: dict[str, str]) -> Callable[[Callable[[Assembly], dict[str, float]]], Any]:
    """Register ``compute`` as the source of ``names``; results follow this order."""

    def register(compute: Callable[[Assembly], dict[str, float]]) -> Any:
        GROUPS.append(Group(names, compute))
        return compute

    return register


def _stats(prefix: str, hist: Histogram, out: dict[str, float]) -> None:
    """mean, p50, p99, max of a latency histogram: exactly numpy's figures over the
    samples (hwmodels.stats), from counts instead of one value per operation."""
    if not hist.n:
        for stat in STATS:
            out[f"{prefix}.{stat}"] = 0
        return
    out[f"{prefix}.mean"] = hist.mean()
    out[f"{prefix}.p50"] = hist.percentile(50)
    out[f"{prefix}.p99"] = hist.percentile(99)
    out[f"{prefix}.max"] = float(hist.max)  # type: ignore[arg-type]


@group({
    "sim.cycles": "cycle at which the run ended",
    "sim.events": "SimPy events processed",
    "dma.requests": "DMA requests issued by all devices",
    "dma.completed": "DMA requests that finished (translated or faulted)",
    "dma.faults": "DMA requests that faulted",
    "dma.faults.<reason>": "faults by reason (not_present, permission, reserved, geometry: "
    "the walker cannot walk this table or has no root, address_range: IOVA outside the table)",
    "dma.stale_translations": "DMAs translated through a cached entry to a page that is no "
    "longer mapped there",
    "dma.latency.<stat>": "translation + access latency of DMAs (mean, p50, p99, max)",
    "dma.path.iotlb": "DMAs served by an IOTLB hit",
    "dma.path.walk_cache": "DMAs whose walk started below the top thanks to the walk cache",
    "dma.path.walk": "DMAs that needed a full walk",
})
def _dma(run: Assembly) -> dict[str, float]:
    m: dict[str, float] = {"sim.cycles": run.env.now, "sim.events": events_processed(run.env)}
    devices = run.devices
    m["dma.requests"] = m["dma.completed"] = sum(d.completed for d in devices)
    m["dma.faults"] = sum(d.failed for d in devices)
    for reason in FAULT_REASONS:
        m[f"dma.faults.{reason}"] = sum(d.keyed.get(f"fault.{reason}") for d in devices)
    m["dma.stale_translations"] = sum(i.kind == "stale_translation" for i in run.iommu.incidents)
    latency = Histogram()
    for group in latency_groups(devices).values():
        latency.merge(group)
    _stats("dma.latency", latency, m)
    for path in ("iotlb", "walk_cache", "walk"):
        m[f"dma.path.{path}"] = sum(d.ok_paths.get(path, 0) for d in devices)
    return m


@group({
    "iotlb.lookups": "IOTLB lookups",
    "iotlb.hits": "IOTLB hits",
    "iotlb.misses": "IOTLB misses",
    "iotlb.fills": "IOTLB fills",
    "iotlb.evictions": "IOTLB entries evicted to make room",
    "iotlb.invalidated": "IOTLB entries removed by invalidations",
    "walk_cache.lookups": "walk-cache probes",
    "walk_cache.hits": "walk-cache hits",
    "walk_cache.misses": "walk-cache misses",
    "walker.walks": "page walks started",
    "walker.pte_reads": "table items read by the walker",
    "walker.stale_reads": "walker reads that returned data different from the CPU view",
    "walker.merged": "requests that waited for a walk of the same page",
    "walker.ad_updates": "accessed/dirty bits set by the walker",
    "walker.root_changes": "root pointer changes (CHANGE_TOP) processed",
    "uaf.events": "walker reads of freed table pages (use-after-free)",
    "walker.non_table_reads": "walker reads of memory that is not a table page (a walk into "
    "ordinary memory, e.g. the NULL table at physical 0 of the table_alloc_error bug)",
    "invalidation.commands": "commands processed by the invalidation queue",
})
def _iommu(run: Assembly) -> dict[str, float]:
    machine, walker = run.machine, run.iommu.stats()
    iotlb, wc, port = machine.iotlb.stats(), machine.walk_cache.stats(), machine.port.stats()
    m: dict[str, float] = {}
    for key in ("lookups", "hits", "misses", "fills", "evictions", "invalidated"):
        m[f"iotlb.{key}"] = iotlb[key]
    for key in ("lookups", "hits", "misses"):
        m[f"walk_cache.{key}"] = wc[key]
    m["walker.walks"] = walker["walks"]
    m["walker.pte_reads"] = port["reads"]
    m["walker.stale_reads"] = port["stale_reads"]
    m["walker.merged"] = walker["merged"]
    m["walker.ad_updates"] = walker["ad_updates"]
    m["walker.root_changes"] = machine.invalidation.counts[CHANGE_TOP]
    m["uaf.events"] = walker["uaf_events"]
    m["walker.non_table_reads"] = walker["non_table_reads"]
    m["invalidation.commands"] = sum(machine.invalidation.counts.values())
    return m


@group({
    "cpu.<op>.count": "completed CPU operations of a kind (map, unmap, read_and_clear_dirty)",
    "cpu.<op>.errors": "operations of a kind that returned an error",
    "cpu.<op>.latency.<stat>": "latency of a kind of CPU operation (mean, p50, p99, max)",
    "cpu.<op>.flush.lines": "cache lines flushed per operation of a kind (mean)",
    "cpu.flush.lines": "cache lines flushed by all CPUs",
    "cpu.flush.lines.<cause>": "cache lines flushed, by cause",
    "cpu.lock.wait": "cycles CPUs spent waiting for locks",
})
def _cpus(run: Assembly) -> dict[str, float]:
    m: dict[str, float] = {}
    cpus = [r.core for r in run.runners]
    for op in CPU_OPS:
        kind = run.ops.kind(op)
        m[f"cpu.{op}.count"] = kind.count
        m[f"cpu.{op}.errors"] = kind.errors
        _stats(f"cpu.{op}.latency", kind.latency, m)
        m[f"cpu.{op}.flush.lines"] = kind.flush_lines / kind.count if kind.count else 0.0
    by_cause: Counter[str] = Counter()
    for c in cpus:
        by_cause.update(c.flush_lines)
    m["cpu.flush.lines"] = sum(by_cause.values())
    for cause in FLUSH_CAUSES:
        m[f"cpu.flush.lines.{cause}"] = by_cause.get(cause, 0)
    m["cpu.lock.wait"] = sum(c.lock_wait_cycles for c in cpus)
    return m


@group({
    "sim.finished": "1 if every CPU and device finished before run.until",
    "cpu.map.invisible": "maps that returned while the hardware walker could not translate "
    "their first or last byte (the missing-flush symptom, independent of DMA timing)",
    "table.live_pages": "table pages allocated at the end of the run",
    "table.leaked_pages": "table pages still allocated after deinit",
    "table.alloc_failures": "table allocations that failed (fault injection)",
    "table.bad_frees": "frees of memory that was not a live table page",
    "dirty.missed_writes": "device writes no dirty scan reported although a scan covering the "
    "page started after the write completed (a dirty log that lost pages)",
    "dirty.reported_pages": "4 KiB pages reported dirty by read_and_clear_dirty, over all scans",
    "dma.stale_after_unmap": "stale translations of DMAs issued after an unmap of their page "
    "had completed, IOTLB sync included, with no unmap of it in progress meanwhile (the "
    "explorer's oracle; stale translations during an unmap are the legitimate window)",
})
def _end(run: Assembly) -> dict[str, float]:
    """What the end of the run and the oracles tell: finish, table lifetime, dirty log."""
    allocator = run.pt.executor.allocator
    faults = allocator.faults
    return {
        "sim.finished": int(run.finished),
        "cpu.map.invisible": run.oracles.invisible_maps,
        "table.live_pages": run.live_pages,
        "table.leaked_pages": run.pt.live_table_pages,
        "table.alloc_failures": faults.failures if faults is not None else 0,
        "table.bad_frees": len(allocator.bad_frees),
        **run.oracles.dirty_log(),
        "dma.stale_after_unmap": len(run.late),
    }


METRICS: dict[str, str] = {name: text for g in GROUPS for name, text in g.names.items()}


def collect(run: Assembly) -> dict[str, float]:
    """Every metric of METRICS from one finished (and torn down) run."""
    out: dict[str, float] = {}
    for g in GROUPS:
        out.update(g.compute(run))
    return out


def expand(name: str) -> list[str]:
    """``cpu.<op>.count`` -> ``cpu.map.count``, ``cpu.unmap.count``, ..."""
    expanded = [name]
    for placeholder, values in PLACEHOLDERS.items():
        if placeholder in name:
            expanded = [e.replace(placeholder, v) for e in expanded for v in values]
    return expanded


def concrete_names() -> list[str]:
    """Every metric name, placeholders expanded (``cpu.<op>.count`` -> ``cpu.map.count``...)."""
    return [n for name in METRICS for n in expand(name)]


def _pattern(name: str, any_value: bool = False) -> re.Pattern[str]:
    regex = re.escape(name)
    for placeholder, values in PLACEHOLDERS.items():
        alts = r"[^.]+" if any_value else "|".join(values)
        regex = regex.replace(re.escape(placeholder), f"(?:{alts})")
    return re.compile(regex)


_PATTERNS = [_pattern(name) for name in METRICS]


def is_known(name: str) -> bool:
    return any(p.fullmatch(name) for p in _PATTERNS)


def meaning(metric: str) -> str:
    """A short description of a metric for a figure ('' if unknown)."""
    if metric in ("iotlb.hit_rate", "walk_cache.hit_rate"):
        return "IOTLB hits / lookups" if metric.startswith("iotlb") else "walk-cache hits / lookups"
    for name, text in METRICS.items():
        if _pattern(name, any_value=True).fullmatch(metric):
            # without "(mean, p50, p99, max)"-like lists
            text = re.sub(r"\s*\([\w]+(?:, [\w]+)+\)", "", text)
            return text.split(" (")[0] if len(text) > 80 else text
    return ""
