"""vtd-missing-parent-flush: old VT-d's install race (legacy_pt.md 4.6 item 1), gone in genpt.

io-pgtable VT-d (``pfn_to_dma_pte``): only the CPU whose cmpxchg installed a new table
flushes the parent item; a CPU that finds the pointer already there (or loses the
cmpxchg) descends without flushing it, returns from its map while the pointer is only
in the installer's cache, and the device's DMA right after the map faults not-present
on the incoherent VT-d. The fix is the implementation: genpt vtdss on the same
scenario (its SW_BIT_CACHE_FLUSH_DONE protocol) shows no fault.
"""

from __future__ import annotations

NAME = "vtd-missing-parent-flush"
SIDES = ("table.implementation=io-pgtable", "table.implementation=genpt")
COSTS = (
    ("cpu.map.latency.mean", "cycles per map"),
    ("cpu.map.flush.lines", "lines flushed per map"),
)


def test_old_vtd_install_race(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.genpt], seeds=seeds)
    races.report(record_property, "table.implementation", off, on, COSTS, SIDES)
    races.assert_symptom(off)
    # The faults are not-present faults of DMAs whose map had returned.
    faulty = off.holding("dma.faults", "> 0")
    assert off.holding("dma.faults.not_present", "> 0") == faulty
    assert set(off.holding("cpu.map.invisible", "> 0")) >= set(faulty)
    assert off.holding("cpu.map.errors", "> 0") == []  # every map 'succeeded'
    races.assert_clean(on)
    for metric in ("dma.faults", "cpu.map.invisible", "cpu.map.errors", "table.leaked_pages"):
        assert on.holding(metric, "> 0") == [], metric
    assert on.mean("cpu.flush.lines.helper") > 0  # genpt's helper flushes ran
    assert off.mean("cpu.flush.lines.helper") == 0  # the old code has none
