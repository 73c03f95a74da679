"""A short tour: map, walk and unmap on every format, printing what happened.

Run with ``python -m iommusim.tables.demo``.
"""

from __future__ import annotations

from .executor import DirectExecutor
from .formats import FORMATS
from .pagetable import PageTable
from .prot import RW
from .transactions import CAUSE_LEAF

SIZE_NAMES = {12: "4K", 21: "2M", 30: "1G"}

DEMO_TABLES = {
    "amdv1": {},
    "amdv1_mock": {},
    "x86_64": {"features": {"sign_extend", "dma_incoherent"}},
    "vtdss": {"features": {"dma_incoherent"}},
    "riscv64": {"features": {"riscv_svnapot_64k"}},
    "armv8": {"features": {"dma_incoherent"}},
}


def size_name(lg2: int) -> str:
    return SIZE_NAMES.get(lg2, f"2^{lg2}")


def tour(fmt: str) -> list[str]:
    """Map 2 MiB + 4 KiB, translate, walk, unmap, deinit; describe each step."""
    kwargs = DEMO_TABLES[fmt]
    pt = PageTable(fmt, **kwargs)
    ex: DirectExecutor = pt.executor
    iova, pa = 0x4000_0000, 0x1_0000_0000
    size = (2 << 20) + (4 << 10)
    out = [
        f"{fmt}: {pt.top_level + 1}-level table, vasz {pt.vasz_lg2}, "
        f"page sizes {pt.pgsize_bitmap:#x}, hw_info {pt.hw_info}"
    ]
    pt.map(iova, pa, size, RW)
    probe = iova + size - 0x10
    out.append(
        f"  map {iova:#x}+{size:#x} -> {pa:#x}: {pt.live_table_pages} table pages, "
        f"{ex.flush_lines[CAUSE_LEAF]} leaf lines flushed"
    )
    out.append(f"  iova_to_phys({probe:#x}) = {pt.iova_to_phys(probe):#x}")
    if ex.memory.two_views:
        out.append(f"  the non-snooping walker sees {pt.iova_to_phys(probe, view='hw'):#x}")
    steps = " -> ".join(f"L{s.level}[{s.index}]={s.kind}" for s in pt.walk(probe))
    out.append(f"  walk: {steps}")
    out.append(f"  unmap returned {pt.unmap(iova, size):#x} bytes")
    out.append(f"  after unmap iova_to_phys = {pt.iova_to_phys(probe)}")
    pt.deinit()
    out.append(f"  deinit: {pt.live_table_pages} table pages left, warnings {pt.warnings}")
    return out


def main() -> None:
    for fmt in FORMATS:
        print("\n".join(tour(fmt)))


if __name__ == "__main__":
    main()
