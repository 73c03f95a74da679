"""The Linux generic page table (genpt / iommupt) as transaction generators.

``PageTable`` is the synchronous API; ``DirectExecutor`` and ``Interleaver`` run the
same operation generators against one memory, optionally with a separate hardware
view, so races between CPUs can be replayed exactly.
"""

# First: the compiled build (``make fast``), when there is a fresh one, is searched
# before the sources (tables.compiled says which modules and why).
from . import compiled as _compiled

__path__ = _compiled.search_path(__path__, "")

from .common import DriverPolicy
from .errors import PTError
from .executor import Blocked, DirectExecutor, Interleaver
from .fixes import FIX_DESCRIPTIONS, Fixes
from .formats import FORMATS, get_format
from .memory import FaultInjector, Memory, PageAllocator
from .pagetable import PageTable
from .prot import Prot
from .walk import WalkStep

__all__ = [
    "FIX_DESCRIPTIONS",
    "FORMATS",
    "Blocked",
    "DirectExecutor",
    "DriverPolicy",
    "FaultInjector",
    "Fixes",
    "Interleaver",
    "Memory",
    "PTError",
    "PageAllocator",
    "PageTable",
    "Prot",
    "WalkStep",
    "get_format",
]
