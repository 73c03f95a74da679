"""The IOMMU: a translation request as a coroutine through link, IOTLB, walker slot,
walk cache and page walk (gem5 SMMUv3 style).

device --link--> IOTLB lookup --(miss)--> walker slot --> walk-cache probes, deepest
level first --> item reads through the walker port (DRAM behind the write buffer for
a non-snooping walker, the CPU view for a snooping one) --> decode as the hardware
does --> permission check --> A/D update --> IOTLB fill --link--> device.

A fault is a record in ``faults``, never an exception. Three security-relevant events
are counted beside faults: a walker read of a freed table page (use-after-free; the
walk goes on with whatever the page holds), a walker read of memory that was never a
table page (a non-table read, e.g. a walk through the NULL table at physical 0 that
the ``table_alloc_error`` bug installs; the walk goes on too) and a stale translation
(the DMA went to a page the CPU view no longer maps there, e.g. through an IOTLB
entry that outlived its unmap).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import simpy

from ..hwmodels.dma import FAULT, OK, Translation
from ..hwmodels.iotlb import NEGATIVE
from ..hwmodels.machine import Machine
from ..hwmodels.sim import advance
from .hwformats import HW_FORMATS, LEAF, NOT_PRESENT, RESERVED, TABLE, HwFormat

Events = Generator[simpy.Event, Any, Translation]
Truth = Callable[[int, int], "int | None"]

# A walk-cache entry holds the next table's address (at least 8-byte aligned) with
# the restrictions of the path above it in its low bits, so that a walk starting
# from it still ANDs the permissions of the items it skipped.
_WC_NO_READ = 1
_WC_NO_WRITE = 2
_WC_PERMS = _WC_NO_READ | _WC_NO_WRITE
_TRUTH_MEMO = 4096  # pages a held truth memo keeps before it starts over


class Fault(NamedTuple):
    cycle: int
    device: str
    domain: int
    iova: int
    access: str  # "read" or "write"
    reason: str  # not_present, permission, reserved, geometry, address_range
    level: int | None  # the table level where the walk stopped


class Incident(NamedTuple):
    """A stale translation or a use-after-free read, for the results file."""

    cycle: int
    kind: str  # "stale_translation", "use_after_free", "non_table_read" or "invisible_map"
    device: str  # the device, or the CPU for an invisible map
    domain: int
    iova: int
    pa: int  # where the DMA went / the freed item read / the map's address


@dataclass(slots=True)
class CachedTranslation:
    """An IOTLB entry: the page, the permissions of its walk, and whether D is set."""

    base: int
    size_lg2: int
    readable: bool
    writable: bool
    pte_pa: int
    dirty: bool


class Iommu:
    """Translates DMA requests for the domains attached to ``machine``'s queue."""

    name = "iommu.walker"

    def __init__(
        self,
        machine: Machine,
        domains: Mapping[int, str],
        *,
        truth: Truth | None = None,
    ) -> None:
        self.env = machine.env
        self.cfg = machine.config.iommu
        self.iotlb = machine.iotlb
        self.walk_cache = machine.walk_cache
        self.port = machine.port
        self.queue = machine.invalidation
        self._tracer = machine.tracer
        self.formats: dict[int, HwFormat] = {d: HW_FORMATS[f] for d, f in domains.items()}
        self.truth = truth
        self.slots = simpy.Resource(self.env, self.cfg.walker_slots)
        self._busy_slots: set[int] = set()  # slot numbers of traced walks in progress
        self._walking: dict[tuple[int, int], simpy.Event] = {}
        self.faults: list[Fault] = []
        self.incidents: list[Incident] = []
        # Told (issue cycle, incident) of every stale translation: the oracles of
        # experiment.oracles tell DMAs issued after an unmap from those during it.
        self.stale_listeners: list[Callable[[int, Incident], None]] = []
        self.walks = 0
        self.merged = 0
        self.ad_updates = 0
        self._truth_memo: dict[tuple[int, int], int | None] | None = None
        # Per domain: whether a write through an IOTLB entry with D clear must walk.
        self._tracks_dirty: dict[int, bool] = {
            d: bool(self.cfg.access_dirty and hw.dirty_bit) for d, hw in self.formats.items()
        }

    # --- the translator interface -------------------------------------------------------
    def translate(
        self, device: str, domain: int, iova: int, size: int, is_write: bool
    ) -> Events:
        """Link, IOTLB lookup, hit latency, then the translation (a usable hit, a fault)
        or a walk, link back, and the truth check. The phases are methods of their own
        so that a device pipeline (hwmodels.pipeline) can run a hit without a generator
        and in exactly this order."""
        env, cfg = self.env, self.cfg
        issued = env.now
        wait = advance(env, cfg.link)
        if wait is not None:
            yield wait
        entry = self.iotlb.lookup(domain, iova)
        wait = advance(env, cfg.iotlb.hit)
        if wait is not None:
            yield wait
        tr = self.decide(device, domain, iova, is_write, entry)
        if tr is None:
            tr = yield from self.walk_path(device, domain, iova, is_write)
        wait = advance(env, cfg.link)
        if wait is not None:
            yield wait
        self.check_truth(device, domain, iova, issued, tr)
        return tr

    def decide(
        self, device: str, domain: int, iova: int, is_write: bool, entry: Any
    ) -> Translation | None:
        """What a lookup's answer means once the hit latency passed: a fault (a negative
        entry), the translation (a usable hit), or None: the request must walk (a miss,
        or a write through an entry whose D bit is clear: the walk sets D)."""
        if entry is NEGATIVE:
            return self._fault(device, domain, iova, is_write, "not_present", None, "iotlb")
        if entry is not None and not (
            is_write and self._tracks_dirty.get(domain, False) and not entry.dirty
        ):
            return self._use(device, domain, iova, is_write, entry)
        return None

    def walk_path(self, device: str, domain: int, iova: int, is_write: bool) -> Events:
        """After a lookup that needs a walk: walk (in a walker slot), or wait for the walk
        of the same page another request started and look up again."""
        env, cfg = self.env, self.cfg
        while True:
            key = (domain, iova >> 12)
            pending = self._walking.get(key)
            if pending is not None and cfg.merge_walks:
                self.merged += 1
                yield pending
                entry = self.iotlb.lookup(domain, iova)
                wait = advance(env, cfg.iotlb.hit)
                if wait is not None:
                    yield wait
                tr = self.decide(device, domain, iova, is_write, entry)
                if tr is not None:
                    return tr
                continue
            done = self._walking[key] = env.event()
            try:
                with self.slots.request() as slot:
                    yield slot
                    if self._tracer is None:
                        tr = yield from self._walk(device, domain, iova, is_write)
                    else:
                        tr = yield from self._traced_walk(device, domain, iova, is_write)
            finally:
                # Without merging, a concurrent walk of the page may have replaced us.
                if self._walking.get(key) is done:
                    del self._walking[key]
                done.succeed()
            return tr

    def check_truth(
        self, device: str, domain: int, iova: int, issued: int, tr: Translation
    ) -> None:
        """A translation the software no longer maps there is a stale translation: an
        incident, told to the oracles with the request's issue cycle."""
        if tr.outcome == OK and self.truth is not None and self.true_pa(domain, iova) != tr.pa:
            self.record_incident("stale_translation", device, domain, iova, tr.pa)  # type: ignore[arg-type]
            for listener in self.stale_listeners:
                listener(issued, self.incidents[-1])

    def true_pa(self, domain: int, iova: int) -> int | None:
        """``truth(domain, iova)``, from the memo of its 4K page while one is held."""
        memo = self._truth_memo
        if memo is None:
            return self.truth(domain, iova)  # type: ignore[misc]
        key = (domain, iova >> 12)
        if key in memo:
            base = memo[key]
            return None if base is None else base | (iova & 0xFFF)
        pa = self.truth(domain, iova)  # type: ignore[misc]
        if len(memo) >= _TRUTH_MEMO:
            memo.clear()
        memo[key] = None if pa is None else pa & ~0xFFF
        return pa

    def hold_truth(self, held: bool) -> None:
        """Memoise ``truth`` per 4K page while ``held``: a device pipeline holds it while
        it runs its own queue, when nothing but its requests can act -- no CPU writes
        a table meanwhile, and a walker A/D write (the one write a request makes) drops
        the memo. A mapping is never finer than 4K, so a page's answer is one base."""
        self._truth_memo = {} if held else None

    def hit_pa(self, domain: int, iova: int, is_write: bool) -> int | None:
        """Where a request would go if it were looked up now and served by the IOTLB
        (a usable hit: no fault, no walk), else None; no side effect (no LRU update, no
        count). A pipeline uses it to tell a hit before its lookup's time."""
        entry = self.iotlb.peek(domain, iova)
        if entry is None or entry is NEGATIVE:
            return None
        if not (entry.writable if is_write else entry.readable):
            return None
        if is_write and self._tracks_dirty.get(domain, False) and not entry.dirty:
            return None
        return entry.base | (iova & ((1 << entry.size_lg2) - 1))

    # --- the pieces -----------------------------------------------------------------------
    def _use(
        self, device: str, domain: int, iova: int, is_write: bool, entry: CachedTranslation
    ) -> Translation:
        if not (entry.writable if is_write else entry.readable):
            return self._fault(device, domain, iova, is_write, "permission", None, "iotlb")
        pa = entry.base | (iova & ((1 << entry.size_lg2) - 1))
        return Translation(OK, pa, "iotlb")

    def _traced_walk(self, device: str, domain: int, iova: int, is_write: bool) -> Events:
        """A walk between ``walk_start`` and ``walk_end`` trace records naming its walker
        slot (the lowest free number: the slot tracks of a Perfetto trace) and its walk
        number, which its item reads carry too."""
        assert self._tracer is not None
        slot = min(set(range(self.cfg.walker_slots)) - self._busy_slots)
        self._busy_slots.add(slot)
        walk = self.walks + 1  # the number _walk gives it, before anything else can run
        self._tracer.emit(self.name, "walk_start", walk=walk, slot=slot, device=device,
                          domain=domain, iova=iova, is_write=is_write)
        try:
            tr = yield from self._walk(device, domain, iova, is_write)
        finally:
            self._busy_slots.discard(slot)
        self._tracer.emit(self.name, "walk_end", walk=walk, slot=slot, outcome=tr.outcome,
                          path=tr.path, reason=tr.reason, level=tr.level)
        return tr

    def _walk(self, device: str, domain: int, iova: int, is_write: bool) -> Events:
        """One page walk: walk-cache probes, then item reads down to the leaf. Inlined in
        one function: it runs for every IOTLB miss, the hot path of DMA simulation."""
        env, cfg = self.env, self.cfg
        self.walks += 1
        walk = self.walks
        hw = self.formats.get(domain)
        root = self.queue.root(domain)
        if hw is None or root is None:
            return self._fault(device, domain, iova, is_write, "geometry", None, "walk")
        table, top = root
        if cfg.walk_levels is not None and top + 1 not in cfg.walk_levels:
            # The hardware cannot walk a table of this depth (VT-d SAGAW).
            return self._fault(device, domain, iova, is_write, "geometry", top, "walk")
        if not hw.va_ok(top, iova):
            return self._fault(device, domain, iova, is_write, "address_range", top, "walk")
        queue, seq = self.queue, self.queue.seq  # fills only if no invalidation overlapped

        level, probes = top, 0
        readable = writable = True
        for cached in self.walk_cache.levels:
            if cached > top:
                break
            probes += 1
            hit = self.walk_cache.lookup(domain, cached, iova, hw.item_lg2(cached))
            if hit is not None:
                level, table = cached - 1, hit & ~_WC_PERMS
                readable, writable = not hit & _WC_NO_READ, not hit & _WC_NO_WRITE
                break
        if probes:
            wait = advance(env, probes * cfg.walk_cache.probe)
            if wait is not None:
                yield wait
        path = "walk_cache" if level < top else "walk"

        while True:
            pte_pa = table + hw.index(level, iova) * 8
            if self.port.is_freed_table(pte_pa):
                self.record_incident("use_after_free", device, domain, iova, pte_pa)
            elif not self.port.is_live_table(pte_pa):
                self.record_incident("non_table_read", device, domain, iova, pte_pa)
            raw = yield from self.port.read(pte_pa, walk)
            item = hw.decode(level, raw)
            if item.kind == NOT_PRESENT:
                if queue.seq == seq or not queue.invalidated_since(seq, domain, iova):
                    self.iotlb.fill_negative(domain, iova, hw.granule_lg2)
                return self._fault(device, domain, iova, is_write, "not_present", level, path)
            if item.kind == RESERVED:
                return self._fault(device, domain, iova, is_write, "reserved", level, path)
            readable &= item.readable
            writable &= item.writable
            if item.kind == TABLE:
                if item.next_level < level - 1 and not self._skipped_bits_clear(
                    hw, iova, level, item.next_level
                ):
                    return self._fault(device, domain, iova, is_write, "reserved", level, path)
                if item.next_level == level - 1:
                    # The entry keeps the permissions ANDed down to here (as the
                    # paging-structure caches do), in the low bits of the address.
                    perms = (0 if readable else _WC_NO_READ) | (0 if writable else _WC_NO_WRITE)
                    if queue.seq == seq or not queue.invalidated_since(seq, domain, iova):
                        self.walk_cache.fill(domain, level, iova, hw.item_lg2(level),
                                             item.addr | perms)
                table, level = item.addr, item.next_level
                continue
            assert item.kind == LEAF
            if not (writable if is_write else readable):
                return self._fault(device, domain, iova, is_write, "permission", level, path)
            dirty = bool(raw & hw.dirty_bit)
            if cfg.access_dirty and hw.accessed_bit:
                want = raw | hw.accessed_bit | (hw.dirty_bit if is_write else 0)
                if want != raw:
                    if self._truth_memo is not None:
                        self._truth_memo.clear()  # the memo held before this write
                    found = yield from self.port.update(pte_pa, raw, want, walk)
                    if found == raw:
                        self.ad_updates += 1
                        dirty = bool(want & hw.dirty_bit)
            base, size_lg2 = item.addr, item.size_lg2
            cap = cfg.iotlb.max_page_lg2
            if cap is not None and size_lg2 > cap:
                # Splintering: cache only the cap-sized part around this IOVA.
                base |= iova & ((1 << size_lg2) - 1) & ~((1 << cap) - 1)
                size_lg2 = cap
            entry = CachedTranslation(base, size_lg2, readable, writable, pte_pa, dirty)
            if queue.seq == seq or not queue.invalidated_since(seq, domain, iova):
                self.iotlb.fill(domain, iova, size_lg2, entry)
            return Translation(OK, item.addr | (iova & ((1 << item.size_lg2) - 1)), path)

    def peek(self, domain: int, iova: int) -> int | None:
        """What a walk from the root register would translate ``iova`` to right now,
        ignoring the IOTLB and walk caches, in zero time and without side effects:
        the hardware view (DRAM, or the CPU view for a snooping walker)."""
        hw = self.formats.get(domain)
        root = self.queue.root(domain)
        if hw is None or root is None:
            return None
        table, level = root
        if self.cfg.walk_levels is not None and level + 1 not in self.cfg.walk_levels:
            return None
        if not hw.va_ok(level, iova):
            return None
        words = self.port.memory.cpu if self.cfg.coherent_walk else self.port.memory.hw
        while True:
            item = hw.decode(level, words.get(table + hw.index(level, iova) * 8, 0))
            if item.kind == TABLE:
                if item.next_level < level - 1 and not self._skipped_bits_clear(
                    hw, iova, level, item.next_level
                ):
                    return None
                table, level = item.addr, item.next_level
            elif item.kind == LEAF:
                return item.addr | (iova & ((1 << item.size_lg2) - 1))
            else:
                return None

    @staticmethod
    def _skipped_bits_clear(hw: HwFormat, iova: int, level: int, next_level: int) -> bool:
        """AMD level skipping: the VA bits of the skipped levels must be zero."""
        low = hw.item_lg2(next_level + 1)
        high = hw.item_lg2(level)
        return (iova >> low) & ((1 << (high - low)) - 1) == 0

    def _fault(
        self,
        device: str,
        domain: int,
        iova: int,
        is_write: bool,
        reason: str,
        level: int | None,
        path: str,
    ) -> Translation:
        access = "write" if is_write else "read"
        self.faults.append(Fault(self.env.now, device, domain, iova, access, reason, level))
        if self._tracer is not None:
            self._tracer.emit(
                self.name, "fault", device=device, domain=domain, iova=iova, access=access,
                reason=reason, level=level,
            )
        return Translation(FAULT, None, path, reason, level)

    def record_incident(self, kind: str, device: str, domain: int, iova: int, pa: int) -> None:
        """Log an incident with the walker's own (in time order, traced): also how an
        oracle records what it found, e.g. an ``invisible_map`` by a CPU."""
        self.incidents.append(Incident(self.env.now, kind, device, domain, iova, pa))
        if self._tracer is not None:
            self._tracer.emit(self.name, kind, device=device, domain=domain, iova=iova, pa=pa)

    def stats(self) -> dict[str, float]:
        return {
            "walks": self.walks,
            "merged": self.merged,
            "ad_updates": self.ad_updates,
            "faults": len(self.faults),
            "stale_translations": sum(i.kind == "stale_translation" for i in self.incidents),
            "uaf_events": sum(i.kind == "use_after_free" for i in self.incidents),
            "non_table_reads": sum(i.kind == "non_table_read" for i in self.incidents),
        }
