"""Every format and every page size: the hardware walk agrees with iova_to_phys.

For each format's supported sizes (AMDv1 / mock contiguous NL=7 sizes, RISC-V 64K
NAPOT and leaves up to the top level, ARMv8 contiguous-hint entries), a CPU core maps
one page of that size; then a
sample of the granule-sized pages in it (all of them for small sizes; otherwise first,
second, middle, last and a few seeded random ones) is DMA'd with an empty IOTLB, so
the walker decodes the item(s) of that page from memory, and once more through the
IOTLB. Each must reach exactly ``iova_to_phys(iova)`` of the CPU view; one IOTLB entry
serves the whole page, except where the hardware caches less than the software's entry
(ARMv8: the contiguous hint is not used, an entry is one item). Just outside the
mapping the DMA faults. After an unmap on a core (whose IOTLB sync is part of the
op), every sampled page faults ``not_present``.
"""

from __future__ import annotations

import random

import pytest

from iommusim.hwmodels.dma import FAULT, OK
from iommusim.tables import PageTable

# format id -> (format, PageTable keyword arguments, walker coherent?)
CONFIGS: dict[str, tuple[str, dict, bool]] = {
    "amdv1": ("amdv1", {}, True),
    "amdv1_mock": ("amdv1_mock", {}, True),
    "x86_64": ("x86_64", {}, True),
    "vtdss": ("vtdss", {}, True),
    "riscv64_sv57_napot": ("riscv64", {"vasz": 57, "features": ("riscv_svnapot_64k",)}, True),
    "riscv64_sv39": ("riscv64", {"vasz": 39}, True),
    # An incoherent walker over tables the CPU keeps flushed.
    "x86_64_incoherent": ("x86_64", {"features": ("dma_incoherent",)}, False),
    "vtdss_incoherent": ("vtdss", {"features": ("dma_incoherent",)}, False),
    "armv8": ("armv8", {}, True),
    "armv8_incoherent": ("armv8", {"features": ("dma_incoherent",)}, False),
}


def _sizes(name: str) -> list[int]:
    fmt, kw, _ = CONFIGS[name]
    kw = dict(kw)
    pt = PageTable(fmt, vasz_lg2=kw.pop("vasz", None), **kw)
    return [b for b in range(64) if pt.pgsize_bitmap >> b & 1]


def _params() -> list:
    return [
        pytest.param(name, lg2, id=f"{name}-2^{lg2}") for name in CONFIGS for lg2 in _sizes(name)
    ]


# What the parametrisation must cover (catches a silently shrunken size list).
EXPECTED_SIZES = {
    "amdv1": [s for s in range(12, 52) if s != 39],
    "amdv1_mock": list(range(11, 38)),
    "x86_64": [12, 21, 30],
    "vtdss": [12, 21, 30],
    "riscv64_sv57_napot": [12, 16, 21, 30, 39, 48],
    "riscv64_sv39": [12, 21, 30],
    "x86_64_incoherent": [12, 21, 30],
    "vtdss_incoherent": [12, 21, 30],
    "armv8": [12, 16, 21, 25, 30, 34],
    "armv8_incoherent": [12, 16, 21, 25, 30, 34],
}


def test_every_supported_size_is_covered():
    for name, sizes in EXPECTED_SIZES.items():
        assert _sizes(name) == sizes, name


def _layout(vasz: int, oasz: int, size: int) -> tuple[int, int]:
    """An IOVA and a PA for one page of ``size``: aligned, distinct, inside the spaces."""
    iova = 2 * size if 3 * size <= 1 << (vasz - 1) else size
    pa = size if iova != size else 3 * size
    assert pa + size <= 1 << oasz
    return iova, pa


def _sample(size: int, granule: int, seed: int) -> list[int]:
    """Offsets of granule pages in a page of ``size``: all, or a spread sample."""
    n = size // granule
    if n <= 32:
        return [i * granule for i in range(n)]
    rng = random.Random(seed)
    picks = {0, 1, n // 2 - 1, n // 2, n - 2, n - 1} | {rng.randrange(n) for _ in range(4)}
    return [i * granule for i in sorted(picks)]


@pytest.mark.parametrize(("name", "lg2"), _params())
def test_dma_matches_iova_to_phys_then_faults_after_unmap(sim, name, lg2):
    fmt, kw, coherent = CONFIGS[name]
    kw = dict(kw)
    s = sim(fmt, coherent=coherent, vasz=kw.pop("vasz", None), **kw)
    size = 1 << lg2
    granule = 1 << s.iommu.formats[1].granule_lg2
    iova, pa = _layout(s.pt.vasz_lg2, s.pt.oasz_lg2, size)
    s.map(iova, pa, size)
    # The mapping is one leaf (or one contiguous block) of this size.
    assert s.pt.iova_to_phys(iova, view="peek") == pa

    offsets = _sample(size, granule, lg2)
    for n, off in enumerate(offsets):
        va = iova + off + 0x18
        want = s.pt.iova_to_phys(va, view="peek")
        assert want == pa + off + 0x18
        rec = s.walked(va, write=bool(n & 1))
        tr = rec.translation
        assert (tr.outcome, tr.pa) == (OK, want), hex(va)
        assert tr.path in ("walk", "walk_cache")
        again = s.dma(va, write=bool(n & 1)).translation
        assert (again.outcome, again.pa, again.path) == (OK, want, "iotlb")
    # The IOTLB entry covers what the hardware decoded: the whole page, or one item of
    # an ARMv8 contiguous entry (then a far page of it walks again, to the same end).
    leaf = s.steps(iova)[-1]
    entry_lg2 = s.iommu.formats[1].decode(leaf.level, leaf.raw).size_lg2
    assert entry_lg2 == lg2 or (fmt == "armv8" and entry_lg2 == lg2 - 4)
    s.walked(iova)  # the IOTLB holds only the entry of the first page
    last = s.dma(iova + size - 8).translation
    far_path = "iotlb" if entry_lg2 == lg2 else "walk_cache"
    assert (last.outcome, last.pa, last.path) == (OK, pa + size - 8, far_path)
    # Just outside the mapping: nothing.
    for va in (iova - granule, iova + size):
        assert s.walked(va).translation.outcome == FAULT, hex(va)

    assert s.unmap(iova, size) == size
    assert s.pt.iova_to_phys(iova, view="peek") is None
    for off in offsets:
        tr = s.dma(iova + off).translation
        assert (tr.outcome, tr.reason) == (FAULT, "not_present"), hex(iova + off)
        assert tr.path != "iotlb"
    assert s.iommu.incidents == []
