"""The page table a scenario describes, as PageTable arguments."""

from __future__ import annotations

from typing import Any

from ..hwmodels.config import HardwareConfig
from ..tables import DriverPolicy, FaultInjector, Fixes, PageTable
from ..tables.executor import DirectExecutor
from .schema import Scenario


def driver_policy(s: Scenario, hw: HardwareConfig) -> DriverPolicy:
    """What the driver does after a map: by default what the hardware requires
    (a write-buffer flush with RWBF, an invalidation with negative caching)."""
    d = s.kernel.driver
    wbf = d.flush_write_buffer_on_map
    inv = d.invalidate_on_map
    return DriverPolicy(
        flush_write_buffer_on_map=hw.iommu.write_buffer.enabled if wbf is None else wbf,
        invalidate_on_map=hw.iommu.iotlb.negative_caching if inv is None else inv,
    )


def table_kwargs(s: Scenario, hw: HardwareConfig, seed: int = 0) -> dict[str, Any]:
    t = s.table
    faults = s.kernel.alloc_faults
    return {
        "vasz_lg2": t.vasz_lg2,
        "oasz_lg2": t.oasz_lg2,
        "top_level": t.top_level,
        "features": t.features,
        "fixes": Fixes(**s.kernel.fixes.model_dump()),
        "debug": s.kernel.debug,
        "domain": t.domain,
        "driver": driver_policy(s, hw),
        "alloc_faults": None
        if faults is None
        else FaultInjector(faults.fail_nth, faults.probability, seed),
    }


def make_table(
    s: Scenario, hw: HardwareConfig, executor: DirectExecutor | None = None, seed: int = 0
) -> PageTable:
    """Create (init) the scenario's table on ``executor``; raises PTError like the kernel.

    ``kernel.alloc_faults`` is armed once the table exists: injected failures hit the
    workload's allocations, never the driver's set-up of the domain (which would make
    the scenario fail to start, or with ``table_alloc_error`` off give it a top table
    at physical address 0).
    """
    kwargs = table_kwargs(s, hw, seed)
    faults = kwargs.pop("alloc_faults")
    pt = PageTable(s.table.format, executor=executor, **kwargs)
    if faults is not None:
        pt.executor.allocator.faults = faults
    return pt
