"""The page-table code genpt replaced (the io-pgtable era, 2024 - mid 2025).

Each old driver is a ``Driver`` subclass written as transaction generators under the
same contract as genpt, so every executor, CPU core and walker runs it unchanged.
``LegacyTable`` gives it the ``PageTable`` API, with the iommu core of the era
(``iommu.py``: ``iommu_map``/``iommu_unmap`` splitting requests with
``iommu_pgsize``) in front. A scenario chooses it with
``table.implementation: io-pgtable``; which old driver runs follows from the format.
"""

from __future__ import annotations

from .table import IMPLEMENTATIONS, LegacyTable, implementation_for

__all__ = ["IMPLEMENTATIONS", "LegacyTable", "implementation_for"]
