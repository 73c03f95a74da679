"""CPU operation statistics of one run, kept as the operations end (constant memory).

A run used to keep every CPU's ``OpRecord``s and pair them with the sizes its runner
noted, then compute metrics and distributions at the end. Everything it reported is
a count, a sum or a histogram of integers, so ``OpStats`` keeps exactly those
(``hwmodels.stats.Histogram``: percentiles as numpy computes them) and the figures
are the same to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..hwmodels.stats import Histogram
from ..tables.transactions import FLUSH_CAUSES
from ..units import format_size

if TYPE_CHECKING:
    from ..hwmodels.cpu import OpRecord
    from .workload import CpuRunner

SIZED = ("map", "unmap")  # kinds whose latency distribution is grouped by size


def errno_of(result: Any) -> int:
    """An operation's return code: an int, or the first item of a (ret, data) result."""
    if isinstance(result, tuple):
        result = result[0]
    return result if isinstance(result, int) else 0


@dataclass
class KindStats:
    """The operations of one kind (label) over all CPUs."""

    count: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=Histogram)
    flush_lines: int = 0  # cache lines flushed by all of them


@dataclass
class OpStats:
    """Per kind: counts, errors, latencies, flushed lines; the distributions the plots
    draw: latency by kind and size ("map 4K"), lines flushed per operation by kind and
    cause ("map.leaf")."""

    kinds: dict[str, KindStats] = field(default_factory=dict)
    latency_groups: dict[str, Histogram] = field(default_factory=dict)
    flush_groups: dict[str, Histogram] = field(default_factory=dict)

    def watch(self, runner: CpuRunner) -> None:
        """Count every operation ``runner``'s core finishes, with the runner's size."""
        runner.core.op_listeners.append(lambda rec: self.add(rec, runner.op_size))

    def add(self, rec: OpRecord, size: int) -> None:
        label, latency = rec.label, rec.end - rec.start
        kind = self.kinds.get(label)
        if kind is None:
            kind = self.kinds[label] = KindStats()
        kind.count += 1
        kind.errors += errno_of(rec.result) < 0
        kind.latency.add(latency)
        kind.flush_lines += sum(rec.flush_lines.values())
        group = f"{label} {format_size(size)}" if label in SIZED else label
        _hist(self.latency_groups, group).add(latency)
        for cause in FLUSH_CAUSES:
            _hist(self.flush_groups, f"{label}.{cause}").add(rec.flush_lines.get(cause, 0))

    def kind(self, label: str) -> KindStats:
        return self.kinds.get(label) or KindStats()


def _hist(groups: dict[str, Histogram], key: str) -> Histogram:
    hist = groups.get(key)
    if hist is None:
        hist = groups[key] = Histogram()
    return hist
