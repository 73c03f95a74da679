"""no-cache-flush: the page-table code before efa03dab did no CPU cache maintenance.

Fix off: on an incoherent VT-d the walker never sees the new tables and leaves, so
the DMAs fault; the same code on a snooping walker shows nothing.
"""

from __future__ import annotations

NAME = "no-cache-flush"
SWITCH = "cache_flush"
COHERENT = "hardware=vtd-coherent"
COSTS = (
    ("cpu.map.flush.lines", "lines flushed per map"),
    ("cpu.map.latency.mean", "cycles per map"),
    ("cpu.unmap.latency.mean", "cycles per unmap"),
)


def check_clean(outcome) -> None:
    assert outcome.holding("dma.faults", "> 0") == []
    assert outcome.holding("dma.stale_translations", "> 0") == []
    assert outcome.holding("cpu.map.invisible", "> 0") == []


def test_no_cache_flush(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    coherent = races.run(NAME, [COHERENT], seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    print(f"[{NAME}] {SWITCH}=false on vtd-coherent: symptom on "
          f"{len(coherent.symptomatic())}/{coherent.seeds} seeds")
    record_property("symptomatic_seeds_coherent_fix_off", len(coherent.symptomatic()))
    races.assert_symptom(off)
    assert off.holding("cpu.flush.lines", "> 0") == []  # no cache maintenance at all
    races.assert_clean(coherent)
    check_clean(coherent)
    races.assert_clean(on)
    check_clean(on)
