"""The memory system: coherent CPU caches over DRAM, as the two views of ``Memory``.

The CPU view (``cpu``) is what the coherent CPUs read and write; the hardware view
(``hw``) is DRAM, what a non-snooping walker reads. Per cache line the system keeps
which CPU caches hold the line (``holders``, a bit mask) and, for dirty lines, the CPU
that last wrote it (``dirty``). A dirty line reaches DRAM only when it is flushed or
evicted -- through the write buffer when there is one -- and both also drop the line
from every cache, so the next access misses.

State changes live in the ``Memory`` methods themselves (``store``, ``cmpxchg``,
``zero``, ``flush``, ``write_back_line``, ``fill_both``): the plain ``DirectExecutor``
can build tables at cycle 0, as the boot CPU ``BOOT_CPU`` (or whichever CPU
``writer`` names), and leave the line state consistent. The timed ``cpu_*`` methods
make the same changes for a given CPU and also return the cost in cycles.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import simpy

from ..tables.memory import Memory
from .alarm import Alarm
from .component import component_rng
from .config import CacheConfig, CpuConfig, WriteBufferConfig
from .trace import Tracer
from .write_buffer import WriteBuffer

BOOT_CPU = -1
"""The writer of everything done outside the simulated cores (table set-up at cycle 0)."""


class MemorySystem(Memory):
    """CPU caches over DRAM with per-line state, costs and dirty-line eviction.

    Costs (``cpu`` config):

    - load: ``load_hit`` if this CPU's cache holds the line, else ``load_miss`` (also
      when another CPU wrote the line since this CPU last read it);
    - store: ``store`` (retired into the store buffer); the line becomes dirty and is
      held by this CPU alone;
    - cmpxchg: ``cmpxchg_local`` if this CPU's cache holds the line and no other does,
      ``cmpxchg_remote`` if other caches hold it, ``load_miss + cmpxchg_local`` if no
      cache does; afterwards this CPU alone holds it, dirty if the swap happened;
    - flush of n lines (``clflush_cache_range``): ``2 * mfence + clflush_line +
      (n - 1) * clflushopt_extra_line``, whether the lines are dirty or not (just the
      fences when the range covers no line);
    - zeroing a table page: one ``store`` per line.

    Clean lines are never evicted. Dirty lines are written back on eviction by policy
    (``cache`` config): ``none`` never; ``random`` each dirty line independently with
    probability ``eviction_rate`` per cycle (its eviction cycle is drawn once, when it
    becomes dirty); ``capacity`` the least recently accessed one when more than
    ``capacity_lines`` lines are dirty.
    """

    def __init__(
        self,
        env: simpy.Environment,
        cache: CacheConfig,
        cpu: CpuConfig,
        write_buffer: WriteBufferConfig | None = None,
        *,
        seed: int = 0,
        tracer: Tracer | None = None,
        name: str = "cache",
    ) -> None:
        super().__init__(two_views=True, line_bytes=cache.line_bytes)
        self.env = env
        self.cfg = cache
        self.name = name
        self._tracer = tracer
        self.writer = BOOT_CPU
        self.holders: dict[int, int] = {}  # line -> bit mask of CPU caches holding it
        self.dirty: dict[int, int] = {}  # line -> last writer; order = least recent first
        self._mask = -cache.line_bytes
        self._pages = self.cpu.pages  # the views' page arrays, read inline below
        self._hw_pages = self.hw.pages
        self.write_buffer = (
            WriteBuffer(env, write_buffer, self.hw, cache.line_bytes, tracer=tracer)
            if write_buffer is not None and write_buffer.enabled
            else None
        )
        self._load_hit = cpu.load_hit
        self._load_miss = cpu.load_miss
        self._store = cpu.store
        self._cas_local = cpu.cmpxchg_local
        self._cas_remote = cpu.cmpxchg_remote
        self._fences = 2 * cpu.mfence
        self._flush_first = cpu.clflush_line
        self._flush_extra = cpu.clflushopt_extra_line
        self._eviction = EVICTIONS[cache.eviction](self, seed)
        self._lru = self._eviction.recency  # dirty lines kept in least-recent-first order
        self.loads = 0
        self.stores = 0
        self.cmpxchgs = 0
        self.hits = 0
        self.misses = 0
        self.cmpxchg_remote = 0
        self.flushes = 0
        self.flushed_lines = 0
        self.written_back_by_flush = 0
        self.written_back_by_eviction = 0

    # -- timed accesses by CPU ``cpu`` ----------------------------------------------

    def cpu_load(self, cpu: int, pa: int) -> tuple[int, int]:
        """Load a word; returns (value, cycles)."""
        line = pa & self._mask
        bit = 1 << (cpu + 1)
        held = self.holders.get(line, 0)
        self.loads += 1
        if held & bit:
            self.hits += 1
            cost = self._load_hit
        else:
            self.misses += 1
            self.holders[line] = held | bit
            cost = self._load_miss
        if self._lru:
            self._touch(line)
        if pa & 7:
            return self.cpu.get(pa, 0), cost
        page = self._pages.get(pa >> 12)  # PagedWords.get inlined
        return (0 if page is None else page[(pa & 4095) >> 3]), cost

    def cpu_store(self, cpu: int, pa: int, value: int) -> int:
        """Store a word; returns the cycles."""
        line = pa & self._mask
        self.stores += 1
        self.holders[line] = 1 << (cpu + 1)
        self._dirty(line, cpu)
        page = self._pages.get(pa >> 12)
        if page is None or pa & 7:
            self.cpu[pa] = value
        else:
            page[(pa & 4095) >> 3] = value
        return self._store

    def cpu_cmpxchg(self, cpu: int, pa: int, expected: int, new: int) -> tuple[int, int]:
        """Compare-and-exchange a word; returns (the word found, cycles)."""
        line = pa & self._mask
        bit = 1 << (cpu + 1)
        held = self.holders.get(line, 0)
        self.cmpxchgs += 1
        if held == bit:
            self.hits += 1
            cost = self._cas_local
        else:
            self.misses += 1
            if held:
                self.cmpxchg_remote += 1
                cost = self._cas_remote
            else:
                cost = self._load_miss + self._cas_local
        self.holders[line] = bit
        page = self._pages.get(pa >> 12)
        if page is None or pa & 7:
            found = self.cpu.get(pa, 0)
        else:
            found = page[(pa & 4095) >> 3]
        if found == expected:
            self._dirty(line, cpu)
            if page is None or pa & 7:
                self.cpu[pa] = new
            else:
                page[(pa & 4095) >> 3] = new
        elif self._lru:
            self._touch(line)
        return found, cost

    def flush_cycles(self, lines: int) -> int:
        """The cost of ``clflush_cache_range`` over ``lines`` lines (fences included)."""
        if not lines:
            return self._fences
        return self._fences + self._flush_first + (lines - 1) * self._flush_extra

    def zero_cycles(self, nbytes: int) -> int:
        """The cost of zeroing ``nbytes`` through the cache (one store per line)."""
        return -(-nbytes // self.line_bytes) * self._store

    # -- the Memory interface (also what the DirectExecutor calls) ------------------

    def load(self, pa: int) -> int:
        return self.cpu_load(self.writer, pa)[0]

    def store(self, pa: int, value: int) -> None:
        self.cpu_store(self.writer, pa, value)

    def cmpxchg(self, pa: int, expected: int, new: int) -> int:
        return self.cpu_cmpxchg(self.writer, pa, expected, new)[0]

    def flush(self, pa: int, nbytes: int) -> int:
        """clflush_cache_range: write back dirty lines, drop all; returns the line count.

        ``write_back_line`` inlined: every FLUSH transaction comes here."""
        lines = self.lines(pa, nbytes)
        n = len(lines)
        self.flushes += 1
        self.flushed_lines += n
        holders, dirty = self.holders, self.dirty
        for line in lines:
            holders.pop(line, None)
            if line in dirty:
                self._write_back(line, "flush")
        return n

    def write_back_line(self, line_pa: int) -> None:
        """clflush one line: write it back if it is dirty and drop it from every cache."""
        self.holders.pop(line_pa, None)
        if line_pa in self.dirty:
            self._write_back(line_pa, "flush")

    def zero(self, pa: int, nbytes: int) -> None:
        """Zero a range through the cache of ``writer``: its lines become dirty."""
        bit = 1 << (self.writer + 1)
        for line in self.lines(pa, nbytes):
            self.holders[line] = bit
            self._dirty(line, self.writer)
        self.cpu.fill(pa, nbytes, 0)

    def fill_both(self, pa: int, nbytes: int, value: int) -> None:
        """Write a value into both views (poisoning a freed page): the lines turn clean."""
        wb = self.write_buffer
        for line in self.lines(pa, nbytes):
            self._clean(line)
            if wb is not None:
                wb.discard(line)
        self.cpu.fill(pa, nbytes, value)
        self.hw.fill(pa, nbytes, value)

    def evict(self, line_pa: int) -> bool:
        """Write back one dirty line now, as an eviction would (drop it from every
        cache; through the write buffer when there is one). For the explorer's
        eviction choice points; False if the line is not dirty."""
        if line_pa not in self.dirty:
            return False
        self._write_back(line_pa, "evict")
        return True

    # -- the walker's side --------------------------------------------------------

    def is_dirty(self, pa: int) -> bool:
        """Whether a CPU cache holds the line of ``pa`` with data DRAM does not have."""
        return pa & self._mask in self.dirty

    def device_write(self, pa: int, value: int) -> None:
        """A coherent device write of one word: visible in both views at once."""
        number = pa >> 12
        page = self._pages.get(number)
        if page is None or pa & 7:
            self.cpu[pa] = value
        else:
            page[(pa & 4095) >> 3] = value
        page = self._hw_pages.get(number)
        if page is None or pa & 7:
            self.hw[pa] = value
        else:
            page[(pa & 4095) >> 3] = value
        if self.write_buffer is not None:
            self.write_buffer.patch(pa, value)

    # -- line state ------------------------------------------------------------------

    def _touch(self, line: int) -> None:
        writer = self.dirty.pop(line, None)
        if writer is not None:
            self.dirty[line] = writer

    def _dirty(self, line: int, cpu: int) -> None:
        dirty = self.dirty
        if line in dirty:
            if self._lru:
                del dirty[line]
            dirty[line] = cpu
            return
        dirty[line] = cpu
        self._eviction.dirtied(line)

    def _clean(self, line: int) -> int | None:
        """Forget that a line is dirty; returns its last writer (None if it was clean)."""
        writer = self.dirty.pop(line, None)
        if writer is not None:
            self._eviction.cleaned(line)
        return writer

    def _write_back(self, line: int, how: str) -> None:
        writer = self._clean(line)
        self.holders.pop(line, None)
        if how == "flush":
            self.written_back_by_flush += 1
        else:
            self.written_back_by_eviction += 1
        if self.write_buffer is None:
            super().write_back_line(line)
        else:
            self.write_buffer.push(line, self.cpu.line(line, self.line_bytes))
        if self._tracer is not None:
            if self.write_buffer is None:
                self._tracer.emit(self.name, "write_back", line=line, writer=writer, by=how)
            else:  # the buffer's depth with this line in it (Perfetto's counter)
                self._tracer.emit(self.name, "write_back", line=line, writer=writer, by=how,
                                  depth=self.write_buffer.pending)

    def stats(self) -> dict[str, float]:
        return {
            "loads": self.loads,
            "stores": self.stores,
            "cmpxchgs": self.cmpxchgs,
            "hits": self.hits,
            "misses": self.misses,
            "cmpxchg_remote": self.cmpxchg_remote,
            "flushes": self.flushes,
            "flushed_lines": self.flushed_lines,
            "written_back_by_flush": self.written_back_by_flush,
            "written_back_by_eviction": self.written_back_by_eviction,
            "dirty_lines": len(self.dirty),
        }


# --- eviction policies (cache.eviction), chosen by name ---------------------------------
class NoEviction:
    """``none``: a dirty line stays in the cache until it is flushed (the worst case
    for races)."""

    recency = False

    def __init__(self, mem: MemorySystem, seed: int) -> None:
        self.mem = mem

    def dirtied(self, line: int) -> None:
        """A line became dirty."""

    def cleaned(self, line: int) -> None:
        """A dirty line was written back (flush or eviction)."""


class RandomEviction(NoEviction):
    """``random``: each dirty line is evicted after a geometric number of cycles with
    the per-cycle ``eviction_rate`` (drawn once, when it becomes dirty; seeded)."""

    def __init__(self, mem: MemorySystem, seed: int) -> None:
        super().__init__(mem, seed)
        self.rate = mem.cfg.eviction_rate
        self.rng = component_rng(seed, mem.name)
        self.evict_at: dict[int, int] = {}
        self.alarm = Alarm(mem.env, self._due)

    def dirtied(self, line: int) -> None:
        due = self.mem.env.now + self._delay()
        self.evict_at[line] = due
        self.alarm.at(due, line)

    def cleaned(self, line: int) -> None:
        self.evict_at.pop(line, None)

    def _delay(self) -> int:
        """Cycles until a newly dirty line is evicted: geometric with the per-cycle rate."""
        if self.rate >= 1.0:
            return 1
        return 1 + int(math.log(1.0 - self.rng.random()) / math.log1p(-self.rate))

    def _due(self, line: int) -> None:
        if self.evict_at.get(line) == self.mem.env.now:
            self.mem._write_back(line, "evict")


class CapacityEviction(NoEviction):
    """``capacity``: at most ``capacity_lines`` dirty lines; the least recently used
    one is written back to make room."""

    recency = True

    def dirtied(self, line: int) -> None:
        mem = self.mem
        if len(mem.dirty) > mem.cfg.capacity_lines:
            mem._write_back(next(iter(mem.dirty)), "evict")


def _random_or_none(mem: MemorySystem, seed: int) -> NoEviction:
    return RandomEviction(mem, seed) if mem.cfg.eviction_rate > 0.0 else NoEviction(mem, seed)


EVICTIONS: dict[str, Callable[[MemorySystem, int], NoEviction]] = {
    "none": NoEviction,
    "random": _random_or_none,
    "capacity": CapacityEviction,
}
