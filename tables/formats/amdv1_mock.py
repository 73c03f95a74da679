"""The AMDv1 format as the iommufd selftest builds it ("mock").

The same bit layout as ``amdv1`` with a 2 KiB granule, so the IOMMU page size differs
from the CPU page size: contiguous entries of every order and dirty tracking get
exercised, and map never takes the single-page fast path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .amdv1 import AmdV1

if TYPE_CHECKING:
    from ..common import Common


class AmdV1Mock(AmdV1):
    """The iommufd selftest variant: 2 KiB granule, so the CPU page size differs."""

    name = "amdv1_mock"
    granule_lg2sz = 11
    max_top_level = 4
    max_va_lg2 = 56
    max_oa_lg2 = 51
    supported = 0
    force_enabled = 0
    has_hw_info = False

    def hw_info(self, common: Common, top_pa: int, top_level: int) -> dict[str, int]:
        return {}


FORMAT = AmdV1Mock()
