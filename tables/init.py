"""Creating and destroying a table: init (every check, in the kernel's order),
get_info's page-size bitmap, and deinit."""

from __future__ import annotations

from typing import Any

from . import features as F
from .common import Common, top_set
from .errors import EINVAL, EOPNOTSUPP
from .iter import Gen, all_range, top_range
from .map import CollectArgs, collect_tables
from .pages import ALLOC_NORMAL, free_table, table_alloc
from .top import top_memsize_lg2
from .transactions import LOAD, STORE


def pgsize_bitmap(c: Common) -> int:
    """get_info: every leaf size the table can hold, below 2**max_oasz."""
    fmt = c.fmt
    bitmap = 0
    if c.dynamic_top:
        for level in range(fmt.max_top_level + 1):
            if fmt.isz[level] >= c.max_vasz_lg2:
                break
            bitmap |= fmt.possible_sizes(c, level)
    else:
        for level in range(c.top_level + 1):
            bitmap |= fmt.possible_sizes(c, level)
    return bitmap & ((1 << c.max_oasz_lg2) - 1)


def init_common(c: Common) -> int:
    """pt_init_common: settle the features and check the geometry."""
    fmt = c.fmt
    tr = top_range(c, top_set(0, c.top_level))
    if c.warn_on(tr.top_level > fmt.max_top_level, "top level above the format's maximum"):
        return -EINVAL
    if tr.top_level == fmt.max_top_level or c.max_vasz_lg2 == tr.max_vasz_lg2:
        c.features &= ~F.bit(F.DYNAMIC_TOP)
    if tr.max_vasz_lg2 == 64:
        c.features |= F.bit(F.FULL_VA)
    c.refresh_flags()
    forced = fmt.force_enabled
    if c.features & ~c.supported or (not c.debug and c.features & forced != forced):
        return -EOPNOTSUPP
    if (
        not c.dynamic_top
        and tr.top_level != fmt.max_top_level
        and c.max_vasz_lg2 > fmt.num_items_lg2(c, tr.top_level) + fmt.isz[tr.top_level]
    ):
        return -EOPNOTSUPP  # the top table is too small for vasz
    if c.max_oasz_lg2 == 0:
        c.max_oasz_lg2 = fmt.max_oa_lg2
    else:
        c.max_oasz_lg2 = min(c.max_oasz_lg2, fmt.max_oa_lg2)
    return 0


def init_domain(c: Common) -> int:
    """pt_iommu_init_domain: page sizes and the aperture (a DYNAMIC_TOP table may grow)."""
    c.pgsize_bitmap = pgsize_bitmap(c)
    level = c.fmt.max_top_level if c.dynamic_top else c.top_level
    rng = top_range(c, top_set(0, level))
    c.aperture_start = rng.va
    c.aperture_end = rng.last_va
    return 0


def pt_iommu_init(c: Common, cfg: dict[str, Any]) -> Gen:
    """pt_iommu_<fmt>_init: 0 or -errno; on success the top is published in memory."""
    fmt = c.fmt
    vasz = cfg["hw_max_vasz_lg2"]
    oasz = cfg["hw_max_oasz_lg2"]
    if vasz > fmt.max_va_lg2 or not vasz or not oasz:
        return -EINVAL
    c.features = cfg.get("features", 0)
    c.max_vasz_lg2 = vasz
    c.max_oasz_lg2 = oasz
    c.refresh_flags()
    ret = fmt.fmt_init(c, cfg)
    if ret:
        return ret
    if oasz > fmt.max_oa_lg2:
        return -EINVAL
    ret = init_common(c)
    if ret:
        return ret
    if c.dynamic_top and not c.driver_ops:
        c.warnings.append("DYNAMIC_TOP without change_top/get_top_lock")
        return -EINVAL
    if c.sign_extend and (c.feature(F.FULL_VA) or c.dynamic_top):
        return -EINVAL
    if c.incoherent and not c.iommu_device:
        c.warnings.append("DMA_INCOHERENT without an iommu_device")
        return -EINVAL
    ret = init_domain(c)
    if ret:
        return ret
    table = yield from table_alloc(c, top_memsize_lg2(c, c.top_level), ALLOC_NORMAL)
    if table < 0:
        return table
    yield (STORE, c.top_word_pa, top_set(table, c.top_level))
    return 0


def deinit(c: Common) -> Gen:
    """Free every table page (the driver has already detached and invalidated)."""
    top = yield (LOAD, c.top_word_pa)
    rng = all_range(c, top)
    collect = CollectArgs(check_mapped=False)
    collect.free_list.append(rng.top_table)
    yield from collect_tables(rng, collect, rng.top_level, rng.top_table)
    for pa in collect.free_list:
        yield from free_table(pa)
