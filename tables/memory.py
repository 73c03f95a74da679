"""Physical memory with a CPU view and a hardware view, and the table-page allocator.

The CPU view is what the CPUs read and write (they are coherent with each other).
The hardware view is what a non-snooping walker reads: DRAM. A store reaches the
hardware view only when its cache line is flushed. With ``two_views=False`` both
views are the same dictionary, which is what a coherent system looks like.

Memory is sparse: a ``PagedWords`` store from 8-byte-aligned physical address to a
64-bit word, kept as one array of 512 words per 4 KiB page that holds a non-zero word
(about 8 bytes a word instead of a dictionary's ~114); a missing word reads as zero.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import overload

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

PAGE_WORDS = PAGE_SIZE // WORD
_ZERO_PAGE = bytes(PAGE_SIZE)


class PagedWords:
    """Sparse 64-bit words by physical address, a 4 KiB page at a time.

    Behaves as the ``{pa: value}`` dictionary it replaces, whose zero words are never
    stored: ``get(pa, 0)``, ``words[pa] = value`` (0 removes the word), ``pop``, ``in``,
    ``words[pa]`` (KeyError for a zero word), iteration, ``items()``, ``len()`` and
    ``==`` see the non-zero words only. ``pages`` maps ``pa >> 12`` to an
    ``array('Q')`` of the page's 512 words, created on the first non-zero store; the
    hot paths (``hwmodels``) read it directly. An address that is not 8-byte aligned
    (never a table word) is kept apart in ``odd``, a dictionary, so that it stays a
    word of its own as it was. Words are 64-bit: a value below 0 or from 2**64 on
    raises OverflowError (the dictionary kept any integer).
    """

    __slots__ = ("odd", "pages")
    __hash__ = None  # type: ignore[assignment]  # mutable, as the dictionary was

    def __init__(self, words: dict[int, int] | None = None) -> None:
        self.pages: dict[int, array[int]] = {}
        self.odd: dict[int, int] = {}
        if words:
            for pa, value in words.items():
                self[pa] = value

    @overload
    def get(self, pa: int) -> int | None: ...
    @overload
    def get(self, pa: int, default: int) -> int: ...
    def get(self, pa: int, default: int | None = None) -> int | None:
        if pa & 7:
            return self.odd.get(pa, default)
        page = self.pages.get(pa >> PAGE_LG2)
        if page is None:
            return default
        value = page[(pa & 4095) >> 3]
        return value if value else default

    def __getitem__(self, pa: int) -> int:
        value = self.get(pa, 0)
        if not value:
            raise KeyError(pa)
        return value

    def __setitem__(self, pa: int, value: int) -> None:
        if pa & 7:
            if value:
                self.odd[pa] = value
            else:
                self.odd.pop(pa, None)
            return
        page = self.pages.get(pa >> PAGE_LG2)
        if page is None:
            if not value:
                return
            page = self.pages[pa >> PAGE_LG2] = array("Q", _ZERO_PAGE)
        page[(pa & 4095) >> 3] = value

    def __delitem__(self, pa: int) -> None:
        if self.pop(pa, None) is None:
            raise KeyError(pa)

    def pop(self, pa: int, *default: int | None) -> int | None:
        value = self.get(pa, 0)
        if value:
            self[pa] = 0
            return value
        if default:
            return default[0]
        raise KeyError(pa)

    def __contains__(self, pa: object) -> bool:
        return isinstance(pa, int) and bool(self.get(pa, 0))

    def items(self) -> Iterator[tuple[int, int]]:
        """The non-zero words, (pa, value), pages in address order."""
        for number in sorted(self.pages):
            base = number << PAGE_LG2
            for i, value in enumerate(self.pages[number]):
                if value:
                    yield base + (i << 3), value
        yield from sorted(self.odd.items())

    def keys(self) -> Iterator[int]:
        return (pa for pa, _ in self.items())

    __iter__ = keys

    def values(self) -> Iterator[int]:
        return (value for _, value in self.items())

    def __len__(self) -> int:
        return len(self.odd) + sum(PAGE_WORDS - page.count(0) for page in self.pages.values())

    def __bool__(self) -> bool:
        return bool(self.odd) or any(page != _ZERO_ARRAY for page in self.pages.values())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PagedWords):
            if self.odd != other.odd:
                return False
            mine, theirs = self.pages, other.pages
            for number in mine.keys() | theirs.keys():
                if mine.get(number, _ZERO_ARRAY) != theirs.get(number, _ZERO_ARRAY):
                    return False
            return True
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"PagedWords({dict(self.items())!r})"

    def copy(self) -> PagedWords:
        new = PagedWords()
        new.pages = {number: array("Q", page) for number, page in self.pages.items()}
        new.odd = dict(self.odd)
        return new

    # -- whole ranges (cache lines, pages) ----------------------------------------------

    def line(self, pa: int, nbytes: int) -> list[int]:
        """The words of ``[pa, pa + nbytes)`` in address order, zeros included."""
        start = (pa & 4095) >> 3
        if pa & 7 or start + (nbytes >> 3) > PAGE_WORDS or nbytes & 7:
            return [self.get(a, 0) for a in range(pa, pa + nbytes, WORD)]
        page = self.pages.get(pa >> PAGE_LG2)
        if page is None:
            return [0] * (nbytes >> 3)
        return page[start:start + (nbytes >> 3)].tolist()

    def put_line(self, pa: int, words: list[int]) -> None:
        """Write ``words`` at ``pa`` on (zeros included): a cache line reaching DRAM."""
        start = (pa & 4095) >> 3
        if pa & 7 or start + len(words) > PAGE_WORDS:
            for i, value in enumerate(words):
                self[pa + (i << 3)] = value
            return
        page = self.pages.get(pa >> PAGE_LG2)
        if page is None:
            if not any(words):
                return
            page = self.pages[pa >> PAGE_LG2] = array("Q", _ZERO_PAGE)
        page[start:start + len(words)] = array("Q", words)

    def copy_line(self, source: PagedWords, pa: int, nbytes: int) -> None:
        """Make ``[pa, pa + nbytes)`` hold what ``source`` holds there (a write-back)."""
        start = (pa & 4095) >> 3
        end = start + (nbytes >> 3)
        if pa & 7 or end > PAGE_WORDS or nbytes & 7:
            for a in range(pa, pa + nbytes, WORD):
                self[a] = source.get(a, 0)
            return
        number = pa >> PAGE_LG2
        theirs = source.pages.get(number)
        mine = self.pages.get(number)
        if theirs is None:
            if mine is not None:
                mine[start:end] = _ZERO_ARRAY[start:end]
            return
        if mine is None:
            mine = self.pages[number] = array("Q", _ZERO_PAGE)
        mine[start:end] = theirs[start:end]

    def fill(self, pa: int, nbytes: int, value: int) -> None:
        """Set every word of ``[pa, pa + nbytes)`` to ``value`` (0 clears the range)."""
        a, end = pa, pa + nbytes
        while a < end:
            start = (a & 4095) >> 3
            if a & 7:
                self[a] = value
                a += WORD
                continue
            stop = min(PAGE_WORDS, start + ((end - a + 7) >> 3))
            number = a >> PAGE_LG2
            page = self.pages.get(number)
            if start == 0 and stop == PAGE_WORDS:
                if value:
                    self.pages[number] = array("Q", [value]) * PAGE_WORDS
                elif page is not None:
                    del self.pages[number]
            elif page is not None or value:
                if page is None:
                    page = self.pages[number] = array("Q", _ZERO_PAGE)
                page[start:stop] = array("Q", [value]) * (stop - start)
            a += (stop - start) << 3


_ZERO_ARRAY = array("Q", _ZERO_PAGE)


class Memory:
    """A sparse word store with an optional separate hardware (DRAM) view."""

    def __init__(self, *, two_views: bool = False, line_bytes: int = LINE_BYTES) -> None:
        self.cpu = PagedWords()
        self.hw = PagedWords() if two_views else self.cpu
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
        self.hw.copy_line(self.cpu, line_pa, self.line_bytes)

    def flush(self, pa: int, nbytes: int) -> int:
        """clflush the range; returns the number of lines written back."""
        lines = self.lines(pa, nbytes)
        for line_pa in lines:
            self.write_back_line(line_pa)
        return len(lines)

    def zero(self, pa: int, nbytes: int) -> None:
        """Zero a range in the CPU view (a memset through the cache)."""
        self.cpu.fill(pa, nbytes, 0)

    def fill_both(self, pa: int, nbytes: int, value: int) -> None:
        """Write a value into both views at once (page poisoning on free)."""
        self.cpu.fill(pa, nbytes, value)
        if self.two_views:
            self.hw.fill(pa, nbytes, value)


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
