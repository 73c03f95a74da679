"""IOTLB and walk-cache interplay, and the stale-IOTLB window of an unmap.

A 4-level VT-d table (vasz 48, top level 3) over an incoherent walker, the CPU
flushing its writes. The default walk cache caches levels 1, 2 and 3, probed deepest
first; the IOTLB holds leaf translations.
"""

from __future__ import annotations

from iommusim.hwmodels.dma import FAULT, OK, DmaRequest
from iommusim.walker import Incident

IOVA = 0x4000_0000
PA = 0x1_2340_0000
PAGE = 0x1000


def _vtd(sim, **kw):
    return sim("vtdss", coherent=False, features=("dma_incoherent",), **kw)


def test_iotlb_hit_then_walk_cache_hit_reads_one_item(sim):
    s = _vtd(sim, trace=True)
    s.map(IOVA, PA, PAGE)
    s.map(IOVA + PAGE, PA + 0x5000, PAGE)
    s.map(IOVA + (2 << 20), PA + 0x9000, PAGE)  # same level-1 table, next level-0 table
    port, iotlb, wc = s.m.port, s.m.iotlb, s.m.walk_cache

    cold = s.dma(IOVA + 0x40).translation
    assert (cold.outcome, cold.pa, cold.path) == (OK, PA + 0x40, "walk")
    assert port.reads == 4
    assert s.port_reads() == [step.entry_pa for step in s.steps(IOVA)]
    assert wc.stats()["fills"] == 3  # levels 3, 2 and 1

    # The same page again: an IOTLB hit, nothing read.
    again = s.dma(IOVA + 0x80).translation
    assert (again.outcome, again.pa, again.path) == (OK, PA + 0x80, "iotlb")
    assert port.reads == 4
    assert (iotlb.hits, iotlb.misses) == (1, 1)

    # The neighbouring page: an IOTLB miss, a level-1 walk-cache hit on the first
    # probe, and exactly one item read -- the level-0 item of that page.
    before = wc.stats()
    nb = s.dma(IOVA + PAGE + 0x8).translation
    assert (nb.outcome, nb.pa, nb.path) == (OK, PA + 0x5008, "walk_cache")
    assert port.reads == 5
    assert s.port_reads()[-1] == s.steps(IOVA + PAGE)[-1].entry_pa
    assert (iotlb.hits, iotlb.misses) == (1, 2)
    after = wc.stats()
    assert after["level1.hits"] - before["level1.hits"] == 1
    assert after["lookups"] - before["lookups"] == 1  # no probe above level 1

    # Another level-0 table under the same level-1 table: level 1 misses, level 2
    # hits, two items read (level 1, level 0).
    far = s.dma(IOVA + (2 << 20)).translation
    assert (far.outcome, far.pa, far.path) == (OK, PA + 0x9000, "walk_cache")
    assert port.reads == 7
    assert s.port_reads()[-2:] == [step.entry_pa for step in s.steps(IOVA + (2 << 20))[-2:]]
    final = wc.stats()
    assert final["level1.misses"] - after["level1.misses"] == 1
    assert final["level2.hits"] - after["level2.hits"] == 1
    assert s.iommu.walks == 3


def test_stale_iotlb_entry_translates_until_the_invalidation_is_processed(sim):
    """Between the unmap clearing the leaf and the queue applying the invalidation,
    the IOTLB entry still translates: a DMA then reaches the old page and is
    reported as a stale translation. One cycle after the invalidation it faults."""
    s = _vtd(sim, trace=True)
    link = s.config.iommu.link
    command = s.config.iommu.invalidation.command
    s.map(IOVA, PA, PAGE)
    assert s.dma(IOVA).translation.path == "walk"  # the IOTLB now holds the page

    results = {}

    def in_window(rec):
        # The queue is idle, so the invalidation takes effect `command` cycles later.
        done = rec.cycle + command
        results["done"] = done
        # The IOTLB lookup happens `link` cycles after the issue.
        results["dev"] = s.device(
            [
                DmaRequest(IOVA + 0x10, 8, False, at=done - link - 1),
                DmaRequest(IOVA + 0x20, 8, False, at=done - link + 1),
            ]
        )
        # When the invalidation is submitted, the leaf is already clear (and flushed).
        assert s.pt.iova_to_phys(IOVA, view="peek") is None
        assert s.pt.iova_to_phys(IOVA, view="hw") is None

    s.on_trace("iommu.invalidation", "submit", in_window, kind="invalidate_range")
    assert s.unmap(IOVA, PAGE) == PAGE
    done = results["done"]
    assert [r.cycle for r in s.traced("iommu.invalidation", "done", kind="invalidate_range")] == [
        done
    ]
    before, after = sorted(results["dev"].records, key=lambda r: r.index)

    assert (before.translation.outcome, before.translation.pa) == (OK, PA + 0x10)
    assert before.translation.path == "iotlb"
    assert s.iommu.incidents == [
        Incident(
            before.end - s.config.dram.read, "stale_translation", "dev2", 1, IOVA + 0x10, PA + 0x10
        )
    ]

    tr = after.translation
    assert (tr.outcome, tr.reason, tr.level, tr.path) == (FAULT, "not_present", 0, "walk_cache")
    assert len(s.iommu.incidents) == 1
    # And from then on.
    assert s.dma(IOVA).translation.reason == "not_present"


def test_a_walk_in_flight_across_an_invalidation_caches_nothing(sim):
    """A walk that read the items before an invalidation of its address took effect
    must not fill the IOTLB or the walk cache after it: the kernel frees a table once
    the invalidation completes, and a walk-cache entry filled afterwards would keep the
    freed table reachable (found by the soak tier: a walker use-after-free with every
    fix on). The DMA in flight itself may still complete with what it read."""
    from iommusim.tables.transactions import INVALIDATE_RANGE

    s = _vtd(sim, trace=True)
    s.map(IOVA, PA, PAGE)
    walk_start = {}
    s.on_trace("iommu.walker", "walk_start",
               lambda rec: walk_start.setdefault("cycle", rec.cycle))
    dev = s.device([DmaRequest(IOVA, 8, False)])
    # submitted as the walk starts: the queue is idle, so it applies `command` cycles on,
    # while the walk (four item reads from DRAM) is still reading
    s.at(s.env.now + s.config.iommu.link + 1, lambda: s.m.invalidation.submit(
        (INVALIDATE_RANGE, 1, IOVA, PAGE, False), "test"))
    s.env.run()
    (rec,) = dev.records
    applied = s.traced("iommu.invalidation", "done")[0].cycle
    assert walk_start["cycle"] < applied < rec.end  # the invalidation landed mid-walk
    assert rec.translation.outcome == OK  # the DMA in flight completes
    fills = s.traced("iommu.walk_cache", "fill") + s.traced("iommu.iotlb", "fill")
    assert [f.cycle for f in fills if f.cycle > applied] == []
    assert s.m.iotlb.lookup(1, IOVA) is None
    # the next walk of the page, after the invalidation, caches as usual
    assert s.dma(IOVA).translation.path == "walk"
    assert s.m.iotlb.lookup(1, IOVA) is not None
