"""dirty-clear-without-flush (driver policy): read_and_clear_dirty without the
IOTLB flush its caller owes.

Fix off: writes through IOTLB entries that remember D set do not set D again, and
the next dirty scans miss those pages. Fix on: every write is reported.
"""

from __future__ import annotations

NAME = "dirty-clear-without-flush"
SWITCH = "dirty_clear_flush"
COSTS = (
    ("cpu.read_and_clear_dirty.latency.mean", "cycles per scan"),
    ("dma.latency.mean", "cycles per DMA"),
)


def check_clean(on) -> None:
    assert on.holding("dirty.missed_writes", "> 0") == []
    assert on.holding("dma.faults", "> 0") == []


def test_dirty_clear_without_flush(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    races.assert_symptom(off)
    by_seed = {r.seed: r.metrics for r in on.runs}
    for r in off.runs:  # the dirty log shrinks to the first write of each page
        assert r.metrics["dirty.reported_pages"] < by_seed[r.seed]["dirty.reported_pages"]
    races.assert_clean(on)
    check_clean(on)
