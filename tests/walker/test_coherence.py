"""Coherence of the walk: what a non-snooping walker sees of tables the CPU wrote.

An incoherent walker reads DRAM only, so a mapping the CPU made without cache
maintenance (the ``cache_flush`` fix off, or a format that never flushes because it
is only used with coherent walkers: AMDv1, RISC-V) is invisible to it: the DMA faults
``not_present`` and the walker's reads are counted stale. With the flushes the same
DMA translates. A snooping walker reads the CPU view and translates in every case.
"""

from __future__ import annotations

import pytest

from iommusim.hwmodels.dma import FAULT, OK

IOVA, PA, SIZE = 0x4000_0000, 0x1_2345_6000, 0x1000

# (format, features, does the software flush for an incoherent walker?)
CASES = [
    ("x86_64", ("dma_incoherent",), True),
    ("vtdss", ("dma_incoherent",), True),
    ("amdv1", (), False),
    ("amdv1_mock", (), False),
    ("riscv64", (), False),
]


def _run(sim, fmt, features, coherent, flush_fix):
    s = sim(fmt, coherent=coherent, features=features, fixes={"cache_flush": flush_fix})
    s.map(IOVA, PA, SIZE)
    # The CPU view always has the mapping.
    assert s.pt.iova_to_phys(IOVA + 0x10, view="peek") == PA + 0x10
    return s, s.dma(IOVA + 0x10).translation


@pytest.mark.parametrize(("fmt", "features", "flushes"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("flush_fix", [True, False], ids=["flushes", "no_flushes"])
def test_incoherent_walker_needs_the_flushes(sim, fmt, features, flushes, flush_fix):
    s, tr = _run(sim, fmt, features, False, flush_fix)
    if flushes and flush_fix:
        assert (tr.outcome, tr.pa) == (OK, PA + 0x10)
        assert s.pt.iova_to_phys(IOVA, view="hw") == PA  # DRAM holds the whole walk
        # DRAM differs from the CPU view only by the FLUSH_DONE software bit the CPU
        # sets after flushing a table pointer (x86 bit 9, VT-d bit 10): hardware
        # ignores it, so those walker reads count as stale but decode the same.
        flush_done = {"x86_64": 1 << 9, "vtdss": 1 << 10}[fmt]
        hw = s.m.memory.hw
        diffs = {step.raw ^ hw.get(step.entry_pa, 0) for step in s.steps(IOVA)}
        assert diffs <= {0, flush_done}
        assert s.m.port.stale_reads == sum(
            step.raw != hw.get(step.entry_pa, 0) for step in s.steps(IOVA)
        )
    else:
        # The root table's line is still only in the CPU cache: DRAM reads as empty.
        top = s.pt.top_level
        assert (tr.outcome, tr.reason, tr.level) == (FAULT, "not_present", top)
        assert s.pt.iova_to_phys(IOVA, view="hw") is None
        assert s.m.port.stale_reads == 1
        assert s.iommu.faults[-1].reason == "not_present"
        assert s.iommu.faults[-1].level == top


@pytest.mark.parametrize(("fmt", "features", "flushes"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("flush_fix", [True, False], ids=["flushes", "no_flushes"])
def test_coherent_walker_translates_either_way(sim, fmt, features, flushes, flush_fix):
    s, tr = _run(sim, fmt, features, True, flush_fix)
    assert (tr.outcome, tr.pa) == (OK, PA + 0x10)
    assert s.m.port.stale_reads == 0
    assert s.iommu.faults == []
    if not (flushes and flush_fix):
        # Nothing was written back: every walker read was served by a snoop.
        assert s.m.port.snoops == s.m.port.reads > 0
