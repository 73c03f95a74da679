"""short-gather: unmap gathered the requested length, not the bytes unmapped.

Fix off: an unmap whose last address lies inside a 2M page removes the whole page
but invalidates only the requested 4K; on an IOTLB that caches the 2M page as 4K
splinters, the rest of the page still translates. Fix on: nothing is stale.
"""

from __future__ import annotations

NAME = "short-gather"
SWITCH = "gather_unmapped_length"
COSTS = (
    ("cpu.unmap.latency.mean", "cycles per unmap"),
    ("iotlb.invalidated", "IOTLB entries invalidated per run"),
)


def check_clean(on) -> None:
    assert on.holding("dma.stale_translations", "> 0") == []
    assert on.holding("dma.faults.not_present", "== 32") == [r.seed for r in on.runs]


def test_short_gather(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    races.assert_symptom(off)
    races.assert_clean(on)
    check_clean(on)


def test_short_gather_needs_splintering(races) -> None:
    """An IOTLB that holds the 2M page in one entry loses it to any overlapping
    invalidation, so the short gather is harmless there: the symptom needs an
    IOTLB that splinters large pages."""
    whole = races.run(NAME, ["iommu.iotlb.max_page_lg2=null"], seeds=range(1, 4))
    races.assert_clean(whole)
