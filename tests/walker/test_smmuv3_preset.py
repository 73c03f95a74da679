"""The smmuv3-noncoherent preset walks ARMv8 stage-1 tables.

The preset is loaded as a scenario would load it (configs/smmuv3-noncoherent.yaml),
with an armv8 table. Its walker does not snoop: with DMA_INCOHERENT (every table write
cleaned to memory) every page size translates through the SMMU's per-level walk
caches; without it the same maps stay in the CPU caches and the SMMU sees nothing.
"""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from iommusim.hwmodels.dma import FAULT, OK
from iommusim.tables.formats import armv8

PRESET = yaml.safe_load(
    resources.files("iommusim.configs").joinpath("smmuv3-noncoherent.yaml").read_text()
)
IOVA, PA = 0x80_0000_0000, 0x4_0000_0000
SIZE = (1 << 30) + (32 << 20) + (2 << 20) + (64 << 10) + (4 << 10)


def _smmu(sim, **kw):
    s = sim("armv8", coherent=False, hw=PRESET, **kw)
    assert not s.config.iommu.coherent_walk
    return s


def test_armv8_on_the_noncoherent_smmu_translates_every_size(sim):
    s = _smmu(sim, features=("dma_incoherent",))
    info = s.pt.hw_info
    assert (info["sh"], info["irgn"], info["orgn"]) == (armv8.SH_OS, 0, 0)  # NC walks
    s.map(IOVA, PA, SIZE)
    sizes = {s.steps(IOVA + off)[-1].level for off in (0, 1 << 30, SIZE - 1)}
    assert sizes == {0, 1, 2}  # 1G block, 32M/2M blocks, 64K/4K pages
    for off in (0, 0x1234, (1 << 30) + 0x20_0008, (1 << 30) + (33 << 20), SIZE - 8):
        tr = s.walked(IOVA + off, write=bool(off & 8)).translation
        assert (tr.outcome, tr.pa) == (OK, PA + off), hex(off)
    stats = s.m.walk_cache.stats()
    assert stats["level3.hits"] + stats["level2.hits"] > 0  # Arm L0/L1 entries reused
    assert s.unmap(IOVA, SIZE) == SIZE
    tr = s.dma(IOVA + 0x1234).translation
    assert (tr.outcome, tr.reason) == (FAULT, "not_present")
    assert s.iommu.incidents == []


@pytest.mark.parametrize("incoherent", [False, True], ids=["no_flush", "dma_incoherent"])
def test_without_dma_incoherent_the_smmu_sees_nothing(sim, incoherent):
    features = ("dma_incoherent",) if incoherent else ()
    s = _smmu(sim, features=features)
    s.map(IOVA, PA, 1 << 12)
    assert s.pt.iova_to_phys(IOVA, view="peek") == PA
    tr = s.walked(IOVA).translation
    if incoherent:
        assert (tr.outcome, tr.pa) == (OK, PA)
    else:
        assert (tr.outcome, tr.reason, tr.level) == (FAULT, "not_present", 3)
