"""The soak's workload and its shadow model: CPUs that map and unmap at random on a
shared table, devices whose every DMA is checked against what the CPUs have mapped.

The shadow knows each mapping from the cycle its map returned until the cycle an unmap
of it started, and each unmapped range from the cycle its unmap returned until the
range is reused (ranges are quarantined for a while, so that late DMAs can probe
them). A DMA whose whole life lies inside one of those stable spans must translate to
the shadow's address (``wrong_pa``, ``fault_on_mapped``) or fault
(``stale_after_unmap``); a DMA that overlaps a map or unmap in flight is not judged.

The workload is built so that every fix switch matters somewhere (benchmarks/soak.py
lists which segment exercises which):

- rendezvous rounds: every CPU maps a 4K page into the same fresh 2M window at once,
  so two CPUs race to install the same new table level (``flush_done_sw_bit``);
- large leaves (2M, 1G) are sometimes unmapped by their first 4K only: the unmap
  removes the whole leaf and must invalidate all of it (``gather_unmapped_length``),
  and devices touch many 4K pieces of large leaves first (an IOTLB holding 4K splinters);
- "2M of 4K" mappings are unmapped whole, freeing their leaf table while devices walk
  there (``free_after_sync``);
- a single-leaf unmap may flush one cache line (``unmap_flush_changed_only``);
- a dirty zone mapped once and written by the devices is scanned with
  read_and_clear_dirty (``dirty_clear_flush``);
- injected table-allocation failures (``table_alloc_error``, ``increase_top``).
"""

from __future__ import annotations

import bisect
import random
from collections import Counter, deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import simpy

from iommusim.experiment.workload import Barriers, CpuRunner, DirtyScan
from iommusim.hwmodels.dma import OK, DmaRecord, Translation
from iommusim.tables.errors import ENOMEM

K4, M2, G1 = 1 << 12, 1 << 21, 1 << 30
Events = Generator[simpy.Event, Any, None]


@dataclass
class Violations:
    """Every violation by kind, with the first of each kind in words."""

    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, message: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[kind] += n
        self.first.setdefault(kind, message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(eq=False)
class Mapping:
    iova: int
    size: int
    pa: int
    leaf: int  # the page size of its leaves
    since: int = -1  # cycle its map returned
    unmapping: bool = False  # an unmap covering it has started
    touched: deque[int] = field(default_factory=lambda: deque(maxlen=8))  # recent DMAs


@dataclass(frozen=True)
class Gone:
    """A range whose unmap returned at cycle ``at``, and where DMAs went while it was
    mapped (``hot``: what the IOTLB and walk caches may still hold)."""

    iova: int
    size: int
    at: int
    hot: tuple[int, ...]


class Shadow:
    """Live mappings by IOVA (sorted, for lookups), and recently unmapped ranges."""

    def __init__(self, quarantine: int = 256) -> None:
        self.starts: list[int] = []
        self.live: dict[int, Mapping] = {}
        self.gone: deque[Gone] = deque(maxlen=quarantine)
        self.recent: deque[Mapping] = deque(maxlen=32)  # the latest maps: DMAs favour them
        self.pending: list[tuple[int, int]] = []  # ranges being mapped right now

    def find(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0:
            m = self.live[self.starts[i]]
            if addr < m.iova + m.size:
                return m
        return None

    def free(self, iova: int, size: int) -> bool:
        """Nothing live, being mapped, or quarantined overlaps ``[iova, iova + size)``."""
        i = bisect.bisect_left(self.starts, iova + size) - 1
        if i >= 0 and self.live[self.starts[i]].iova + self.live[self.starts[i]].size > iova:
            return False
        end = iova + size
        return not any(g.iova < end and iova < g.iova + g.size for g in self.gone) and \
            not any(a < end and iova < a + n for a, n in self.pending)

    def add(self, m: Mapping) -> None:
        bisect.insort(self.starts, m.iova)
        self.live[m.iova] = m
        self.recent.append(m)

    def remove(self, m: Mapping, gone: int, at: int) -> None:
        self.starts.remove(m.iova)
        del self.live[m.iova]
        self.gone.append(Gone(m.iova, gone, at, tuple(m.touched)))


@dataclass
class Zone:
    """Where a CPU places mappings of one kind: ``[base, base + size)``."""

    base: int
    size: int


@dataclass
class Plan:
    """One segment's workload: per CPU zones, the op mix, pacing and bounds."""

    ops_per_cpu: int
    dmas: int
    zones: list[dict[str, Zone]]  # per CPU: "4k", "2m", "1g"
    rendezvous: Zone | None = None  # fresh 2M windows, one per round
    round_every: int = 25  # ops between rendezvous rounds
    dirty: Zone | None = None  # mapped once, scanned by the last CPU
    dirty_every: int = 10  # the last CPU's operations between two scans
    dirty_writers: int = 2  # DMA engines that only write into the dirty zone
    large: bool = True  # 1G leaves (not on every table)
    ops_stop: int = 0  # filled in: total ops done


class Soak:
    """One segment on one machine: the assembly of ``experiment.assembly.build``, whose
    CPU runners (with the oracles watching them) run this workload."""

    def __init__(self, run: Any, plan: Plan, seed: int, stop_early: bool, domain: int) -> None:
        self.run, self.plan, self.env = run, plan, run.env
        self.rng = random.Random(seed)
        self.shadow = Shadow()
        self.v = Violations()
        self.stop_early = stop_early
        self.ops = 0
        self.dmas = 0
        self.cpus_done = 0
        self.writes: list[DmaRecord] = []  # writes into the dirty zone, for its oracle
        self.scans: list[DirtyScan] = []  # the dirty scans that succeeded
        self.last_op: dict[str, Any] = {}  # each CPU's last finished operation's record
        self.barriers = Barriers(self.env, {"round": len(run.runners)})
        self.domain = domain
        self._seen = 0  # walker incidents looked at by ``stopped``
        self.progress = self.env.event()  # fires at each CPU operation's end (DMA pacing)

    @property
    def stopped(self) -> bool:
        """Stop at the first violation (``stop_early``): the soak's own, an invisible
        map, or a walker read of freed or non-table memory."""
        if not self.stop_early:
            return False
        incidents = self.run.iommu.incidents
        for inc in incidents[self._seen:]:
            if inc.kind in ("use_after_free", "non_table_read"):
                self.v.add(inc.kind, f"{inc.device} at {inc.iova:#x}, cycle {inc.cycle:,}")
        self._seen = len(incidents)
        return self.v.total > 0 or self.run.oracles.invisible_maps > 0

    # --- CPUs -------------------------------------------------------------------------------
    def cpu(self, i: int, runner: CpuRunner) -> Events:
        rng = random.Random(self.rng.getrandbits(64))
        name = runner.spec.name
        runner.core.op_listeners.append(lambda rec: self.last_op.__setitem__(name, rec))
        plan = self.plan
        mine: list[Mapping] = []
        if plan.dirty is not None and i == len(self.run.runners) - 1:
            yield from self._map_dirty_zone(runner)
        for n in range(plan.ops_per_cpu):
            if self.stopped:
                break
            if plan.rendezvous is not None and n % plan.round_every == plan.round_every - 1:
                yield from self._round(i, runner, n // plan.round_every, mine)
            elif plan.dirty is not None and i == len(self.run.runners) - 1 and \
                    n % plan.dirty_every == plan.dirty_every - 1:
                yield from self._scan(runner)
            elif mine and rng.random() < (0.35 if len(mine) < 64 else 0.6):
                yield from self._unmap_one(runner, mine.pop(rng.randrange(len(mine))), rng)
            else:
                yield from self._map_one(runner, plan.zones[i], rng, mine)
            self._op_done()
        while mine and not self.stopped:  # teardown of this CPU's mappings
            yield from self._unmap_one(runner, mine.pop(), rng, whole=True)
            self._op_done()
        self.cpus_done += 1
        self._op_done(count=False)  # wakes the devices, which then see the CPUs are done

    def _op_done(self, count: bool = True) -> None:
        self.ops += count
        progress, self.progress = self.progress, self.env.event()
        progress.succeed()

    def _choose(self, zones: dict[str, Zone], rng: random.Random) -> tuple[int, int, Zone]:
        """(mapping size, leaf size, zone): 4K mostly, some 2M leaves, some 2M made of 4K
        leaves (pa not 2M-aligned), a few 1G leaves."""
        r = rng.random()
        if r < 0.62:
            return K4, K4, zones["4k"]
        if r < 0.80:
            return M2, M2, zones["2m"]
        if r < 0.95 or not self.plan.large:
            return M2, K4, zones["2m"]
        return G1, G1, zones["1g"]

    def _map_one(self, runner: CpuRunner, zones: dict[str, Zone], rng: random.Random,
                 mine: list[Mapping]) -> Events:
        size, leaf, zone = self._choose(zones, rng)
        for _ in range(16):
            iova = zone.base + rng.randrange(zone.size // size) * size
            if self.shadow.free(iova, size):
                break
        else:
            return
        pa = rng.randrange(1 << 30, 1 << 44) & -leaf  # below every table's output width
        if leaf < size:
            pa += leaf if pa % size == 0 else 0  # not aligned to the mapping: small leaves
        yield from self._map(runner, Mapping(iova, size, pa, leaf), mine)

    def _map(self, runner: CpuRunner, m: Mapping, mine: list[Mapping]) -> Events:
        self.shadow.pending.append((m.iova, m.size))
        try:
            ret = yield from runner._map(m.iova, m.pa, m.size, "rw")
        finally:
            self.shadow.pending.remove((m.iova, m.size))
        if ret == 0:
            m.since = self.env.now
            self.shadow.add(m)
            mine.append(m)
        elif ret != -ENOMEM:  # an injected allocation failure is the only allowed error
            self.v.add("op_error", f"{runner.spec.name}: map {m.iova:#x}+{m.size:#x} of a "
                       f"free range returned {ret} at cycle {self.env.now:,}")

    def _unmap_one(self, runner: CpuRunner, m: Mapping, rng: random.Random,
                   whole: bool = False) -> Events:
        partial = not whole and m.leaf == m.size and m.size > K4 and rng.random() < 0.4
        asked = K4 if partial else m.size
        m.unmapping = True
        ret = yield from runner._unmap(m.iova, asked)  # tells the stale-after-unmap oracle
        if ret != m.size:
            self.v.add("op_error", f"{runner.spec.name}: unmap {m.iova:#x}+{asked:#x} of a "
                       f"{m.size:#x} mapping returned {ret} at cycle {self.env.now:,}")
        last = self.last_op.get(runner.spec.name)
        if m.leaf == m.size and last is not None and last.label == "unmap":
            lines = sum(last.flush_lines.values())
            if lines > 1:  # one leaf item changed: one line (5815d930)
                self.v.add("overflush", f"{runner.spec.name}: unmap of one {m.size:#x} leaf "
                           f"at {m.iova:#x} flushed {lines} cache lines")
        self.shadow.remove(m, m.size, self.env.now)

    def _round(self, i: int, runner: CpuRunner, k: int, mine: list[Mapping]) -> Events:
        """Every CPU maps a 4K page into fresh window ``k`` at once: they race to install
        its table levels."""
        zone = self.plan.rendezvous
        assert zone is not None
        yield self.barriers.wait("round")
        iova = zone.base + (k % (zone.size // M2)) * M2 + i * K4
        if self.shadow.free(iova, K4):
            pa = (1 << 40) + (k * 64 + i) * K4
            yield from self._map(runner, Mapping(iova, K4, pa, K4), mine)

    def _map_dirty_zone(self, runner: CpuRunner) -> Events:
        zone = self.plan.dirty
        assert zone is not None
        for iova in range(zone.base, zone.base + zone.size, K4):
            yield from self._map(runner, Mapping(iova, K4, (1 << 41) + iova % G1, K4), [])

    def _scan(self, runner: CpuRunner) -> Events:
        zone = self.plan.dirty
        assert zone is not None
        start = self.env.now
        op = runner.pt.read_and_clear_dirty_op(zone.base, zone.size, False)
        ret, runs = yield from runner.core.execute(op, "read_and_clear_dirty")
        if ret == 0:
            self.scans.append(DirtyScan(start, self.env.now, zone.base, zone.size, tuple(runs)))

    # --- both views ---------------------------------------------------------------------------
    def auditor(self, every: int) -> Events:
        """Every ``every`` cycles, a sample of the shadow checked against both views."""
        while self.cpus_done < len(self.run.runners) and not self.stopped:
            yield self.env.timeout(every)
            self.audit()

    def audit(self, everything: bool = False, sample: int = 16) -> None:
        """A stable mapping reads the same in the CPU view (the software's table) and
        the hardware view (what the walker reads from its root: DRAM when it does not
        snoop); a quarantined unmapped range is absent from both."""
        sh, rng = self.shadow, self.rng
        if everything:
            live, gone = list(sh.live.values()), list(sh.gone)
        else:
            live = [sh.live[sh.starts[rng.randrange(len(sh.starts))]]
                    for _ in range(min(sample, len(sh.starts)))]
            gone = [sh.gone[rng.randrange(len(sh.gone))] for _ in range(min(sample, len(sh.gone)))]
        checks = [(addr, m.pa + addr - m.iova) for m in live if not m.unmapping and m.since >= 0
                  for addr in (m.iova, m.iova + m.size - 1)]
        checks += [(addr, None) for g in gone for addr in (g.iova, g.iova + g.size - 1)
                   if sh.find(addr) is None]
        pt, iommu = self.run.pt, self.run.iommu
        for addr, want in checks:
            cpu, hw = pt.iova_to_phys(addr, view="peek"), iommu.peek(self.domain, addr)
            if cpu != want or hw != want:
                show = [f"{x:#x}" if x is not None else "nothing" for x in (want, cpu, hw)]
                self.v.add("views_disagree", f"{addr:#x} should translate to {show[0]}: the "
                           f"CPU view says {show[1]}, the hardware view {show[2]} (cycle "
                           f"{self.env.now:,})")

    # --- devices -----------------------------------------------------------------------------
    def device(self, name: str, quota: int, rng: random.Random, dirty: bool = False) -> Events:
        """DMAs paced to the CPUs' progress (about ``quota`` in all), each checked. A
        ``dirty`` engine only writes into the dirty zone: a page written again between
        two scans goes through the IOTLB entry the first write left (what a missing
        flush after read_and_clear_dirty gets wrong)."""
        env, iommu, dram = self.env, self.run.iommu, self.run.machine.dram
        per_op = quota / max(1, self.plan.ops_stop)
        done = 0
        while self.cpus_done < len(self.run.runners) and not self.stopped:
            if done > per_op * (self.ops + 1):
                yield self.progress  # ahead of the CPUs: wait for their next operation
                continue
            iova, expect = self._dirty_target(rng) if dirty else self._target(rng)
            if iova is None:
                yield env.timeout(500)
                continue
            write = dirty or rng.random() < 0.5
            issue = env.now
            tr = yield from iommu.translate(name, self.domain, iova, 64, write)
            if tr.outcome == OK:
                yield from dram.access(write)
            done += 1
            self.dmas += 1
            self._judge(name, iova, issue, tr, expect)
            if write and self.plan.dirty is not None and self._in_dirty(iova):
                self.writes.append(DmaRecord(name, done, iova, 64, True, issue, env.now, tr))
            gap = rng.randrange(0, 300)
            if gap:
                yield env.timeout(gap)

    def _dirty_target(self, rng: random.Random) -> tuple[int | None, Any]:
        zone = self.plan.dirty
        assert zone is not None
        m = self.shadow.find(zone.base + rng.randrange(zone.size // K4) * K4)
        return (m.iova + rng.randrange(K4 // 64) * 64, m) if m is not None else (None, None)

    def _in_dirty(self, iova: int) -> bool:
        z = self.plan.dirty
        return z is not None and z.base <= iova < z.base + z.size

    def _target(self, rng: random.Random) -> tuple[int | None, Any]:
        """A quarter of the DMAs probe a recently unmapped range, mostly where DMAs went
        while it was mapped (what a cache may still hold); the others hit a live mapping,
        half of them one of the latest (so its pieces stay in the IOTLB until it goes)."""
        sh = self.shadow
        if sh.gone and rng.random() < 0.25:
            g = sh.gone[-1 - rng.randrange(min(8, len(sh.gone)))] if rng.random() < 0.5 \
                else sh.gone[rng.randrange(len(sh.gone))]
            if g.hot and rng.random() < 0.75:
                return rng.choice(g.hot), g
            return g.iova + rng.randrange(g.size // 64) * 64, g
        if not sh.starts:
            return None, None
        recent = [m for m in sh.recent if not m.unmapping and sh.live.get(m.iova) is m]
        if recent and rng.random() < 0.5:
            m = rng.choice(recent)
        else:
            m = sh.live[sh.starts[rng.randrange(len(sh.starts))]]
        if m.touched and rng.random() < 0.5:  # the same 4K piece again: an IOTLB hit
            return (m.touched[-1] & ~(K4 - 1)) + rng.randrange(K4 // 64) * 64, m
        return m.iova + rng.randrange(m.size // 64) * 64, m

    def _judge(self, name: str, iova: int, issue: int, tr: Translation, expect: Any) -> None:
        if isinstance(expect, Mapping):
            m = expect
            if m.unmapping or self.shadow.live.get(m.iova) is not m or m.since > issue:
                return  # an unmap started meanwhile: the legitimate window
            want = m.pa + (iova - m.iova)
            m.touched.append(iova)
            if tr.outcome != OK:
                self.v.add("fault_on_mapped", f"{name}: DMA to mapped {iova:#x} (since cycle "
                           f"{m.since:,}) faulted ({tr.reason}) at cycle {self.env.now:,}")
            elif tr.pa != want:
                self.v.add("wrong_pa", f"{name}: DMA to {iova:#x} went to {tr.pa:#x}, not "
                           f"{want:#x}, at cycle {self.env.now:,}")
        elif tr.outcome == OK:
            quarantined = any(g is expect for g in self.shadow.gone)
            if quarantined and self.shadow.find(iova) is None:  # nobody mapped it again
                self.v.add("stale_after_unmap", f"{name}: DMA to {iova:#x}, unmapped before "
                           f"cycle {issue:,}, translated to {tr.pa:#x}")
