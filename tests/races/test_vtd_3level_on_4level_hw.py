"""vtd-3level-on-4level-hw: vtdss chose its depth from the address width (d856f9d2).

Fix off: a 39-bit VT-d whose walker supports only 4-level tables gets a 3-level
table and every DMA faults. Fix on: the table has 4 levels and the DMAs translate.
"""

from __future__ import annotations

NAME = "vtd-3level-on-4level-hw"
SWITCH = "vtd_top_level"
COSTS = (
    ("cpu.map.latency.mean", "cycles per map"),
    ("table.live_pages", "table pages at the end"),
)


def check_clean(on) -> None:
    assert on.holding("dma.faults", "> 0") == []
    assert on.holding("cpu.map.invisible", "> 0") == []


def test_vtd_3level_on_4level_hw(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    races.assert_symptom(off)
    for r in off.runs:  # every DMA faults
        assert r.metrics["dma.faults.geometry"] == r.metrics["dma.requests"] > 0
    races.assert_clean(on)
    check_clean(on)
