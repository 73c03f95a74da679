"""increase-top-race: increase_top before 152c862c (generic_pt.md 4.7, 8 row 2).

Fix off: a CPU whose range check read the old top and whose own read of
top_of_table came after another CPU's growth builds nothing yet calls change_top
with uninitialised locals (root 0, level 0); the map returns while the hardware
cannot walk the table and the device's DMA faults. An allocation failure on the
second level of a two-level growth leaks the first new top.
"""

from __future__ import annotations

NAME = "increase-top-race"
SWITCH = "increase_top"
COSTS = (
    ("cpu.map.latency.mean", "cycles per map"),
    ("table.leaked_pages", "leaked table pages per run"),
)


def check_clean(on) -> None:
    for metric in ("dma.faults", "cpu.map.invisible", "table.leaked_pages", "table.bad_frees"):
        assert on.holding(metric, "> 0") == [], metric
    # The injected allocation failure still fails its map, cleanly.
    assert on.holding("cpu.map.errors", "== 1") == [r.seed for r in on.runs]


def test_increase_top_race(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    races.assert_symptom(off)
    # Every seed leaks exactly the level-3 top built before the failed allocation.
    assert off.holding("table.leaked_pages", "== 1") == [r.seed for r in off.runs]
    # The faulting DMAs are those of maps that returned with a bogus hardware root.
    faulty = off.holding("dma.faults", "> 0")
    assert set(off.holding("cpu.map.invisible", "> 0")) >= set(faulty)
    assert off.holding("dma.faults.address_range", "> 0") == faulty
    races.assert_clean(on)
    check_clean(on)
