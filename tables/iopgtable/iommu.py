"""The iommu core of 2024 - mid 2025 (drivers/iommu/iommu.c; legacy_pt.md section 1).

Before genpt's ``map_range`` the core split every request into (page size, count)
chunks itself and called the driver once per chunk. ``iommu_pgsize`` picks the
largest size both addresses are aligned to and stops a chunk early only where a
whole larger page would fit after the next boundary, so a uniformly aligned request
reaches the driver as one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import EINVAL
from ..gather import Gather
from ..iter import Gen
from ..log2 import ffs, fls
from ..work import CORE_CALL, GATHER, OP_CALL, PGSIZE_SPLIT, work

if TYPE_CHECKING:
    from .driver import Driver


class IotlbGather(Gather):
    """struct iommu_iotlb_gather: a range, the page size it was gathered with, and the
    table pages to free once the IOTLB no longer points at them."""

    __slots__ = ("pgsize",)

    def __init__(self) -> None:
        super().__init__()
        self.pgsize = 0

    def reset(self) -> None:
        super().reset()
        self.pgsize = 0


def iommu_pgsize(bitmap: int, iova: int, paddr: int, size: int) -> tuple[int, int]:
    """(pgsize, count) of the next chunk of a request (legacy_pt.md 1.2)."""
    merge = iova | paddr
    sizes = bitmap & ((1 << fls(size)) - 1)  # no larger than what is left
    if merge:
        sizes &= (2 << ffs(merge)) - 1  # both addresses aligned to it
    if not sizes:
        raise ValueError(f"iommu_pgsize: no page size fits {iova:#x}/{paddr:#x}+{size:#x}")
    pgsize_lg2 = fls(sizes) - 1
    larger = bitmap & ~((2 << pgsize_lg2) - 1)
    if larger:
        nxt = 1 << ffs(larger)
        if not (iova ^ paddr) & (nxt - 1):
            offset = nxt - (merge & (nxt - 1))
            if offset + nxt <= size:
                size = offset  # stop where the larger page becomes usable
    return 1 << pgsize_lg2, size >> pgsize_lg2


def iommu_iotlb_gather_add_page(drv: Driver, gather: IotlbGather, iova: int, size: int) -> Gen:
    """Sync first when the page size changes or the range would leave a gap."""
    yield work(GATHER)
    if (gather.pgsize and gather.pgsize != size) or gather.is_disjoint(iova, size):
        yield from drv.iotlb_sync(gather)
        gather.reset()
    gather.pgsize = size
    gather.add_range(iova, size)


def iommu_map(drv: Driver, iova: int, paddr: int, size: int, prot: int) -> Gen:
    """0 or -errno; a failed request is unmapped again as far as it got."""
    yield work(CORE_CALL)
    min_pagesz = 1 << ffs(drv.pgsize_bitmap)
    if (iova | paddr | size) & (min_pagesz - 1):
        return -EINVAL
    orig_iova, orig_size, ret = iova, size, 0
    while size:
        yield work(PGSIZE_SPLIT)
        pgsize, count = iommu_pgsize(drv.pgsize_bitmap, iova, paddr, size)
        mapped = [0]
        yield work(OP_CALL)
        ret = yield from drv.map_pages(iova, paddr, pgsize, count, prot, mapped)
        size -= mapped[0]
        if ret:
            break
        iova += mapped[0]
        paddr += mapped[0]
    if ret:
        if orig_size - size:
            yield from iommu_unmap(drv, orig_iova, orig_size - size)
        return ret
    ret = yield from drv.iotlb_sync_map(orig_iova, orig_size)
    if ret:
        yield from iommu_unmap(drv, orig_iova, orig_size)
    return ret


def unmap_into(drv: Driver, iova: int, size: int, gather: IotlbGather) -> Gen:
    """__iommu_unmap: bytes unmapped; a chunk that unmaps nothing ends the request."""
    yield work(CORE_CALL)
    min_pagesz = 1 << ffs(drv.pgsize_bitmap)
    if (iova | size) & (min_pagesz - 1):
        return 0
    unmapped = 0
    while unmapped < size:
        yield work(PGSIZE_SPLIT)
        pgsize, count = iommu_pgsize(drv.pgsize_bitmap, iova, iova, size - unmapped)
        yield work(OP_CALL)
        got = yield from drv.unmap_pages(iova, pgsize, count, gather)
        if not got:
            break
        iova += got
        unmapped += got
    return unmapped


def iommu_unmap(drv: Driver, iova: int, size: int) -> Gen:
    """Bytes unmapped, after the driver's iotlb_sync of everything gathered."""
    gather = IotlbGather()
    unmapped = yield from unmap_into(drv, iova, size, gather)
    yield from drv.iotlb_sync(gather)
    gather.reset()
    return unmapped
