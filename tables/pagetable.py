"""PageTable: the synchronous Python API over the transaction generators.

Every method runs the same generator a simulated CPU would run, through a direct
executor. The ``*_op`` methods return those generators for other executors (the
interleaver, SimPy CPU cores).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import core, init, walk
from .api import SyncTableApi
from .common import Common, DriverPolicy, top_set
from .errors import PTError
from .executor import DirectExecutor, ViewExecutor
from .features import DMA_INCOHERENT, bit, feature_mask
from .fixes import Fixes
from .formats import get_format
from .formats.base import Format
from .iter import Gen
from .memory import KERNEL_DATA_BASE, FaultInjector
from .transactions import CHANGE_TOP, LOAD

# Address width when the caller gives none: what the format is normally used with.
DEFAULT_VASZ = {
    "amdv1": 64,
    "amdv1_mock": 56,
    "x86_64": 48,
    "vtdss": 48,
    "riscv64": 48,
    "armv8": 48,  # an SMMUv3 CD with T0SZ = 16
}


def default_top_level(fmt: Format, vasz: int) -> int:
    """The smallest top whose table spans vasz (what the VT-d driver derives from MGAW)."""
    for level in range(fmt.max_top_level + 1):
        if fmt.isz[level] + 9 >= vasz:
            return level
    return fmt.max_top_level


def top_word_address(domain: int) -> int:
    """Where a domain's top_of_table word lives (kernel data, never walked)."""
    return KERNEL_DATA_BASE + 64 * domain


class PageTable(SyncTableApi):
    """One IOMMU page table (one domain) with iommu_map / iommu_unmap semantics."""

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
        strict: bool = False,
        executor: DirectExecutor | None = None,
        domain: int = 1,
        alloc_faults: FaultInjector | None = None,
        driver: DriverPolicy | None = None,
        sme_mask: int = 0,
    ) -> None:
        f = get_format(fmt)
        mask = feature_mask(features, f.private_features)
        vasz = vasz_lg2 if vasz_lg2 is not None else DEFAULT_VASZ[f.name]
        cfg: dict[str, Any] = {
            "features": mask,
            "hw_max_vasz_lg2": vasz,
            "hw_max_oasz_lg2": oasz_lg2 if oasz_lg2 is not None else f.max_oa_lg2,
        }
        if f.name in ("amdv1", "amdv1_mock"):
            cfg["starting_level"] = 2 if top_level is None else top_level
        elif f.name in ("x86_64", "vtdss"):
            level = default_top_level(f, vasz) if top_level is None else top_level
            cfg["top_level"] = max(level, 3) if f.name == "x86_64" and top_level is None else level
        elif top_level is not None:
            widths = " (39, 48 or 57)" if f.name == "riscv64" else ""
            raise ValueError(f"{f.name} derives its top level from vasz_lg2{widths}")
        self._setup(
            f,
            cfg,
            fixes=Fixes.from_mapping(fixes),
            debug=debug,
            strict=strict,
            executor=executor,
            domain=domain,
            alloc_faults=alloc_faults,
            driver=driver,
            sme_mask=sme_mask,
        )

    @classmethod
    def from_cfg(cls, fmt: str, cfg: Mapping[str, Any], **kwargs: Any) -> PageTable:
        """Create from a kernel-style cfg: features (a bitmap), hw_max_vasz_lg2,
        hw_max_oasz_lg2, top_level / starting_level, and optionally iommu_device and
        driver_ops (both True unless given) -- the kunit fixture's way."""
        self = cls.__new__(cls)
        f = get_format(fmt)
        full = {"features": 0, **cfg}
        # The kunit fixture's defaults: 0 means the format's maximum.
        full["hw_max_vasz_lg2"] = full.get("hw_max_vasz_lg2") or f.max_va_lg2
        full["hw_max_oasz_lg2"] = full.get("hw_max_oasz_lg2") or f.max_oa_lg2
        if "fixes" in kwargs:
            kwargs["fixes"] = Fixes.from_mapping(kwargs["fixes"])
        self._setup(f, full, **kwargs)
        return self

    def _setup(
        self,
        f: Format,
        cfg: dict[str, Any],
        *,
        fixes: Fixes | None = None,
        debug: bool = True,
        strict: bool = False,
        executor: DirectExecutor | None = None,
        domain: int = 1,
        alloc_faults: FaultInjector | None = None,
        driver: DriverPolicy | None = None,
        sme_mask: int = 0,
    ) -> None:
        fixes = fixes or Fixes()
        if executor is None:
            executor = DirectExecutor(two_views=bool(cfg["features"] & bit(DMA_INCOHERENT)))
        if alloc_faults is not None:
            executor.allocator.faults = alloc_faults
        self.executor = executor
        self.common = Common(
            f,
            features=cfg["features"],
            fixes=fixes,
            debug=debug,
            strict=strict,
            domain=domain,
            top_word_pa=top_word_address(domain),
            sme_mask=sme_mask,
            iommu_device=cfg.get("iommu_device", True),
            driver_ops=cfg.get("driver_ops", True),
            driver=driver,
        )
        ret = executor.run(init.pt_iommu_init(self.common, cfg))
        if ret:
            raise PTError(ret, f"{f.name} init")
        self.attach()

    # --- generators (for the interleaver and simulated CPUs) --------------------------
    def attach_op(self) -> Gen:
        top = yield (LOAD, self.common.top_word_pa)
        yield (CHANGE_TOP, self.common.domain, top & ~7, top & 7)

    def map_op(self, iova: int, pa: int, size: int, prot: int) -> Gen:
        return core.iommu_map(self.common, iova, pa, size, prot)

    def unmap_op(self, iova: int, size: int) -> Gen:
        return core.iommu_unmap(self.common, iova, size)

    def iova_to_phys_op(self, iova: int) -> Gen:
        return walk.iova_to_phys(self.common, iova)

    def read_and_clear_dirty_op(self, iova: int, size: int, no_clear: bool = False) -> Gen:
        return core.iommu_read_and_clear_dirty(self.common, iova, size, no_clear)

    def set_dirty_op(self, iova: int) -> Gen:
        return walk.set_dirty(self.common, iova)

    def deinit_op(self) -> Gen:
        return init.deinit(self.common)

    # --- the synchronous API (the rest is SyncTableApi's) ---------------------------
    def iova_to_phys(self, iova: int, *, view: str = "cpu") -> int | None:
        """The physical address ``iova`` translates to, or None.

        ``view="hw"`` walks the hardware (DRAM) view from the root the hardware was
        given: what a non-snooping walker would find, ignoring IOTLB and caches.
        ``view="peek"`` reads the CPU view without going through the executor (no
        cost, no cache effects): what the software has mapped right now.
        """
        ret, pa = self._run_view(view, walk.lookup, iova)
        return pa if ret == 0 else None

    def walk(self, iova: int, *, view: str = "cpu") -> list[walk.WalkStep]:
        """The items a software walk of ``iova`` reads, top to leaf."""
        return self._run_view(view, walk.walk_steps, iova)

    def set_dirty(self, iova: int) -> None:
        ret = self.run(self.set_dirty_op(iova))
        if ret:
            raise PTError(ret, f"set_dirty {iova:#x}")

    def _run_view(self, view: str, fn: Any, iova: int) -> Any:
        if view == "cpu":
            return self.run(fn(self.common, iova))
        memory = self.executor.memory
        if view == "hw":
            root, level = self.executor.roots[self.common.domain]
            return ViewExecutor(memory.hw).run(fn(self.common, iova, top_set(root, level)))
        if view == "peek":
            return ViewExecutor(memory.cpu).run(fn(self.common, iova))
        raise ValueError(f"view must be 'cpu', 'hw' or 'peek', not {view!r}")

    # --- properties -------------------------------------------------------------------
    @property
    def top_of_table(self) -> int:
        return self.executor.memory.load(self.common.top_word_pa)

    @property
    def top_level(self) -> int:
        return self.top_of_table & 7

    @property
    def top_table_pa(self) -> int:
        return self.top_of_table & ~7

    @property
    def pgsize_bitmap(self) -> int:
        return self.common.pgsize_bitmap

    @property
    def vasz_lg2(self) -> int:
        return self.common.max_vasz_lg2

    @property
    def oasz_lg2(self) -> int:
        return self.common.max_oasz_lg2

    @property
    def hw_info(self) -> dict[str, int]:
        return self.common.fmt.hw_info(self.common, self.top_table_pa, self.top_level)

    @property
    def warnings(self) -> list[str]:
        return self.common.warnings

    @property
    def fixes(self) -> Fixes:
        return self.common.fixes
