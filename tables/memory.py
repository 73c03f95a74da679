"""Physical memory with a CPU view and a hardware view, and the table-page allocator.

The CPU view is what the CPUs read and write (they are coherent with each other).
The hardware view is what a non-snooping walker reads: DRAM. A store reaches the
hardware view only when its cache line is flushed. With ``two_views=False`` both
views are the same dictionary, which is what a coherent system looks like.

Memory is sparse: a dictionary from 8-byte-aligned physical address to a 64-bit word;
a missing word reads as zero.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

WORD = 8
PAGE_LG2 = 12
PAGE_SIZE = 1 << PAGE_LG2
LINE_BYTES = 64

# Where table pages and kernel data live by default. Table pages come from a region
# well above typical DMA target addresses so traces stay readable; physical page 0
# is ordinary memory (the table_alloc_error bug writes a table into it).
TABLE_REGION_BASE = 0x40_0000_0000
TABLE_REGION_SIZE = 0x10_0000_0000
KERNEL_DATA_BASE = 0x3F_0000_0000

# The value a freed page is filled with (the slab allocator's POISON_FREE byte).
POISON = 0x6B6B6B6B6B6B6B6B


class Memory:
    """A sparse word store with an optional separate hardware (DRAM) view."""

    def __init__(self, *, two_views: bool = False, line_bytes: int = LINE_BYTES) -> None:
        self.cpu: dict[int, int] = {}
        self.hw: dict[int, int] = {} if two_views else self.cpu
        self.two_views = two_views
        self.line_bytes = line_bytes

    def load(self, pa: int) -> int:
        return self.cpu.get(pa, 0)

    def store(self, pa: int, value: int) -> None:
        if value:
            self.cpu[pa] = value
        else:
            self.cpu.pop(pa, None)

    def cmpxchg(self, pa: int, expected: int, new: int) -> int:
        found = self.cpu.get(pa, 0)
        if found == expected:
            self.store(pa, new)
        return found

    def hw_load(self, pa: int) -> int:
        return self.hw.get(pa, 0)

    def lines(self, pa: int, nbytes: int) -> range:
        """Start addresses of the lines x86 clflush_cache_range touches for the range.

        Like the kernel's loop, a zero-length range at an unaligned address still
        flushes the line it starts in.
        """
        lb = self.line_bytes
        return range(pa - pa % lb, pa + nbytes, lb)

    def write_back_line(self, line_pa: int) -> None:
        """Copy one cache line from the CPU view to the hardware view."""
        if not self.two_views:
            return
        cpu, hw = self.cpu, self.hw
        for pa in range(line_pa, line_pa + self.line_bytes, WORD):
            value = cpu.get(pa, 0)
            if value:
                hw[pa] = value
            else:
                hw.pop(pa, None)

    def flush(self, pa: int, nbytes: int) -> int:
        """clflush the range; returns the number of lines written back."""
        lines = self.lines(pa, nbytes)
        for line_pa in lines:
            self.write_back_line(line_pa)
        return len(lines)

    def zero(self, pa: int, nbytes: int) -> None:
        """Zero a range in the CPU view (a memset through the cache)."""
        for a in range(pa, pa + nbytes, WORD):
            self.store(a, 0)

    def fill_both(self, pa: int, nbytes: int, value: int) -> None:
        """Write a value into both views at once (page poisoning on free)."""
        for a in range(pa, pa + nbytes, WORD):
            self.store(a, value)
            if self.two_views:
                self.hw[a] = value


@dataclass
class FaultInjector:
    """Decides which table allocations fail: the Nth one, or each with a probability."""

    fail_nth: int | None = None
    probability: float = 0.0
    seed: int = 0
    count: int = 0
    failures: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.fail_nth is not None and self.fail_nth < 1:
            raise ValueError("fail_nth counts allocations from 1")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        self._rng = random.Random(self.seed)

    def should_fail(self) -> bool:
        self.count += 1
        fail = self.count == self.fail_nth or (
            self.probability > 0.0 and self._rng.random() < self.probability
        )
        self.failures += fail
        return fail


class PageAllocator:
    """Hands out naturally aligned, zeroed table pages from a region.

    Freed pages are poisoned in both memory views and reused last-in first-out, as
    the kernel's per-CPU page lists do, which makes a use-after-free of a table page
    as likely to read a new table as poison.
    """

    def __init__(
        self,
        memory: Memory,
        *,
        base: int = TABLE_REGION_BASE,
        size: int = TABLE_REGION_SIZE,
        faults: FaultInjector | None = None,
        poison: int = POISON,
    ) -> None:
        if base % PAGE_SIZE or size % PAGE_SIZE or size <= 0:
            raise ValueError("the table region must be whole, aligned pages")
        self.memory = memory
        self.base = base
        self.limit = base + size
        self.faults = faults
        self.poison = poison
        self._next = base
        self._free: list[int] = []
        self._live: set[int] = set()
        self._freed: set[int] = set()
        self.allocations = 0
        self.frees = 0
        self.bad_frees: list[int] = []

    @property
    def live_pages(self) -> int:
        return len(self._live)

    def is_live(self, pa: int) -> bool:
        return pa - pa % PAGE_SIZE in self._live

    def is_free(self, pa: int) -> bool:
        """True if the page holding ``pa`` was a table page and has been freed."""
        return pa - pa % PAGE_SIZE in self._freed

    def alloc(self, size_lg2: int) -> int | None:
        """Allocate a table of 2**size_lg2 bytes (at least a page); None on failure."""
        if size_lg2 > PAGE_LG2:
            raise ValueError(f"table of 2**{size_lg2} bytes is larger than a page")
        if self.faults is not None and self.faults.should_fail():
            return None
        if self._free:
            pa = self._free.pop()
            self._freed.discard(pa)
        elif self._next < self.limit:
            pa = self._next
            self._next += PAGE_SIZE
        else:
            return None
        self._live.add(pa)
        self.allocations += 1
        self.memory.zero(pa, PAGE_SIZE)
        return pa

    def free(self, pa: int) -> None:
        """Return a page; freeing anything but a live table page is recorded, not done.

        Historical bugs free pages that never came from here (a NULL table at
        physical 0); the simulator notes them in ``bad_frees`` instead of crashing.
        """
        if pa not in self._live:
            self.bad_frees.append(pa)
            return
        self._live.remove(pa)
        self._freed.add(pa)
        self._free.append(pa)
        self.frees += 1
        self.memory.fill_both(pa, PAGE_SIZE, self.poison)
