"""The table-page allocator as a hardware-model block: costs, statistics, fault injection.

It is the ``tables`` ``PageAllocator`` (zeroing through the CPU cache on allocation,
poisoning on free, last-in first-out reuse, ``is_free`` for use-after-free checks),
configured from the ``allocator`` node, so the same instance serves the
``DirectExecutor`` at cycle 0 and the timed CPU cores afterwards.
"""

from __future__ import annotations

from ..tables.memory import FaultInjector, Memory, PageAllocator
from .component import component_rng
from .config import AllocatorConfig


class TableAllocator(PageAllocator):
    """A ``PageAllocator`` with the ``alloc``/``free`` costs the CPU cores charge."""

    def __init__(
        self,
        memory: Memory,
        cfg: AllocatorConfig,
        *,
        seed: int = 0,
        name: str = "allocator",
    ) -> None:
        faults = None
        if cfg.fail_nth is not None or cfg.fail_probability > 0.0:
            faults = FaultInjector(
                fail_nth=cfg.fail_nth,
                probability=cfg.fail_probability,
                seed=component_rng(seed, name).getrandbits(64),
            )
        super().__init__(memory, base=cfg.base, size=cfg.size, faults=faults)
        self.cfg = cfg
        self.name = name
        self.failures = 0

    def alloc(self, size_lg2: int) -> int | None:
        pa = super().alloc(size_lg2)
        if pa is None:
            self.failures += 1
        return pa

    def stats(self) -> dict[str, float]:
        return {
            "allocations": self.allocations,
            "frees": self.frees,
            "failures": self.failures,
            "live_pages": self.live_pages,
            "bad_frees": len(self.bad_frees),
        }
