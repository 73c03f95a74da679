"""The pipeline around the walk: the root register (CHANGE_TOP), walker slots and
the merging of walks of the same 4K page."""

from __future__ import annotations

import pytest

from iommusim.hwmodels.dma import FAULT, OK, DmaRequest

IOVA = 0x4000_0000
PA = 0x1_2340_0000
PAGE = 0x1000


# --- CHANGE_TOP --------------------------------------------------------------------------


def test_amdv1_grown_top_is_used_once_change_top_is_processed(sim):
    """AMDv1 (DYNAMIC_TOP) starts with a level-2 top (39-bit span). Mapping 2**40
    grows it to level 3: the CPU posts CHANGE_TOP, then switches the software top and
    finishes the map. The queue is made slow (5000 cycles a command), so the map
    returns long before the command takes effect at cycle T. Until T the walker
    walks from the old root: the new IOVA is outside what it translates
    (``address_range`` at level 2) while old mappings still translate. A walk that
    samples the root register at T-1 still faults; one at T+1 starts at the new
    level-3 root and translates."""
    s = sim("amdv1", trace=True, hw={"iommu": {"invalidation": {"command": 5000}}})
    cfg = s.config.iommu
    assert s.pt.top_level == 2
    s.map(PAGE, PA, PAGE)
    old_root = s.m.invalidation.root(1)
    assert old_root == (s.pt.top_table_pa, 2)

    far = 1 << 40
    proc = s.m.cpus[0].start(s.pt.map_op(far, PA + 0x10000, PAGE, 3), "map")
    s.env.run(until=proc)
    assert proc.value == 0
    (submit,) = s.traced("iommu.invalidation", "submit", kind="change_top")
    done = submit.cycle + cfg.invalidation.command
    assert s.env.now < done
    # Software already uses the new top; the hardware root register does not yet.
    assert s.pt.top_level == 3
    new_root = (s.pt.top_table_pa, 3)
    assert s.m.invalidation.root(1) == old_root

    # The walker samples the root after the link and the IOTLB lookup.
    sample = cfg.link + cfg.iotlb.hit
    dev = s.device(
        [
            DmaRequest(far + 8, 8, False),
            DmaRequest(PAGE + 8, 8, False),
            DmaRequest(far + 0x10, 8, False, at=done - sample - 1),
            DmaRequest(far + 0x18, 8, False, at=done - sample + 1),
        ]
    )
    s.env.run()
    assert [r.cycle for r in s.traced("iommu.invalidation", "done", kind="change_top")] == [done]
    assert s.m.invalidation.root(1) == new_root
    now, old, before, after = sorted(dev.records, key=lambda r: r.index)
    for rec in (now, before):
        tr = rec.translation
        assert (tr.outcome, tr.reason, tr.level) == (FAULT, "address_range", 2)
    assert (old.translation.outcome, old.translation.pa) == (OK, PA + 8)
    assert (after.translation.outcome, after.translation.pa) == (OK, PA + 0x10018)

    # The old mapping's walk read the old root; the last walk read the new root (the
    # level-3 item of index 2 for 2**40), then the new level-2 table, and so on.
    reads = s.port_reads()
    assert reads[0] == old_root[0] + 0 * 8
    assert reads[-4] == new_root[0] + 2 * 8
    assert reads[-4:] == [step.entry_pa for step in s.steps(far)]


# --- merging and slots -------------------------------------------------------------------


@pytest.mark.parametrize("merge", [True, False], ids=["merge", "no_merge"])
def test_two_requests_for_one_page(sim, merge):
    """Two requests for the same 4K page in the same cycle. Merging (gem5's 4K hazard
    check): one walk; the second request waits for it, then looks the IOTLB up again
    (one more ``iotlb.hit``) and hits. Without merging: two full, concurrent walks
    (and the same latency)."""
    s = sim("vtdss", hw={"iommu": {"merge_walks": merge}})
    s.map(IOVA, PA, PAGE)
    first, second = s.dmas([DmaRequest(IOVA + 0x10, 8), DmaRequest(IOVA + 0x20, 8)])
    assert (first.translation.pa, second.translation.pa) == (PA + 0x10, PA + 0x20)
    if merge:
        assert (s.iommu.walks, s.iommu.merged, s.m.port.reads) == (1, 1, 4)
        assert first.translation.path == "walk"
        assert second.translation.path == "iotlb"
        assert second.latency == first.latency + s.config.iommu.iotlb.hit
    else:
        assert (s.iommu.walks, s.iommu.merged, s.m.port.reads) == (2, 0, 8)
        assert first.translation.path == second.translation.path == "walk"
        assert second.latency == first.latency
    assert s.iommu.ad_updates == 1  # one A update took; the other found A set
    # Nothing is left registered as being walked: the same page walks again.
    s.m.iotlb.invalidate_all()
    assert s.dma(IOVA).translation.path == "walk_cache"
    assert s.iommu.walks == (2 if merge else 3)


def test_requests_for_different_pages_never_merge(sim):
    s = sim("vtdss")
    s.map(IOVA, PA, 2 * PAGE)
    a, b = s.dmas([DmaRequest(IOVA, 8), DmaRequest(IOVA + PAGE, 8)])
    assert (a.translation.pa, b.translation.pa) == (PA, PA + PAGE)
    assert (s.iommu.walks, s.iommu.merged) == (2, 0)


@pytest.mark.parametrize("slots", [1, 8])
def test_walker_slots(sim, slots):
    """Two requests for neighbouring pages in the same cycle (vtdss, 4 levels,
    coherent walker, every table line dirty: each item read is a snoop of 120).

    8 slots: both walk at once from the root, the same latency.
    1 slot: the second waits for the first walk to end, then walks from the level-1
    walk-cache entry the first one filled: 1 probe (10) + 1 snooped read (120) + the
    A update (250) = 380 cycles later than the first.
    """
    s = sim("vtdss", hw={"iommu": {"walker_slots": slots}})
    s.map(IOVA, PA, 2 * PAGE)
    a, b = s.dmas([DmaRequest(IOVA, 8), DmaRequest(IOVA + PAGE, 8)])
    assert (a.translation.outcome, b.translation.outcome) == (OK, OK)
    if slots == 1:
        assert b.translation.path == "walk_cache"
        assert b.latency - a.latency == 10 + 120 + 250
    else:
        assert a.translation.path == b.translation.path == "walk"
        assert b.latency == a.latency
