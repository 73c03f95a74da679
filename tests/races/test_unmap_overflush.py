"""unmap-overflush (performance): unmap before 5815d930 flushed every visited item.

Fix off: more cache lines flushed per unmap and a higher unmap latency; the fix
flushes only the items an unmap changed.
"""

from __future__ import annotations

NAME = "unmap-overflush"
SWITCH = "unmap_flush_changed_only"
COSTS = (
    ("cpu.unmap.flush.lines", "lines flushed per unmap"),
    ("cpu.unmap.latency.mean", "cycles per unmap"),
)


def check(off, on) -> None:
    by_seed = {r.seed: r.metrics for r in on.runs}
    for r in off.runs:
        fixed = by_seed[r.seed]
        assert fixed["cpu.unmap.flush.lines"] < r.metrics["cpu.unmap.flush.lines"]
        assert fixed["cpu.unmap.latency.mean"] < r.metrics["cpu.unmap.latency.mean"]
        assert fixed["cpu.unmap.count"] == r.metrics["cpu.unmap.count"]
    # Correct either way: nothing faults, nothing is stale.
    for outcome in (off, on):
        assert outcome.holding("dma.faults", "> 0") == []
        assert outcome.holding("dma.stale_translations", "> 0") == []


def test_unmap_overflush(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    races.assert_symptom(off)
    races.assert_clean(on)
    check(off, on)
