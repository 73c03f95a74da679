"""free-before-invalidate (design hazard): tables freed before the IOTLB sync.

Fix off: a walk that hits the walk cache reads the freed level-0 table (a
use-after-free; the poison decodes as a present leaf). Fix on: the table is freed
only after the invalidation and its wait, and no walk reads freed memory.
"""

from __future__ import annotations

NAME = "free-before-invalidate"
SWITCH = "free_after_sync"
COSTS = (("cpu.unmap.latency.mean", "cycles per unmap"),)


def check_clean(on) -> None:
    assert on.holding("uaf.events", "> 0") == []
    assert on.holding("walker.non_table_reads", "> 0") == []


def test_free_before_invalidate(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    races.assert_symptom(off)
    races.assert_clean(on)
    check_clean(on)
