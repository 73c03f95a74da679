"""gather-no-gaps: gather_range_pages before b48ca920 (NO_GAPS-only tables).

Fix off: the gather records no range, the invalidation after the unmap removes
nothing, and the device's later DMAs still translate to the unmapped pages through
the IOTLB. Fix on: they fault, as they should.
"""

from __future__ import annotations

NAME = "gather-no-gaps"
SWITCH = "gather_always_add_range"
COSTS = (
    ("cpu.unmap.latency.mean", "cycles per unmap"),
    ("iotlb.invalidated", "IOTLB entries invalidated per run"),
)


def check_clean(on) -> None:
    assert on.holding("dma.stale_translations", "> 0") == []
    # The late DMAs (one per unmapped page) fault instead.
    assert on.holding("dma.faults.not_present", "== 16") == [r.seed for r in on.runs]


def test_gather_no_gaps(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    races.assert_symptom(off)
    assert off.holding("iotlb.invalidated", "> 0") == []  # the invalidations removed nothing
    races.assert_clean(on)
    check_clean(on)
