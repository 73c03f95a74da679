"""The metrics a run reports: flat dotted names, their meaning, and `expect:` conditions.

Latencies are in cycles. Names with ``<op>`` exist per CPU operation kind
(map, unmap, read_and_clear_dirty), ``<cause>`` per flush cause
(tables.transactions.FLUSH_CAUSES), ``<reason>`` per DMA fault reason.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from ..tables.transactions import FLUSH_CAUSES

CPU_OPS = ("map", "unmap", "read_and_clear_dirty")
FAULT_REASONS = ("not_present", "permission", "reserved", "geometry", "address_range")
STATS = ("mean", "p50", "p99", "max")

METRICS: dict[str, str] = {
    "sim.cycles": "cycle at which the run ended",
    "sim.events": "SimPy events processed",
    "dma.requests": "DMA requests issued by all devices",
    "dma.completed": "DMA requests that finished (translated or faulted)",
    "dma.faults": "DMA requests that faulted",
    "dma.faults.<reason>": "faults by reason (not_present, permission, reserved, geometry: "
    "the walker cannot walk this table or has no root, address_range: IOVA outside the table)",
    "dma.stale_translations": "DMAs translated through a cached entry to a page that is no "
    "longer mapped there",
    "dma.stale_after_unmap": "stale translations of DMAs issued after an unmap of their page "
    "had completed, IOTLB sync included, with no unmap of it in progress meanwhile (the "
    "explorer's oracle; stale translations during an unmap are the legitimate window)",
    "dma.latency.<stat>": "translation + access latency of DMAs (mean, p50, p99, max)",
    "dma.path.iotlb": "DMAs served by an IOTLB hit",
    "dma.path.walk_cache": "DMAs whose walk started below the top thanks to the walk cache",
    "dma.path.walk": "DMAs that needed a full walk",
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
    "cpu.<op>.count": "completed CPU operations of a kind (map, unmap, read_and_clear_dirty)",
    "cpu.<op>.errors": "operations of a kind that returned an error",
    "cpu.<op>.latency.<stat>": "latency of a kind of CPU operation (mean, p50, p99, max)",
    "cpu.<op>.flush.lines": "cache lines flushed per operation of a kind (mean)",
    "cpu.flush.lines": "cache lines flushed by all CPUs",
    "cpu.map.invisible": "maps that returned while the hardware walker could not translate "
    "their first or last byte (the missing-flush symptom, independent of DMA timing)",
    "sim.finished": "1 if every CPU and device finished before run.until",
    "cpu.flush.lines.<cause>": "cache lines flushed, by cause",
    "cpu.lock.wait": "cycles CPUs spent waiting for locks",
    "table.live_pages": "table pages allocated at the end of the run",
    "table.leaked_pages": "table pages still allocated after deinit",
    "table.alloc_failures": "table allocations that failed (fault injection)",
    "table.bad_frees": "frees of memory that was not a live table page",
    "uaf.events": "walker reads of freed table pages (use-after-free)",
    "walker.non_table_reads": "walker reads of memory that is not a table page (a walk into "
    "ordinary memory, e.g. the NULL table at physical 0 of the table_alloc_error bug)",
    "dirty.reported_pages": "4 KiB pages reported dirty by read_and_clear_dirty, over all scans",
    "dirty.missed_writes": "device writes no dirty scan reported although a scan covering the "
    "page started after the write completed (a dirty log that lost pages)",
    "invalidation.commands": "commands processed by the invalidation queue",
    "walker.root_changes": "root pointer changes (CHANGE_TOP) processed",
}

CONDITIONS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
CONDITION_RE = re.compile(r"\s*(==|!=|<=|>=|<|>)\s*(-?[0-9.]+(?:[eE][-+]?\d+)?)\s*")


def _pattern(name: str) -> re.Pattern[str]:
    alternatives = {
        "<op>": "|".join(CPU_OPS),
        "<cause>": "|".join(FLUSH_CAUSES),
        "<reason>": "|".join(FAULT_REASONS),
        "<stat>": "|".join(STATS),
    }
    regex = re.escape(name)
    for placeholder, alts in alternatives.items():
        regex = regex.replace(re.escape(placeholder), f"(?:{alts})")
    return re.compile(regex)


_PATTERNS = [_pattern(name) for name in METRICS]


def concrete_names() -> list[str]:
    """Every metric name, placeholders expanded (``cpu.<op>.count`` -> ``cpu.map.count``...)."""
    choices = {"<op>": CPU_OPS, "<cause>": FLUSH_CAUSES, "<reason>": FAULT_REASONS,
               "<stat>": STATS}
    names = []
    for name in METRICS:
        expanded = [name]
        for placeholder, values in choices.items():
            if placeholder in name:
                expanded = [e.replace(placeholder, v) for e in expanded for v in values]
        names += expanded
    return names


def is_known(name: str) -> bool:
    return any(p.fullmatch(name) for p in _PATTERNS)


def parse_condition(text: str) -> tuple[str, float]:
    """"> 0" -> (">", 0.0); ValueError with the accepted syntax otherwise."""
    m = CONDITION_RE.fullmatch(text)
    if not m:
        raise ValueError(
            f"{text!r} is not a condition; write an operator and a number, e.g. \"> 0\" "
            f"(operators: {' '.join(CONDITIONS)})"
        )
    return m[1], float(m[2])


def holds(condition: str, value: float) -> bool:
    op, bound = parse_condition(condition)
    return CONDITIONS[op](value, bound)
