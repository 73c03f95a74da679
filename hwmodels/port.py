"""The walker's port to memory: what an IOMMU page walker reads and writes, and at what cost.

This is the whole interface the walker (``walker/``) needs from the memory side:

- ``read(pa)``: one 8-byte word as the walker sees it. A non-snooping walker
  (``coherent_walk`` false) reads DRAM, behind the write buffer, for ``dram.read``
  cycles. A snooping walker reads the CPU view: ``snoop`` cycles when a CPU cache holds
  the line dirty, else ``dram.read``. Like a CPU transaction, the read samples memory
  when it is issued and then takes its cost.
- ``update(pa, expected, new)``: the walker's atomic update of a word (A/D bits). It is
  a locked, snooped read-modify-write: it compares with the CPU view and, if equal,
  writes ``new`` into both views at once; it costs ``dram.write``.
- ``is_freed_table(pa)``: the word lies in a table page that has been freed (a walk
  that reads it is a use-after-free).
- ``is_live_table(pa)``: the word lies in a table page allocated now (a walk that
  reads neither a live nor a freed table page reads ordinary memory).
- ``is_stale(pa, value)``: a value the walker read differs from the CPU view now.

Every read is counted, and traced with its stale and freed flags.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from ..tables.memory import PageAllocator
from .config import IommuConfig
from .dram import Dram
from .memsys import MemorySystem
from .sim import advance
from .trace import Tracer


class WalkerPort:
    """Memory as the IOMMU's page walker sees it."""

    def __init__(
        self,
        cfg: IommuConfig,
        memory: MemorySystem,
        dram: Dram,
        allocator: PageAllocator,
        *,
        tracer: Tracer | None = None,
        name: str = "iommu.port",
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.env = memory.env
        self.memory = memory
        self.dram = dram
        self.allocator = allocator
        self._tracer = tracer
        self.reads = 0
        self.snoops = 0
        self.stale_reads = 0
        self.freed_reads = 0
        self.updates = 0

    def read(self, pa: int, walk: int = 0) -> Generator[simpy.Event, Any, int]:
        """Read the word at ``pa`` (``value = yield from port.read(pa)``); ``walk``: the
        walker's number for the walk, traced so a read is tied to its walk."""
        mem = self.memory
        self.reads += 1
        # PagedWords.get inlined: the word's page array, when it has one.
        number, index = pa >> 12, (pa & 4095) >> 3
        page = mem.cpu.pages.get(number)
        if page is None or pa & 7:
            current = mem.cpu.get(pa, 0)
        else:
            current = page[index]
        if self.cfg.coherent_walk:
            value = current
            stale = False
        else:
            page = mem.hw.pages.get(number)
            if page is None or pa & 7:
                value = mem.hw.get(pa, 0)
            else:
                value = page[index]
            stale = value != current
            self.stale_reads += stale
        freed = self.allocator.is_free(pa)
        self.freed_reads += freed
        if self._tracer is not None:
            if walk:
                self._tracer.emit(self.name, "read", pa=pa, value=value, stale=stale,
                                  freed=freed, walk=walk)
            else:
                self._tracer.emit(self.name, "read", pa=pa, value=value, stale=stale,
                                  freed=freed)
        if self.cfg.coherent_walk and mem.is_dirty(pa):
            self.snoops += 1
            wait = advance(self.env, self.cfg.snoop)
            if wait is not None:
                yield wait
        else:
            yield from self.dram.access(False)
        return value

    def update(self, pa: int, expected: int, new: int,
               walk: int = 0) -> Generator[simpy.Event, Any, int]:
        """Atomically replace ``expected`` by ``new`` at ``pa``; returns the word found."""
        mem = self.memory
        self.updates += 1
        page = mem.cpu.pages.get(pa >> 12)  # PagedWords.get inlined
        found = mem.cpu.get(pa, 0) if page is None or pa & 7 else page[(pa & 4095) >> 3]
        if found == expected:
            mem.device_write(pa, new)
        if self._tracer is not None:
            if walk:
                self._tracer.emit(self.name, "update", pa=pa, found=found, new=new, walk=walk)
            else:
                self._tracer.emit(self.name, "update", pa=pa, found=found, new=new)
        yield from self.dram.access(True)
        return found

    def is_freed_table(self, pa: int) -> bool:
        return self.allocator.is_free(pa)

    def is_live_table(self, pa: int) -> bool:
        """The word lies in a table page that is allocated now."""
        return self.allocator.is_live(pa)

    def is_stale(self, pa: int, value: int) -> bool:
        return value != self.memory.cpu.get(pa, 0)

    def stats(self) -> dict[str, float]:
        return {
            "reads": self.reads,
            "snoops": self.snoops,
            "stale_reads": self.stale_reads,
            "freed_reads": self.freed_reads,
            "updates": self.updates,
        }
