"""LegacyTable: an old driver behind the same API as ``PageTable``.

Scenarios, the CPU cores, the explorer and the tests drive a table through
``*_op`` generators and a few properties; an old driver offers the same, so
``table.implementation: io-pgtable`` swaps the code under every command.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..api import SyncTableApi
from ..common import DriverPolicy
from ..errors import PTError
from ..executor import DirectExecutor
from ..fixes import Fixes
from ..iter import Gen
from ..memory import FaultInjector
from . import iommu
from .driver import Driver, DriverConfig

# genpt format -> (old implementation name, module:class). Formats genpt added later
# (riscv64) and the test-only amdv1_mock had no old code.
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "amdv1": ("amd-v1", "amd_v1:AmdV1"),
    "x86_64": ("amd-v2", "amd_v2:AmdV2"),
    "vtdss": ("vtd", "vtd:Vtd"),
    "armv8": ("arm-lpae", "arm_lpae:ArmLpae"),
}


def implementation_for(fmt: str) -> str:
    """The old implementation's name for a genpt format (KeyError if it had none)."""
    return IMPLEMENTATIONS[fmt][0]


def driver_class(fmt: str) -> type[Driver]:
    module, cls = IMPLEMENTATIONS[fmt][1].split(":")
    return getattr(importlib.import_module(f".{module}", __package__), cls)


class LegacyTable(SyncTableApi):
    """One domain of an old driver, with iommu_map / iommu_unmap of the era."""

    def __init__(
        self,
        fmt: str,
        *,
        vasz_lg2: int | None = None,
        oasz_lg2: int | None = None,
        top_level: int | None = None,
        features: Iterable[str] = (),
        fixes: Mapping[str, bool] | Fixes | None = None,
        debug: bool = True,
        executor: DirectExecutor | None = None,
        domain: int = 1,
        alloc_faults: FaultInjector | None = None,
        driver: DriverPolicy | None = None,
        pgsize_bitmap: int | None = None,
    ) -> None:
        if fmt not in IMPLEMENTATIONS:
            valid = ", ".join(sorted(IMPLEMENTATIONS))
            raise ValueError(f"format {fmt!r} had no io-pgtable implementation; valid: {valid}")
        names = frozenset(features)
        incoherent = "dma_incoherent" in names  # drivers read the others they know
        cfg = DriverConfig(
            domain=domain,
            features=names,
            vasz_lg2=vasz_lg2,
            oasz_lg2=oasz_lg2,
            top_level=top_level,
            pgsize_bitmap=pgsize_bitmap,
            coherent_walk=not incoherent,
            fixes=Fixes.from_mapping(fixes),
            policy=driver or DriverPolicy(),
            debug=debug,
        )
        self.format = fmt
        self.implementation = implementation_for(fmt)
        self.drv = driver_class(fmt)(cfg)
        self.executor = executor or DirectExecutor(two_views=incoherent)
        if alloc_faults is not None:
            self.executor.allocator.faults = alloc_faults
        ret = self.run(self.drv.init())
        if ret:
            raise PTError(ret, f"{self.implementation} init")
        self.attach()

    # --- generators -------------------------------------------------------------------
    def attach_op(self) -> Gen:
        return self.drv.attach()

    def map_op(self, iova: int, pa: int, size: int, prot: int) -> Gen:
        return iommu.iommu_map(self.drv, iova, pa, size, prot)

    def unmap_op(self, iova: int, size: int) -> Gen:
        return iommu.iommu_unmap(self.drv, iova, size)

    def iova_to_phys_op(self, iova: int) -> Gen:
        return self.drv.iova_to_phys(iova)

    def read_and_clear_dirty_op(self, iova: int, size: int, no_clear: bool = False) -> Gen:
        return self.drv.read_and_clear_dirty(iova, size, no_clear)

    def deinit_op(self) -> Gen:
        return self.drv.free()

    # --- the synchronous API (the rest is SyncTableApi's) ---------------------------
    def iova_to_phys(self, iova: int, *, view: str = "cpu") -> int | None:
        """As ``PageTable.iova_to_phys``: ``cpu`` through the executor, ``hw`` from the
        root the hardware was given over DRAM, ``peek`` the CPU view at no cost, also
        from the hardware's root: a walk from the domain words would spin for ever in
        zero time on AMD v1's seqcount while a grower sits inside its write section
        (and could pair a torn root and mode without it)."""
        memory = self.executor.memory
        if view == "cpu":
            ret, pa = self.run(self.drv.lookup(iova))
        elif view == "hw":
            ret, pa = self.drv.peek(memory.hw, iova, self.executor.roots[self.drv.domain])
        elif view == "peek":
            ret, pa = self.drv.peek(memory.cpu, iova, self.executor.roots[self.drv.domain])
        else:
            raise ValueError(f"view must be 'cpu', 'hw' or 'peek', not {view!r}")
        return pa if ret == 0 else None

    # --- properties -------------------------------------------------------------------
    @property
    def pgsize_bitmap(self) -> int:
        return self.drv.pgsize_bitmap

    @property
    def aperture_end(self) -> int:
        """The last IOVA the domain translates (``domain->geometry.aperture_end``):
        VT-d the guest address width, AMD v1 what its largest mode spans, AMD v2 the
        lower canonical half (PASID 0 has no sign extension), ARM LPAE the IAS."""
        d: Any = self.drv
        if self.implementation == "vtd":
            return (1 << d.gaw) - 1
        if self.implementation == "amd-v1":
            return min((1 << (12 + 9 * d.hpt_level)) - 1, (1 << 64) - 1)
        if self.implementation == "amd-v2":
            return (1 << (12 + 9 * d.levels - 1)) - 1
        return (1 << d.ias) - 1

    @property
    def warnings(self) -> list[str]:
        return self.drv.warnings

    @property
    def fixes(self) -> Fixes:
        return self.drv.fixes
