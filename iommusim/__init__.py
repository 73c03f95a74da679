"""iommusim: a cycle-level simulator of IOMMU page walkers and the Linux generic page table."""

__version__ = "0.1.0"
