"""The table instance: pt_common, pt_iommu and the iommu_domain fields in one object.

``top_of_table`` (the top table pointer with the top level in its low 3 bits) lives
in memory at ``top_word_pa``, like the kernel's ``pt_common`` field: operations read
it with a LOAD (READ_ONCE) and only increase_top writes it, under the top lock.
That makes the read a point where another CPU may interleave, as on real hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import features as F
from .errors import PTWarning
from .fixes import Fixes
from .formats.base import Format

TOP_LEVEL_BITS = 3
TOP_LEVEL_MASK = (1 << TOP_LEVEL_BITS) - 1


def top_set(table_pa: int, level: int) -> int:
    """_pt_top_set: pack a top table address and its level into one word."""
    return table_pa | level


@dataclass(frozen=True, slots=True)
class DriverPolicy:
    """What the IOMMU driver does around the page-table calls.

    ``flush_write_buffer_on_map``: VT-d with CAP.RWBF -- after a map the driver
    flushes the write buffer (iotlb_sync_map). ``invalidate_on_map``: VT-d caching
    mode / AMD NpCache -- the hardware may cache not-present entries, so a map is
    followed by an invalidation of the mapped range.
    """

    flush_write_buffer_on_map: bool = False
    invalidate_on_map: bool = False


class Common:
    """One page table: format, geometry, features, fix switches and domain state."""

    def __init__(
        self,
        fmt: Format,
        *,
        features: int,
        fixes: Fixes,
        debug: bool,
        strict: bool = False,
        domain: int = 1,
        top_word_pa: int = 0,
        sme_mask: int = 0,
        iommu_device: bool = True,
        driver_ops: bool = True,
        driver: DriverPolicy | None = None,
    ) -> None:
        self.fmt = fmt
        self.features = features
        self.fixes = fixes
        self.debug = debug
        self.strict = strict
        self.domain = domain
        self.top_word_pa = top_word_pa
        self.sme_mask = sme_mask
        self.iommu_device = iommu_device
        self.driver_ops = driver_ops
        self.driver = driver or DriverPolicy()
        self.supported = fmt.supported_features(debug)
        self.max_vasz_lg2 = 0
        self.max_oasz_lg2 = 0
        self.top_level = 0  # the level fmt_init chose, before the top table exists
        self.pgsize_bitmap = 0
        self.aperture_start = 0
        self.aperture_end = 0
        self.warnings: list[str] = []
        self.refresh_flags()

    # --- features ---------------------------------------------------------------------
    def feature(self, f: int) -> bool:
        """pt_feature(): forced features are always on, unsupported ones always off."""
        if self.fmt.force_enabled >> f & 1:
            return True
        if not self.supported >> f & 1:
            return False
        return bool(self.features >> f & 1)

    def refresh_flags(self) -> None:
        """Cache the features the algorithms test on every item (init may change them)."""
        self.incoherent = self.feature(F.DMA_INCOHERENT)
        # Whether cache maintenance runs at all: S0 had none (the cache_flush switch).
        self.flushing = self.incoherent and self.fixes.cache_flush
        self.dynamic_top = self.feature(F.DYNAMIC_TOP)
        self.sign_extend = self.feature(F.SIGN_EXTEND)
        self.flush_range = self.feature(F.FLUSH_RANGE)
        self.no_gaps = self.feature(F.FLUSH_RANGE_NO_GAPS)

    # --- debug assertions -------------------------------------------------------------
    def warn_on(self, condition: bool, what: str) -> bool:
        """PT_WARN_ON: in a debug build warn and take the guarded path; else ignore."""
        if not self.debug:
            return False
        if condition:
            self.warnings.append(what)
            if self.strict:
                raise PTWarning(what)
        return bool(condition)
