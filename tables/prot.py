"""IOMMU protection bits (include/linux/iommu.h) and dirty-tracking flags."""

from __future__ import annotations

import enum


class Prot(enum.IntFlag):
    READ = 1
    WRITE = 2
    CACHE = 4
    NOEXEC = 8
    MMIO = 16


# The same bits as plain ints, for the hot paths (IntFlag operators are slow).
READ, WRITE, CACHE, NOEXEC, MMIO = (int(p) for p in Prot)
RW = READ | WRITE
DIRTY_NO_CLEAR = 1  # IOMMU_DIRTY_NO_CLEAR
