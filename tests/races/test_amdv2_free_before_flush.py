"""amdv2-free-before-flush: AMD v2 frees a replaced table before the flush (legacy_pt.md
3.5 item 1), gone in genpt.

io-pgtable AMD v2 (``v2_alloc_pte``): a 2M map that finds an (empty) level-0 table in
its slot frees the table on the spot and flushes the IOTLB only at the end of
``map_pages``. A walk in between that hits the walk-cache entry still pointing at the
table reads the freed, poisoned page (``uaf.events``), whose poison decodes as a
present leaf: the DMA is translated to a garbage address after the 4K page it belonged
to was unmapped (``dma.stale_after_unmap``). The fix is the implementation: genpt
x86_64 gathers the table and frees it after the invalidation and its wait.
"""

from __future__ import annotations

NAME = "amdv2-free-before-flush"
SIDES = ("table.implementation=io-pgtable", "table.implementation=genpt")
COSTS = (
    ("cpu.map.latency.mean", "cycles per map"),
    ("cpu.unmap.latency.mean", "cycles per unmap"),
)


def test_amd_v2_free_before_flush(races, seeds, record_property) -> None:
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.genpt], seeds=seeds)
    races.report(record_property, "table.implementation", off, on, COSTS, SIDES)
    races.assert_symptom(off)
    # The poison read as a leaf sends DMAs to memory nobody mapped for them.
    assert set(off.holding("dma.stale_after_unmap", "> 0")) <= set(off.holding("uaf.events", "> 0"))
    assert off.holding("dma.stale_after_unmap", "> 0")
    races.assert_clean(on)
    for metric in ("uaf.events", "dma.stale_after_unmap", "table.bad_frees", "table.leaked_pages",
                   "cpu.map.errors"):
        assert on.holding(metric, "> 0") == [], metric
    # Both free the same tables, just not at the same time.
    assert off.holding("table.leaked_pages", "> 0") == []
