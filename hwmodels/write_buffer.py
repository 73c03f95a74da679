"""The IOMMU write buffer (VT-d CAP.RWBF): written-back lines the walker cannot see yet.

A line written back from the CPU caches is copied into the buffer as it was at that
moment. It reaches DRAM -- the walker's view -- ``drain`` cycles later, or when a
write-buffer flush command completes (``flush``), whichever comes first. Until then a
non-snooping walker reads the old DRAM content.
"""

from __future__ import annotations

import itertools

import simpy

from ..tables.memory import WORD, PagedWords
from .alarm import Alarm
from .config import WriteBufferConfig
from .trace import Tracer


class WriteBuffer:
    """Pending line copies in write-back order, each with its own drain deadline."""

    def __init__(
        self,
        env: simpy.Environment,
        cfg: WriteBufferConfig,
        dram_words: PagedWords,
        line_bytes: int,
        *,
        tracer: Tracer | None = None,
        name: str = "iommu.write_buffer",
    ) -> None:
        self.env = env
        self.cfg = cfg
        self.name = name
        self._dram = dram_words
        self._line_bytes = line_bytes
        self._tracer = tracer
        self._entries: dict[int, tuple[int, list[int]]] = {}  # id -> (line, words)
        self._by_line: dict[int, list[int]] = {}  # line -> ids of its pending copies
        self._ids = itertools.count()
        self._alarm = Alarm(env, self._drain)
        self.lines_buffered = 0
        self.lines_drained = 0
        self.lines_flushed = 0
        self.flushes = 0

    @property
    def pending(self) -> int:
        """Lines waiting in the buffer."""
        return len(self._entries)

    def is_pending(self, line: int) -> bool:
        return line in self._by_line

    def push(self, line: int, words: list[int]) -> None:
        """Buffer a copy of one line (its words in address order)."""
        key = next(self._ids)
        self._entries[key] = (line, words)
        self._by_line.setdefault(line, []).append(key)
        self.lines_buffered += 1
        self._alarm.at(self.env.now + self.cfg.drain, key)

    def flush(self) -> int:
        """Write every pending line to DRAM now (a write-buffer flush completing)."""
        entries = self._entries
        n = len(entries)
        for i, (line, words) in enumerate(entries.values(), 1):
            self._write(line, words, "flush", n - i)
        entries.clear()
        self._by_line.clear()
        self.flushes += 1
        self.lines_flushed += n
        return n

    def discard(self, line: int) -> None:
        """Forget pending copies of a line whose DRAM content was just overwritten."""
        for key in self._by_line.pop(line, ()):
            del self._entries[key]

    def patch(self, pa: int, value: int) -> None:
        """Update one word in the pending copies of its line (a coherent device write)."""
        line = pa - pa % self._line_bytes
        index = (pa - line) // WORD
        for key in self._by_line.get(line, ()):
            self._entries[key][1][index] = value

    def _drain(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:  # already written by a flush, or discarded
            return
        line, words = entry
        keys = self._by_line[line]
        keys.remove(key)
        if not keys:
            del self._by_line[line]
        self.lines_drained += 1
        self._write(line, words, "drain", len(self._entries))

    def _write(self, line: int, words: list[int], how: str, depth: int) -> None:
        """Write one line to DRAM; ``depth``: the lines still waiting after it (traced)."""
        if len(words) != -(-self._line_bytes // WORD):
            raise ValueError(f"{len(words)} words for a line of {self._line_bytes} bytes")
        self._dram.put_line(line, words)
        if self._tracer is not None:
            self._tracer.emit(self.name, how, line=line, depth=depth)

    def stats(self) -> dict[str, float]:
        return {
            "lines_buffered": self.lines_buffered,
            "lines_drained": self.lines_drained,
            "lines_flushed": self.lines_flushed,
            "flushes": self.flushes,
            "pending": self.pending,
        }
