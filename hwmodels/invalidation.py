"""The invalidation queue: IOMMU commands applied one after another, in order.

The CPU cores hand over the IOMMU-command transactions (``INVALIDATE_RANGE``,
``INVALIDATE_ALL``, ``FLUSH_WRITE_BUFFER``, ``WAIT_INVALIDATION``, ``CHANGE_TOP``) in
the order they issue them. One SimPy process takes them first in, first out; each
occupies the queue for its cost and takes effect when that time is over:

=====================  ====================  ==========================================
command                cost (cycles)         effect
=====================  ====================  ==========================================
``INVALIDATE_RANGE``   ``command``           IOTLB entries of the domain overlapping
                                             the range; walk-cache entries too unless
                                             ``leaf_only``; the write buffer drains
                                             first (implicitly, VT-d 6.8)
``INVALIDATE_ALL``     ``command``           every IOTLB and walk-cache entry of the
                                             domain (of every domain if it is None);
                                             the write buffer drains first
``CHANGE_TOP``         ``command``           the domain's root register becomes
                                             ``(root_pa, top_level)``
``FLUSH_WRITE_BUFFER`` write buffer's        every pending write-buffer line reaches
                       ``flush_cost``        DRAM (nothing, at no cost, without one)
``WAIT_INVALIDATION``  0                     none: it completes once every earlier
                                             command has taken effect
=====================  ====================  ==========================================

``submit`` returns an event for the two commands a CPU waits for (the wait, and the
write-buffer flush, which Linux polls to completion); the other commands are posted.

A walk in flight across an invalidation of its address must not cache what it read
before (``invalidated_since``): hardware drains such walks, and the kernel frees a
table right after the invalidation completes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import Any

import simpy

from ..tables.transactions import (
    CHANGE_TOP,
    FLUSH_WRITE_BUFFER,
    INVALIDATE_ALL,
    INVALIDATE_RANGE,
    WAIT_INVALIDATION,
    Transaction,
)
from .config import InvalidationConfig
from .iotlb import Iotlb
from .trace import Tracer
from .walk_cache import WalkCache
from .write_buffer import WriteBuffer

_WAITED_FOR = frozenset({WAIT_INVALIDATION, FLUSH_WRITE_BUFFER})


class InvalidationQueue:
    """Ordered IOMMU commands, the per-domain root registers they program."""

    def __init__(
        self,
        env: simpy.Environment,
        cfg: InvalidationConfig,
        *,
        iotlb: Iotlb,
        walk_cache: WalkCache,
        write_buffer: WriteBuffer | None = None,
        tracer: Tracer | None = None,
        name: str = "iommu.invalidation",
    ) -> None:
        self.env = env
        self.cfg = cfg
        self.name = name
        self.iotlb = iotlb
        self.walk_cache = walk_cache
        self.write_buffer = write_buffer
        self._tracer = tracer
        self.roots: dict[int, tuple[int, int]] = {}
        """domain -> (root table address, top level), as the walker must use them."""
        self._fifo: deque[tuple[Transaction, str, simpy.Event | None]] = deque()
        self._wake: simpy.Event | None = None
        self.counts = dict.fromkeys(
            (INVALIDATE_RANGE, INVALIDATE_ALL, CHANGE_TOP, FLUSH_WRITE_BUFFER, WAIT_INVALIDATION),
            0,
        )
        self.busy_cycles = 0
        # Invalidations applied so far, and the latest ones (seq, domain, iova, size;
        # domain or size None: all), for the walks in flight (invalidated_since).
        self.seq = 0
        self._applied: deque[tuple[int, int | None, int, int | None]] = deque(maxlen=1024)
        env.process(self._run())

    def invalidated_since(self, seq: int, domain: int, iova: int) -> bool:
        """Whether an invalidation applied after the ``seq``-th covered ``iova`` of
        ``domain``. A walk in flight across such an invalidation may have read an item
        before the CPU changed it: hardware must not cache what that walk read (the
        invalidation drains it), or a table freed after the invalidation would stay
        reachable through the walk cache."""
        if seq == self.seq:
            return False
        if self.seq - seq > len(self._applied):
            return True  # older than the log: assume it did
        for s, d, start, size in reversed(self._applied):
            if s <= seq:
                break
            if (d is None or d == domain) and (size is None or start <= iova < start + size):
                return True
        return False

    def _log(self, domain: int | None, iova: int, size: int | None) -> None:
        self.seq += 1
        self._applied.append((self.seq, domain, iova, size))

    @property
    def depth(self) -> int:
        """Commands submitted and not yet taken off the queue."""
        return len(self._fifo)

    def root(self, domain: int) -> tuple[int, int] | None:
        """The domain's (root table address, top level), None before it is attached."""
        return self.roots.get(domain)

    def submit(self, tx: Transaction, source: str) -> simpy.Event | None:
        """Enqueue a command; returns its completion event if the submitter waits for it."""
        kind = tx[0]
        if kind not in self.counts:
            raise ValueError(f"not an IOMMU command: {tx!r}")
        done = self.env.event() if kind in _WAITED_FOR else None
        self._fifo.append((tx, source, done))
        if self._tracer is not None:
            self._tracer.emit(self.name, "submit", kind=kind, source=source, depth=self.depth)
        if self._wake is not None:
            self._wake.succeed()
            self._wake = None
        return done

    def _cost(self, kind: str) -> int:
        if kind == WAIT_INVALIDATION:
            return 0
        if kind == FLUSH_WRITE_BUFFER:
            return self.write_buffer.cfg.flush_cost if self.write_buffer is not None else 0
        return self.cfg.command

    def _run(self) -> Generator[simpy.Event, Any, None]:
        fifo = self._fifo
        while True:
            if not fifo:
                self._wake = self.env.event()
                yield self._wake
            tx, source, done = fifo.popleft()
            cost = self._cost(tx[0])
            if cost:
                self.busy_cycles += cost
                yield self.env.timeout(cost)
            removed = self._apply(tx)
            self.counts[tx[0]] += 1
            if self._tracer is not None:
                self._tracer.emit(
                    self.name, "done", kind=tx[0], source=source, args=list(tx[1:]),
                    removed=removed,
                )
            if done is not None:
                done.succeed()

    def _apply(self, tx: Transaction) -> int:
        """Make a command take effect; returns how many cache entries it dropped."""
        kind = tx[0]
        if kind in (INVALIDATE_RANGE, INVALIDATE_ALL) and self.write_buffer is not None:
            # VT-d section 6.8: an invalidation flushes the write buffer implicitly;
            # software flushes it explicitly only after changes that need no
            # invalidation (not-present to present, i.e. after a map). So Linux's
            # unmap never flushes it, and its cleared items must reach DRAM here, or
            # a walk after the invalidation caches the item the CPU just cleared.
            self.write_buffer.flush()
        if kind == INVALIDATE_RANGE:
            _, domain, iova, size, leaf_only = tx
            self._log(domain, iova, size)
            removed = self.iotlb.invalidate_range(domain, iova, size)
            if not leaf_only:
                removed += self.walk_cache.invalidate_range(domain, iova, size)
            return removed
        if kind == INVALIDATE_ALL:
            domain = tx[1]
            self._log(domain, 0, None)
            if domain is None:
                return self.iotlb.invalidate_all() + self.walk_cache.invalidate_all()
            return self.iotlb.invalidate_domain(domain) + self.walk_cache.invalidate_domain(
                domain
            )
        if kind == CHANGE_TOP:
            self.roots[tx[1]] = (tx[2], tx[3])
        elif kind == FLUSH_WRITE_BUFFER and self.write_buffer is not None:
            self.write_buffer.flush()
        return 0

    def stats(self) -> dict[str, float]:
        return {**self.counts, "busy_cycles": self.busy_cycles}
