"""What every old driver provides: its page-table ops for one domain, as generators.

The iommu core (``iommu.py``) drives these exactly as drivers/iommu/iommu.c drove the
``iommu_domain_ops`` / ``io_pgtable_ops`` of the era. A driver keeps its per-domain
words (root pointer, mode or level, sequence count) in kernel data at
``data_pa``, so reading them is a LOAD another CPU may interleave with, as on real
hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..common import DriverPolicy
from ..errors import EOPNOTSUPP
from ..executor import ViewExecutor
from ..fixes import Fixes
from ..iter import Gen
from ..memory import KERNEL_DATA_BASE, PagedWords
from ..pages import free_table
from ..transactions import INVALIDATE_RANGE, WAIT_INVALIDATION
from .iommu import IotlbGather


@dataclass(slots=True)
class DriverConfig:
    """Everything a driver is created with (the scenario's table section, resolved)."""

    domain: int = 1
    vasz_lg2: int | None = None  # None: what the driver used by default
    oasz_lg2: int | None = None
    top_level: int | None = None  # None: the driver's default depth
    pgsize_bitmap: int | None = None  # None: the driver's default page sizes
    coherent_walk: bool = True  # False: the walker does not snoop (flush what it must see)
    # Every feature name the table was created with, so a driver can map format-private
    # ones to its own quirks (e.g. ARM LPAE: "armv8_dbm" -> IO_PGTABLE_QUIRK_ARM_HD).
    features: frozenset[str] = frozenset()
    fixes: Fixes = field(default_factory=Fixes)
    policy: DriverPolicy = field(default_factory=DriverPolicy)
    debug: bool = True

    @property
    def data_pa(self) -> int:
        """Where this domain's driver words live (kernel data, never walked)."""
        return KERNEL_DATA_BASE + 64 * self.domain


class Driver:
    """Base class: the ops an old driver implements, with the shared defaults."""

    name = ""  # the old implementation, e.g. "amd-v1"
    fmt = ""  # the genpt format with the same hardware layout, e.g. "amdv1"

    def __init__(self, cfg: DriverConfig) -> None:
        self.cfg = cfg
        self.domain = cfg.domain
        self.fixes = cfg.fixes
        self.warnings: list[str] = []
        self.pgsize_bitmap = 0  # set by the subclass

    # -- set-up and teardown ------------------------------------------------------------
    def init(self) -> Gen:
        """Allocate the root and write the domain words: 0 or -errno."""
        raise NotImplementedError

    def attach(self) -> Gen:
        """Program the hardware with the current root (CHANGE_TOP)."""
        raise NotImplementedError

    def free(self) -> Gen:
        """Domain teardown: free every table page."""
        raise NotImplementedError

    # -- the ops ------------------------------------------------------------------------
    def map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, mapped: list[int]
    ) -> Gen:
        """Map ``pgcount`` pages of ``pgsize``; add the bytes mapped to ``mapped[0]``;
        return 0 or -errno."""
        raise NotImplementedError

    def unmap_pages(self, iova: int, pgsize: int, pgcount: int, gather: IotlbGather) -> Gen:
        """Bytes unmapped (0 ends the request)."""
        raise NotImplementedError

    def lookup(self, iova: int, root: tuple[int, int] | None = None) -> Gen:
        """(0, pa) or (-errno, 0) by a software walk; from ``root`` = (table pa, level)
        when given (the hardware's view), else from the domain words."""
        raise NotImplementedError

    def iova_to_phys(self, iova: int) -> Gen:
        """The kernel's iova_to_phys: the physical address, or 0."""
        ret, pa = yield from self.lookup(iova)
        return pa if ret == 0 else 0

    def read_and_clear_dirty(self, iova: int, size: int, no_clear: bool) -> Gen:
        """(0 or -errno, dirty runs); drivers without dirty tracking say -EOPNOTSUPP."""
        yield from ()
        return -EOPNOTSUPP, []

    # -- driver glue ----------------------------------------------------------------------
    def iotlb_sync_map(self, iova: int, size: int) -> Gen:
        """What the driver does after a map (by default what the hardware policy asks)."""
        if self.cfg.policy.invalidate_on_map:
            yield (INVALIDATE_RANGE, self.domain, iova, size, True)
            yield (WAIT_INVALIDATION,)
        return 0

    def iotlb_sync(self, gather: IotlbGather) -> Gen:
        """Invalidate the gathered range, wait, then free the gathered tables."""
        if not gather.empty:
            size = gather.end - gather.start + 1
            yield (INVALIDATE_RANGE, self.domain, gather.start, size, not gather.freelist)
            yield (WAIT_INVALIDATION,)
        for pa in gather.freelist:
            yield from free_table(pa)
        gather.freelist = []

    def warn_on(self, condition: bool, what: str) -> bool:
        """WARN_ON: record the warning, return the condition."""
        if condition:
            self.warnings.append(what)
        return condition

    def peek(self, words: PagedWords, iova: int, root: tuple[int, int] | None) -> tuple:
        """Run ``lookup`` on a plain view of memory (no executor, no cost)."""
        return ViewExecutor(words).run(self.lookup(iova, root))
