"""The iommu core and driver glue around the page-table ops.

``iommu_map`` checks alignment, calls map_range once (S6: no splitting by the core)
and unmaps whatever was installed if it fails; on success the driver's
iotlb_sync_map runs. ``iommu_unmap`` unmaps into a gather and syncs it.
"""

from __future__ import annotations

from .common import Common
from .dirty import DirtyArgs, read_and_clear_dirty
from .errors import EINVAL
from .gather import Gather, iotlb_sync
from .iter import Gen
from .log2 import ffs
from .map import map_range
from .transactions import FLUSH_WRITE_BUFFER, INVALIDATE_RANGE, WAIT_INVALIDATION
from .unmap import unmap_range
from .work import W_CORE_CALL


def iommu_map(c: Common, iova: int, paddr: int, size: int, prot: int) -> Gen:
    """0 or -errno. A failed map leaves no leaves behind (the core rolls back)."""
    yield W_CORE_CALL
    min_pagesz = 1 << ffs(c.pgsize_bitmap)
    if (iova | paddr | size) & (min_pagesz - 1):
        return -EINVAL
    mapped = [0]
    ret = yield from map_range(c, iova, paddr, size, prot, mapped)
    if ret:
        if mapped[0]:
            yield from iommu_unmap(c, iova, mapped[0])
        return ret
    yield from iotlb_sync_map(c, iova, size)
    return 0


def iotlb_sync_map(c: Common, iova: int, size: int) -> Gen:
    """What a driver owes after a map: nothing, unless its hardware says otherwise."""
    policy = c.driver
    if policy.invalidate_on_map:
        yield (INVALIDATE_RANGE, c.domain, iova, size, True)
        yield (WAIT_INVALIDATION,)
    if policy.flush_write_buffer_on_map:
        yield (FLUSH_WRITE_BUFFER,)  # synchronous: the driver polls until it is done


def iommu_unmap(c: Common, iova: int, size: int) -> Gen:
    """Bytes unmapped; the IOTLB is invalidated and freed tables released."""
    yield W_CORE_CALL
    gather = Gather()
    unmapped = yield from unmap_range(c, iova, size, gather)
    yield from iotlb_sync(c, gather)
    return unmapped


def iommu_read_and_clear_dirty(c: Common, iova: int, size: int, no_clear: bool) -> Gen:
    """(0 or -errno, dirty runs). Cleaning owes an IOTLB flush (``dirty_clear_flush``):
    until it is done, cached translations keep letting writes through without
    setting D again."""
    yield W_CORE_CALL
    gather = Gather()
    dirty = DirtyArgs(gather, no_clear)
    ret = yield from read_and_clear_dirty(c, iova, size, dirty)
    if not ret and not no_clear and c.fixes.dirty_clear_flush:
        yield from iotlb_sync(c, gather)
    return ret, dirty.runs
