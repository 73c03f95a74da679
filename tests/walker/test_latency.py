"""Latency of a translation, by hand, from the configured costs.

Costs are set to distinct odd values so that a sum can only come out right one way:

====================  =====  ==============================================
key                   value  charged
====================  =====  ==============================================
``iommu.link``        13     device -> IOMMU and back: twice per request
``iommu.iotlb.hit``   7      every IOTLB lookup
``walk_cache.probe``  5      each cached level <= the top level probed,
                             deepest first, until a hit
``dram.read``         101    each item read from DRAM; the data read of a
                             read DMA
``iommu.snoop``       37     (coherent walker) each item whose line is dirty
                             in a CPU cache, instead of ``dram.read``
``dram.write``        157    the walker's A/D update, when the leaf lacks A
                             (or D for a write); the data write of a write DMA
====================  =====  ==============================================

The walk cache caches levels 1, 2 and 3 (the default), so a walk from a top at level
T probes min(T, 3) levels before reading. A cold walk therefore costs

    2*link + hit + probes*probe + sum(item reads) + [A/D write] + data access.
"""

from __future__ import annotations

import pytest

from iommusim.hwmodels.dma import OK, DmaStream

LINK, HIT, PROBE, READ, WRITE, SNOOP = 13, 7, 5, 101, 157, 37
HW = {
    "dram": {"read": READ, "write": WRITE},
    "iommu": {
        "link": LINK,
        "snoop": SNOOP,
        "iotlb": {"hit": HIT},
        "walk_cache": {"probe": PROBE},
    },
}
IOVA = 0x4000_0000
PA = 0x1_2345_6000


def _check_config(s):
    cfg = s.config
    assert (cfg.iommu.link, cfg.iommu.iotlb.hit, cfg.iommu.walk_cache.probe) == (LINK, HIT, PROBE)
    assert (cfg.dram.read, cfg.dram.write, cfg.iommu.snoop) == (READ, WRITE, SNOOP)
    assert s.m.walk_cache.levels == (1, 2, 3)


def test_vtdss_4_level_incoherent(sim):
    """VT-d, 4 levels (top 3), incoherent walker, flushed 4K mapping, read DMA.

    cold: 13 + 7 + 3 probes * 5 + 4 reads * 101 + A update 157 + 13 + data read 101
          = 710
    neighbour page (level-1 walk-cache hit, first probe):
          13 + 7 + 5 + 1 read * 101 + A update 157 + 13 + 101 = 397
    IOTLB hit: 13 + 7 + 13 + 101 = 134
    """
    s = sim("vtdss", coherent=False, features=("dma_incoherent",), hw=HW)
    _check_config(s)
    assert s.pt.top_level == 3
    s.map(IOVA, PA, 0x2000)
    cold = s.dma(IOVA)
    assert (cold.translation.outcome, cold.translation.path) == (OK, "walk")
    assert cold.latency == 13 + 7 + 3 * 5 + 4 * 101 + 157 + 13 + 101 == 710
    near = s.dma(IOVA + 0x1000)
    assert near.translation.path == "walk_cache"
    assert near.latency == 13 + 7 + 5 + 101 + 157 + 13 + 101 == 397
    hit = s.dma(IOVA + 0x1008)
    assert hit.translation.path == "iotlb"
    assert hit.latency == 13 + 7 + 13 + 101 == 134
    assert s.m.port.stats()["updates"] == 2
    assert s.m.port.snoops == 0


def test_x86_64_5_level_2m_write(sim):
    """x86-64, 5 levels (vasz 57, top 4), incoherent walker, 2M page, write DMA.

    The level-4 item is not walk-cached, so 3 probes (levels 1-3) all miss; the leaf
    is at level 1: reads at levels 4, 3, 2, 1. x86 software sets A and D in a
    writable leaf, so there is no A/D update.

    13 + 7 + 3 * 5 + 4 * 101 + 13 + data write 157 = 609
    """
    s = sim("x86_64", coherent=False, features=("dma_incoherent",), vasz=57, hw=HW)
    _check_config(s)
    assert s.pt.top_level == 4
    s.map(IOVA, 0x1_2340_0000, 2 << 20)
    rec = s.dma(IOVA + 0x1234, write=True)
    assert (rec.translation.outcome, rec.translation.pa) == (OK, 0x1_2340_1234)
    assert rec.latency == 13 + 7 + 3 * 5 + 4 * 101 + 13 + 157 == 609
    assert s.m.port.reads == 4
    assert s.m.port.stats()["updates"] == 0


def test_amdv1_coherent_with_snooped_dirty_lines(sim):
    """AMDv1, 3 levels (top 2), coherent walker, 4K page, write DMA.

    No flushes (AMDv1 is coherent-only), so every table line is dirty in a CPU cache;
    the test writes the root item's line back first, so the walk reads it from DRAM
    and snoops the other two. AMDv1 software sets neither A nor D: the walker
    updates both.

    13 + 7 + 2 probes * 5 + 101 (root, DRAM) + 2 snoops * 37 + A/D update 157 + 13
       + data write 157 = 532
    """
    s = sim("amdv1", coherent=True, hw=HW)
    _check_config(s)
    assert s.pt.top_level == 2
    s.map(IOVA, PA, 0x1000)
    root = s.steps(IOVA)[0]
    assert root.level == 2
    s.m.memory.flush(root.entry_pa, 8)
    assert not s.m.memory.is_dirty(root.entry_pa)
    assert all(s.m.memory.is_dirty(step.entry_pa) for step in s.steps(IOVA)[1:])
    rec = s.dma(IOVA + 0x10, write=True)
    assert (rec.translation.outcome, rec.translation.pa) == (OK, PA + 0x10)
    assert rec.latency == 13 + 7 + 2 * 5 + 101 + 2 * 37 + 157 + 13 + 157 == 532
    assert (s.m.port.reads, s.m.port.snoops) == (3, 2)


def test_riscv_sv39_coherent_all_snooped(sim):
    """RISC-V Sv39 (top 2), coherent walker, every line dirty, 4K read DMA.
    RISC-V software sets A in every leaf: no update.

    13 + 7 + 2 * 5 + 3 snoops * 37 + 13 + 101 = 255
    """
    s = sim("riscv64", coherent=True, vasz=39, hw=HW)
    _check_config(s)
    s.map(IOVA, PA, 0x1000)
    rec = s.dma(IOVA)
    assert rec.translation.outcome == OK
    assert rec.latency == 13 + 7 + 2 * 5 + 3 * 37 + 13 + 101 == 255
    assert (s.m.port.reads, s.m.port.snoops) == (3, 3)


def test_amdv1_mock_2k_granule(sim):
    """AMDv1 mock (2K granule, top 2), coherent, all snooped, 2K read DMA, A update.

    13 + 7 + 2 * 5 + 3 * 37 + 157 + 13 + 101 = 412
    """
    s = sim("amdv1_mock", coherent=True, hw=HW)
    _check_config(s)
    s.map(IOVA, PA, 0x800)
    rec = s.dma(IOVA + 0x7F8)
    assert (rec.translation.outcome, rec.translation.pa) == (OK, PA + 0x7F8)
    assert rec.latency == 13 + 7 + 2 * 5 + 3 * 37 + 157 + 13 + 101 == 412


ENTRIES = 16
WINDOW_IN, WINDOW_OUT = 8, 512  # pages of 4K
WARMUP = 200


def _stream(sim, pages, count):
    s = sim(
        "x86_64",
        coherent=False,
        features=("dma_incoherent",),
        hw={
            **HW,
            "iommu": {**HW["iommu"], "iotlb": {"hit": HIT, "entries": ENTRIES, "ways": ENTRIES}},
        },
    )
    # 2M of 4K pages (the PA is not 2M aligned): one level-0 table, 512 leaves.
    s.map(IOVA, PA, 2 << 20)
    assert len(s.steps(IOVA)) == 4
    dev = s.device(DmaStream(IOVA, pages * 0x1000, 0x1000, count, pattern="random"), seed=7)
    s.env.run()
    return sorted(dev.records, key=lambda r: r.index)


def test_iotlb_reach_effect(sim):
    """Random 4K reads over a window inside the IOTLB reach (8 pages < 16 entries x
    4K) and over one far outside it (512 pages = 2M, one level-0 table).

    Every request's latency is one of three exact values (x86 leaves carry A, no
    update; one request in flight at a time, so nothing waits):

    - IOTLB hit: 13 + 7 + 13 + 101 = 134
    - IOTLB miss, level-1 walk-cache hit: 134 + 1 probe (5) + 1 read (101) = 240
    - the very first, cold walk: 134 + 3 probes + 4 reads = 553

    After a warm-up of 200 requests the inside stream only hits, so its mean is 134;
    the outside stream's mean is 134 + m * 106, m its miss fraction, so the difference
    of the means is exactly m times the walk cost of 106 cycles. For an LRU IOTLB of
    C = 16 entries under uniform random references over N = 512 pages, once C pages
    are cached each reference hits with probability exactly C/N, independently, so m
    is a binomial fraction with p = 1 - 16/512 = 0.96875 over n = 2800 requests:
    sigma = sqrt(p(1-p)/n) = 0.0033. The test allows 5 sigma (the stream is seeded,
    so the outcome is fixed; the bound says it is the expected one).
    """
    inside, outside = _stream(sim, WINDOW_IN, 800), _stream(sim, WINDOW_OUT, 3000)
    hit, walk_cost, cold = 134, 5 + 101, 134 + 3 * 5 + 4 * 101
    for recs in (inside, outside):
        assert recs[0].translation.path == "walk"
        assert recs[0].latency == cold
        for r in recs[1:]:
            assert r.translation.outcome == OK
            expected = hit if r.translation.path == "iotlb" else hit + walk_cost
            assert r.translation.path in ("iotlb", "walk_cache")
            assert r.latency == expected

    steady_in = inside[WARMUP:]
    steady_out = outside[WARMUP:]
    assert all(r.translation.path == "iotlb" for r in steady_in)
    mean_in = sum(r.latency for r in steady_in) / len(steady_in)
    mean_out = sum(r.latency for r in steady_out) / len(steady_out)
    assert mean_in == hit

    n = len(steady_out)
    misses = sum(r.translation.path != "iotlb" for r in steady_out)
    m = misses / n
    assert mean_out - mean_in == pytest.approx(m * walk_cost, abs=1e-9)
    p = 1 - ENTRIES / WINDOW_OUT
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(m - p) < 5 * sigma, (m, p, sigma)
    # Clearly higher: at least 90% of a walk per request on average.
    assert mean_out - mean_in > 0.9 * walk_cost
