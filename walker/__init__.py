"""The IOMMU: translation pipeline and the hardware page walker of every format."""

from .hwformats import HW_FORMATS, HwFormat, HwItem
from .iommu import CachedTranslation, Fault, Incident, Iommu

__all__ = ["HW_FORMATS", "CachedTranslation", "Fault", "HwFormat", "HwItem", "Incident", "Iommu"]
