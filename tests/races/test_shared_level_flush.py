"""shared-level-flush: the SW_BIT_CACHE_FLUSH_DONE race (generic_pt.md 5.4).

Fix off: a CPU that finds a table pointer installed by another CPU does not flush
it, returns from its map while the pointer is only in the installer's cache, and the
device's DMA right after the map faults not-present on the incoherent VT-d.
"""

from __future__ import annotations

NAME = "shared-level-flush"
SWITCH = "flush_done_sw_bit"
COSTS = (
    ("cpu.map.latency.mean", "cycles per map"),
    ("cpu.map.flush.lines", "lines flushed per map"),
    ("cpu.flush.lines.helper", "helper-flushed lines per run"),
)


def check_clean(on) -> None:
    assert on.holding("dma.faults", "> 0") == []
    assert on.holding("cpu.map.invisible", "> 0") == []
    assert on.holding("cpu.map.errors", "> 0") == []


def test_flush_done_race(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    races.assert_symptom(off)
    # The faults are not-present faults of DMAs whose map had returned.
    assert off.holding("dma.faults.not_present", "> 0") == off.holding("dma.faults", "> 0")
    assert set(off.holding("cpu.map.invisible", "> 0")) >= set(off.holding("dma.faults", "> 0"))
    races.assert_clean(on)
    check_clean(on)
    assert on.mean("cpu.flush.lines.helper") > 0  # the fix's helper flushes ran
