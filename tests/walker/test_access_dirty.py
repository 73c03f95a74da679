"""Access and dirty bits: the walker's atomic update of the leaf, and dirty tracking.

For the dirty-tracking formats (VT-d second stage, AMDv1, AMDv1 mock) a 64-granule
range is mapped as single-granule leaves (the PA is aligned to the granule only, so
no larger or contiguous page fits), then:

- a read DMA sets A only; the IOTLB entry it fills records D clear;
- a write DMA to that page misses nothing in the IOTLB but must not use an entry
  whose D is clear: it re-walks (a walk-cache hit, one item read), sets D with an
  atomic update visible in the CPU view, and refills the IOTLB;
- a further write goes through the IOTLB without touching memory;
- ``read_and_clear_dirty`` of the whole range (tables/, run directly on the
  machine's memory) reports exactly that page, clears D, and then reports nothing.
"""

from __future__ import annotations

import pytest

from iommusim.tables.formats import amdv1, vtdss

IOVA = 0x4000_0000
# (format, walker coherent?, A bit, D bit); AMD tables are only walked coherently.
CASES = {
    "vtdss": ("vtdss", True, vtdss.A, vtdss.D),
    "vtdss_incoherent": ("vtdss", False, vtdss.A, vtdss.D),
    "amdv1": ("amdv1", True, 1 << 5, amdv1.D),
    "amdv1_mock": ("amdv1_mock", True, 1 << 5, amdv1.D),
}


@pytest.mark.parametrize("case", list(CASES))
def test_write_dma_sets_dirty_and_read_and_clear_dirty_reports_it(sim, case):
    fmt, coherent, a_bit, d_bit = CASES[case]
    features = () if coherent else ("dma_incoherent",)
    s = sim(fmt, coherent=coherent, features=features)
    granule = 1 << s.iommu.formats[1].granule_lg2
    size = 64 * granule
    pa = 0x1_0000_0000 + granule  # aligned to one granule only
    s.map(IOVA, pa, size)
    page = IOVA + 5 * granule
    leaf = s.steps(page)[-1]
    assert leaf.level == 0 and leaf.raw & (a_bit | d_bit) == 0
    assert s.pt.read_and_clear_dirty(IOVA, size, no_clear=True) == []

    read = s.dma(page + 8)
    assert read.translation.pa == pa + 5 * granule + 8
    raw = s.m.memory.cpu[leaf.entry_pa]
    assert raw & (a_bit | d_bit) == a_bit
    assert s.iommu.ad_updates == 1
    assert s.pt.read_and_clear_dirty(IOVA, size, no_clear=True) == []

    reads = s.m.port.reads
    write = s.dma(page + 16, write=True)
    assert (write.translation.pa, write.translation.path) == (pa + 5 * granule + 16, "walk_cache")
    assert s.m.port.reads == reads + 1
    raw = s.m.memory.cpu[leaf.entry_pa]
    assert raw & (a_bit | d_bit) == a_bit | d_bit
    assert s.m.memory.hw[leaf.entry_pa] == raw  # a coherent device write: both views
    assert s.iommu.ad_updates == 2

    again = s.dma(page + 24, write=True)
    assert again.translation.path == "iotlb"
    assert s.iommu.ad_updates == 2 and s.m.port.stats()["updates"] == 2

    # Only that page's leaf carries D.
    for n in range(64):
        item = s.steps(IOVA + n * granule)[-1]
        assert bool(item.raw & d_bit) == (n == 5), n
    assert s.pt.read_and_clear_dirty(IOVA, size) == [(page, granule)]
    assert s.m.memory.cpu[leaf.entry_pa] & d_bit == 0
    assert s.pt.read_and_clear_dirty(IOVA, size, no_clear=True) == []


def test_no_update_with_access_dirty_off(sim):
    s = sim("vtdss", hw={"iommu": {"access_dirty": False}})
    s.map(IOVA, 0x1_0000_0000, 0x1000)
    leaf = s.steps(IOVA)[-1]
    s.dma(IOVA, write=True)
    assert s.dma(IOVA + 8, write=True).translation.path == "iotlb"
    assert s.m.memory.cpu[leaf.entry_pa] == leaf.raw
    assert s.iommu.ad_updates == 0 and s.m.port.stats()["updates"] == 0
    assert s.pt.read_and_clear_dirty(IOVA, 0x1000) == []


def test_dirty_rewalk_through_a_core_clear(sim):
    """Dirty tracking end to end on a core: after read_and_clear_dirty (with its IOTLB
    flush) the next write walks again and sets D again; without the flush
    (``dirty_clear_flush`` off) the IOTLB entry still says D is set, so the write
    goes through it and the page is never reported dirty again."""
    results = {}
    for fix in (True, False):
        s = sim("vtdss", fixes={"dirty_clear_flush": fix})
        s.map(IOVA, 0x1_0000_0000, 0x1000)
        s.dma(IOVA, write=True)
        ret, runs = s.cpu(s.pt.read_and_clear_dirty_op(IOVA, 0x1000), "dirty")
        assert (ret, runs) == (0, [(IOVA, 0x1000)])
        second = s.dma(IOVA + 8, write=True).translation.path
        ret, runs = s.cpu(s.pt.read_and_clear_dirty_op(IOVA, 0x1000), "dirty")
        results[fix] = (second, runs)
    assert results[True] == ("walk_cache", [(IOVA, 0x1000)])
    assert results[False] == ("iotlb", [])
