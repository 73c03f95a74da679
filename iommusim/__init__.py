"""iommusim: a cycle-level simulator of IOMMU page walkers and the Linux generic page table.

The Python API (``iommusim.run``, ``iommusim.load``, ``Results``) lives in
``iommusim.api`` and is imported on first use, so ``import iommusim.tables`` or
``import iommusim.plots`` does not load the simulator's upper layers.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["InputError", "Results", "__version__", "load", "run"]

_API = {"run", "load", "Results", "Run", "Point"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "InputError":
        from .errors import InputError

        return InputError
    raise AttributeError(f"module 'iommusim' has no attribute {name!r}")
