"""The page table a scenario describes, built by the implementation it names.

``TABLE_IMPLEMENTATIONS`` maps ``table.implementation`` to a builder with the
signature of ``make_genpt``: ``genpt`` builds a ``PageTable``, ``io-pgtable`` the
``LegacyTable`` of the driver genpt replaced for the format. Both offer the same
operations (``*_op`` generators), ``executor``, ``live_table_pages``,
``pgsize_bitmap`` and ``iova_to_phys(view=...)``, and write the same hardware layout,
so the CPU cores, the walker (which decodes ``table.format``), the oracles and the
metrics never ask which one runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..hwmodels.config import HardwareConfig
from ..scenarios.schema import Scenario
from ..tables import DriverPolicy, FaultInjector, Fixes, PageTable
from ..tables.executor import DirectExecutor
from ..tables.iopgtable import LegacyTable


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


def table_kwargs(s: Scenario, hw: HardwareConfig) -> dict[str, Any]:
    t = s.table
    return {
        "vasz_lg2": t.vasz_lg2,
        "oasz_lg2": t.oasz_lg2,
        "top_level": t.top_level,
        "features": t.features,
        "fixes": Fixes(**s.kernel.fixes.model_dump()),
        "debug": s.kernel.debug,
        "domain": t.domain,
        "driver": driver_policy(s, hw),
    }


def make_genpt(s: Scenario, hw: HardwareConfig, executor: DirectExecutor | None) -> PageTable:
    return PageTable(s.table.format, executor=executor, **table_kwargs(s, hw))


def make_iopgtable(
    s: Scenario, hw: HardwareConfig, executor: DirectExecutor | None
) -> LegacyTable:
    """The old driver of the format (scenarios.checks has rejected formats without one
    and the features it cannot honour; fix switches it has no code for are ignored)."""
    return LegacyTable(s.table.format, executor=executor, **table_kwargs(s, hw))


Table = PageTable | LegacyTable
TableBuilder = Callable[[Scenario, HardwareConfig, "DirectExecutor | None"], Table]
TABLE_IMPLEMENTATIONS: dict[str, TableBuilder] = {
    "genpt": make_genpt,
    "io-pgtable": make_iopgtable,
}


def make_table(
    s: Scenario, hw: HardwareConfig, executor: DirectExecutor | None = None, seed: int = 0
) -> Table:
    """Create (init) the scenario's table on ``executor``; raises PTError like the kernel.

    Injected allocation failures (the hardware's ``allocator.fail_*``, or the
    scenario's ``kernel.alloc_faults``, which wins) are armed once the table exists:
    they hit the workload's allocations, never the driver's set-up of the domain
    (which would make the scenario fail to start, or with ``table_alloc_error`` off
    give it a top table at physical address 0).
    """
    allocator = executor.allocator if executor is not None else None
    hw_faults = allocator.faults if allocator is not None else None
    if allocator is not None:
        allocator.faults = None
    pt = TABLE_IMPLEMENTATIONS[s.table.implementation](s, hw, executor)
    faults = s.kernel.alloc_faults
    if faults is not None:
        pt.executor.allocator.faults = FaultInjector(faults.fail_nth, faults.probability, seed)
    elif hw_faults is not None:
        pt.executor.allocator.faults = hw_faults
    return pt
