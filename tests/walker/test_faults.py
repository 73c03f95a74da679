"""Fault records and security incidents: permission, geometry, use-after-free, and
negative caching. A fault is a ``Fault`` record (cycle, device, domain, IOVA,
access, reason, level) in ``iommu.faults``; the simulator never raises on one.
"""

from __future__ import annotations

import pytest

from iommusim.hwmodels.dma import FAULT, OK, DmaRequest
from iommusim.tables import DriverPolicy, Prot
from iommusim.tables.formats import vtdss
from iommusim.tables.memory import POISON
from iommusim.tables.transactions import INVALIDATE_RANGE, WAIT_INVALIDATION
from iommusim.walker import Fault

IOVA = 0x4000_0000
PA = 0x1_2340_0000
PAGE = 0x1000


# --- permission --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "size", "level"),
    [("vtdss", PAGE, 0), ("amdv1", 2 << 20, 1), ("x86_64", 1 << 30, 2), ("riscv64", PAGE, 0)],
    ids=["vtdss_4k", "amdv1_2m", "x86_64_1g", "riscv64_4k"],
)
def test_write_to_a_read_only_mapping(sim, fmt, size, level):
    s = sim(fmt)
    iova, pa = 1 << 31, 1 << 32
    s.map(iova, pa, size, Prot.READ)
    read = s.dma(iova + size - 8)
    assert (read.translation.outcome, read.translation.pa) == (OK, pa + size - 8)

    s.m.iotlb.invalidate_all()
    writes = s.m.dram.writes  # the read may have set A
    rec = s.dma(iova + 0x10, write=True)
    tr = rec.translation
    assert (tr.outcome, tr.reason, tr.level, tr.pa) == (FAULT, "permission", level, None)
    # Recorded when the walk decided, before the reply crossed the link; no data access.
    cycle = rec.end - s.config.iommu.link
    assert s.iommu.faults == [
        Fault(cycle, rec.device, 1, iova + 0x10, "write", "permission", level)
    ]
    assert s.m.dram.writes == writes
    # The leaf is untouched (no D), reads still pass.
    assert s.dma(iova).translation.outcome == OK


def test_read_from_a_write_only_vtd_mapping(sim):
    """VT-d allows W without R; a read is refused at the leaf."""
    s = sim("vtdss")
    s.map(IOVA, PA, PAGE, Prot.WRITE)
    assert s.steps(IOVA)[-1].raw & (vtdss.R | vtdss.W) == vtdss.W
    assert s.dma(IOVA, write=True).translation.outcome == OK
    tr = s.walked(IOVA).translation
    assert (tr.outcome, tr.reason, tr.level) == (FAULT, "permission", 0)
    assert s.iommu.faults[-1].access == "read"


def test_permission_fault_from_the_iotlb_without_dirty_tracking(sim):
    """With A/D updates off, a cached read-only translation refuses a write itself."""
    s = sim("vtdss", hw={"iommu": {"access_dirty": False}})
    s.map(IOVA, PA, PAGE, Prot.READ)
    s.dma(IOVA)
    reads = s.m.port.reads
    tr = s.dma(IOVA, write=True).translation
    assert (tr.outcome, tr.reason, tr.level, tr.path) == (FAULT, "permission", None, "iotlb")
    assert s.m.port.reads == reads


# --- geometry ----------------------------------------------------------------------------


@pytest.mark.parametrize(("vasz", "levels"), [(39, 3), (48, 4)])
def test_hardware_that_walks_only_4_levels(sim, vasz, levels):
    """``walk_levels: [4]`` (VT-d SAGAW = 4-level only): a 3-level table faults
    ``geometry`` on every DMA, mapped or not, without a single read; a 4-level one
    translates. (The ``vtd_top_level`` bug gave such hardware 3-level tables.)"""
    s = sim("vtdss", vasz=vasz, hw={"iommu": {"walk_levels": [4]}})
    assert s.pt.top_level + 1 == levels
    s.map(IOVA, PA, 2 << 20)
    recs = s.dmas(
        [DmaRequest(IOVA + n * 0x3000, 8, bool(n & 1)) for n in range(6)]
        + [DmaRequest(0x1000, 8, False)]
    )
    if levels == 3:
        for r in recs:
            assert (r.translation.outcome, r.translation.reason, r.translation.level) == (
                FAULT,
                "geometry",
                2,
            )
        assert [f.reason for f in s.iommu.faults] == ["geometry"] * 7
        assert s.m.port.reads == 0
        # Retrying does not help: nothing is cached.
        assert s.dma(IOVA).translation.reason == "geometry"
    else:
        assert [r.translation.pa for r in recs[:6]] == [PA + n * 0x3000 for n in range(6)]
        assert recs[6].translation.reason == "not_present"


# --- use-after-free ----------------------------------------------------------------------


@pytest.mark.parametrize("fix", [False, True], ids=["free_at_once", "free_after_sync"])
def test_walk_into_a_freed_table(sim, fix):
    """A 2M range of 4K pages (one level-0 table) is walked once, so the walk cache
    holds the level-1 item pointing at that table. Unmapping the whole range frees
    the table. A DMA to another page of the range is issued the cycle the table page
    is freed.

    free_after_sync off: the page is freed before the invalidation; the DMA's walk
    starts from the stale walk-cache entry, reads the poisoned page -- a
    ``use_after_free`` incident -- and, as hardware would, decodes the poison
    (0x6B6B...: R and W set) as a leaf and sends the DMA there (a stale translation
    too). free_after_sync on: the page is freed only after the invalidation, the
    walk starts at the root and faults ``not_present`` at level 1; no incident."""
    s = sim("vtdss", fixes={"free_after_sync": fix}, trace=True)
    s.map(IOVA, PA + PAGE, 2 << 20)  # the PA is 4K aligned only: 512 4K leaves
    l0 = s.steps(IOVA)[-1].table_pa
    assert s.dma(IOVA).translation.outcome == OK
    assert s.m.walk_cache.stats()["level1.fills"] == 1

    victim = IOVA + 5 * PAGE + 8
    box = {}
    s.when(
        lambda: s.m.allocator.is_free(l0),
        lambda: box.setdefault("dev", s.device([DmaRequest(victim, 8, False)])),
    )
    assert s.unmap(IOVA, 2 << 20) == 2 << 20
    (rec,) = box["dev"].records
    tr = rec.translation
    (inv,) = s.traced("iommu.invalidation", "done", kind="invalidate_range")
    # Fix off: the DMA was issued between the free and the invalidation; fix on, the
    # free (and so the DMA) comes after the invalidation.
    assert (rec.issue < inv.cycle) == (not fix)
    assert inv.fields["args"][-1] == (not fix)  # the leaf-only hint
    if not fix:
        poisoned_leaf = (POISON & vtdss.OA_MASK) | (victim & 0xFFF)
        assert (tr.outcome, tr.pa, tr.path) == (OK, poisoned_leaf, "walk_cache")
        uaf, stale = s.iommu.incidents
        assert (uaf.kind, uaf.pa, uaf.iova, uaf.device) == (
            "use_after_free",
            l0 + 5 * 8,
            victim,
            rec.device,
        )
        assert (stale.kind, stale.pa) == ("stale_translation", poisoned_leaf)
        assert s.m.port.freed_reads == 1
        assert s.iommu.stats()["uaf_events"] == 1
    else:
        assert (tr.outcome, tr.reason, tr.level, tr.path) == (FAULT, "not_present", 1, "walk")
        assert s.iommu.incidents == []
        assert s.m.port.freed_reads == 0
        assert s.iommu.stats()["uaf_events"] == 0
    # After the unmap returned. Fix on: not present, from the root. Fix off: nothing
    # was in the gather's free list, so the driver's invalidation carried the
    # leaf-only hint and the walk-cache entry survives it: every later walk under it
    # reads the freed page again.
    later = victim + PAGE
    tr = s.dma(later).translation
    if fix:
        # (From the level-2 walk-cache entry the in-window walk filled.)
        assert (tr.outcome, tr.reason, tr.level, tr.path) == (FAULT, "not_present", 1, "walk_cache")
        assert s.iommu.incidents == []
    else:
        assert (tr.outcome, tr.path) == (OK, "walk_cache")
        assert s.iommu.incidents[-2][1:] == ("use_after_free", "dev3", 1, later, l0 + 6 * 8)
        assert s.m.port.freed_reads == 2


# --- negative caching --------------------------------------------------------------------


def test_negative_caching(sim):
    """With ``iotlb.negative_caching`` a not-present walk is cached: after the page is
    mapped, DMAs keep faulting from the IOTLB until the range is invalidated."""
    s = sim("vtdss", hw={"iommu": {"iotlb": {"negative_caching": True}}})
    first = s.dma(IOVA).translation
    assert (first.outcome, first.reason, first.path) == (FAULT, "not_present", "walk")
    s.map(IOVA, PA, PAGE)
    reads = s.m.port.reads
    for _ in range(2):
        tr = s.dma(IOVA + 8).translation
        assert (tr.outcome, tr.reason, tr.level, tr.path) == (FAULT, "not_present", None, "iotlb")
    assert s.m.port.reads == reads
    assert s.m.iotlb.negative_hits == 2
    # Only that page is cached as not present: its (unmapped) neighbour walks.
    tr = s.dma(IOVA + PAGE).translation
    assert (tr.outcome, tr.reason, tr.level, tr.path) == (FAULT, "not_present", 0, "walk")

    def invalidate():
        yield (INVALIDATE_RANGE, 1, IOVA, PAGE, True)
        yield (WAIT_INVALIDATION,)

    s.cpu(invalidate(), "invalidate")
    tr = s.dma(IOVA + 8).translation
    assert (tr.outcome, tr.pa) == (OK, PA + 8)


@pytest.mark.parametrize(
    ("negative", "invalidate_on_map", "after_map"),
    [(False, False, OK), (True, False, FAULT), (True, True, OK)],
    ids=["no_negative_caching", "negative_caching", "negative_caching_driver_invalidates"],
)
def test_negative_caching_and_the_driver(sim, negative, invalidate_on_map, after_map):
    """A driver for caching-mode hardware (DriverPolicy.invalidate_on_map) invalidates
    after every map, which makes the negative entry harmless."""
    s = sim(
        "vtdss",
        hw={"iommu": {"iotlb": {"negative_caching": negative}}},
        driver=DriverPolicy(invalidate_on_map=invalidate_on_map),
    )
    assert s.dma(IOVA).translation.reason == "not_present"
    s.map(IOVA, PA, PAGE)
    assert s.dma(IOVA).translation.outcome == after_map
