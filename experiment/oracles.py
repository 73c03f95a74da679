"""The oracles, in one place: what they watch during a run and how a run is judged.

During a run (``Oracles.watch``):

- ``visibility``: a completed map must be translatable by the hardware walker at once,
  the driver's syncs included; each failure is an ``invisible_map`` incident;
- ``stale_after_unmap``: the walker reports every stale translation (a DMA translated
  to a page the CPU view no longer maps there) with its issue cycle; those of DMAs
  issued after an unmap of their page had completed are the failures;
- ``dirty log``: device writes that no read_and_clear_dirty scan reported although it
  should have.

After the run, ``judge`` turns the metrics and incidents into ``Failure``s for the
explorer: the four oracles of ``ORACLES`` (``use_after_free`` and ``leak`` read the
walker's and the allocator's own counts), then the scenario's ``expect:``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..hwmodels.dma import FAULT, DmaDevice, DmaRecord
from ..scenarios.conditions import holds
from ..scenarios.schema import Scenario
from ..tables.memory import PAGE_LG2
from ..walker.iommu import Incident, Iommu
from .workload import CpuRunner, DirtyScan

ORACLES = ("visibility", "use_after_free", "stale_after_unmap", "leak")
EXPECT_MODES = ("hold", "symptom", "ignore")
Unmap = tuple[int, int, int, int]  # (start, end, iova, size) of each completed unmap


@dataclass(frozen=True)
class Failure:
    """A failed check: which, a sentence, and the cycle of its first evidence."""

    check: str  # livelock, crash, unfinished, an oracle, or expect:<metric>
    message: str
    cycle: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "message": self.message, "cycle": self.cycle}


@dataclass
class Oracles:
    """What the oracles saw in one run, kept as they go: the run's memory does not grow
    with its length (only with its incidents and the pages it touches)."""

    invisible_maps: int = 0
    late: StaleAfterUnmap = field(default_factory=lambda: StaleAfterUnmap())
    dirty: DirtyLog | None = None  # watching device writes (when some CPU scans)

    def watch(self, iommu: Iommu, domain: int, runners: Sequence[CpuRunner]) -> None:
        """Hook into the walker and every CPU before the run starts."""
        iommu.stale_listeners.append(self.late.stale)
        for runner in runners:
            runner.listeners.append(self._visibility(iommu, domain, runner.spec.name))
            env = runner.core.env
            runner.unmap_listeners.append(
                lambda iova, size, start, env=env: self.late.unmapped(start, env.now, iova, size)
            )
            if runner.scans_dirty:
                if self.dirty is None:
                    self.dirty = DirtyLog()
                runner.scan_listeners.append(self.dirty.scanned)

    def watch_device(self, device: DmaDevice) -> None:
        """A DMA engine started: its writes matter to the dirty log (if anyone scans)."""
        if self.dirty is not None:
            device.listeners.append(self.dirty.written)

    def _visibility(self, iommu: Iommu, domain: int, cpu: str) -> Callable[[int, int, int], None]:
        def check(iova: int, pa: int, size: int) -> None:
            last = iova + size - 1
            if iommu.peek(domain, iova) != pa or iommu.peek(domain, last) != pa + size - 1:
                self.invisible_maps += 1
                iommu.record_incident("invisible_map", cpu, domain, iova, pa)

        return check

    def stale_after_unmap(self) -> list[tuple[int, Incident]]:
        return self.late.result()

    def dirty_log(self) -> dict[str, float]:
        if self.dirty is None:
            return {"dirty.missed_writes": 0, "dirty.reported_pages": 0}
        return self.dirty.result()


def stale_after_unmap(
    stale: list[tuple[int, Incident]], unmaps: list[Unmap]
) -> list[tuple[int, Incident]]:
    """The stale translations of DMAs issued after an unmap of their page had
    completed (its IOTLB sync included), while no other unmap of the page was in
    progress between the DMA's issue and its translation: the DMA used a translation
    that the completed unmap had promised to remove. A stale translation of a DMA in
    flight during an unmap is the legitimate window and does not count. (The
    definition over whole lists; a run keeps ``StaleAfterUnmap``, which gives the
    same answer as the events come.)"""
    late = []
    for issued, inc in stale:
        page = inc.iova

        def covers(iova: int, size: int, page: int = page) -> bool:
            return iova <= page < iova + size

        done = any(end <= issued and covers(iova, size) for _, end, iova, size in unmaps)
        racing = any(
            start <= inc.cycle and end > issued and covers(iova, size)
            for start, end, iova, size in unmaps
        )
        if done and not racing:
            late.append((issued, inc))
    return late


class StaleAfterUnmap:
    """``stale_after_unmap`` as the run goes. Completed unmaps are kept as the earliest
    and latest end per (iova, size) range; a stale translation is judged against them
    when it happens (done: a covering unmap ended by its issue; racing: one ended
    after its issue) and stays open, in order, until a later unmap of its page that
    started by its translation shows it was racing (or, ending in its issue cycle,
    done). Open ones that are done at the end are the late ones."""

    def __init__(self) -> None:
        self.ranges: dict[tuple[int, int], list[int]] = {}  # (iova, size) -> [min, max end]
        self.open: list[list[Any]] = []  # [issued, incident, done]

    def unmapped(self, start: int, end: int, iova: int, size: int) -> None:
        ends = self.ranges.get((iova, size))
        if ends is None:
            self.ranges[(iova, size)] = [end, end]
        else:
            ends[0], ends[1] = min(ends[0], end), max(ends[1], end)
        if self.open:
            still = []
            for entry in self.open:
                issued, inc, _ = entry
                if iova <= inc.iova < iova + size:
                    if start <= inc.cycle and end > issued:
                        continue  # racing: legitimate
                    if end <= issued:
                        entry[2] = True
                still.append(entry)
            self.open = still

    def stale(self, issued: int, inc: Incident) -> None:
        done = racing = False
        for (iova, size), (first, last) in self.ranges.items():
            if iova <= inc.iova < iova + size:
                done |= first <= issued
                racing |= last > issued  # ended after the issue, started before now
        if not racing:
            self.open.append([issued, inc, done])

    def result(self) -> list[tuple[int, Incident]]:
        return [(issued, inc) for issued, inc, done in self.open if done]


class DirtyLog:
    """The dirty-log oracle of a live-migration style scan.

    After each scan the pages it reported are copied, so a device write is captured
    by a scan that reports its page and ends after the write was issued. A write
    that no such scan captured, although a scan covering its page started after the
    write completed, is missed: that scan should have reported it. Writes after the
    last scan are neither.

    Kept as the run goes (writes and scans arrive as they complete): per 4K page the
    latest end of a scan that reported it (a write arriving later is captured if it
    was issued before), and the writes not captured yet -- those a covering scan that
    started after them has flagged (a count) and the others (their end and issue
    cycles, until a scan covers the page). Reported runs are whole leaves, so a page
    is reported or not as a whole.
    """

    def __init__(self) -> None:
        self.reported_bytes = 0
        self.last_report: dict[int, int] = {}  # page -> latest end of a scan reporting it
        self.flagged: dict[int, int] = {}  # page -> writes a scan should have reported
        self.waiting: dict[int, list[tuple[int, int]]] = {}  # page -> [(end, issue)]

    def written(self, w: DmaRecord) -> None:
        if not w.is_write or w.translation.outcome == FAULT:
            return
        page = w.iova >> PAGE_LG2
        if self.last_report.get(page, -1) > w.issue:
            return  # captured by a scan that ended after it was issued
        self.waiting.setdefault(page, []).append((w.end, w.issue))

    def scanned(self, scan: DirtyScan) -> None:
        """A successful read_and_clear_dirty completed."""
        reported: set[int] = set()
        for iova, n in scan.runs:
            self.reported_bytes += n
            for page in range(iova >> PAGE_LG2, (iova + n - 1 >> PAGE_LG2) + 1):
                reported.add(page)
                self.last_report[page] = max(self.last_report.get(page, -1), scan.end)
        first, last = scan.iova >> PAGE_LG2, scan.iova + scan.size - 1 >> PAGE_LG2
        for page in [p for p in self.waiting if first <= p <= last or p in reported]:
            waiting = self.waiting[page]
            if page in reported:  # captured (unless issued in this very cycle)
                self.flagged.pop(page, None)
                waiting[:] = [w for w in waiting if w[1] >= scan.end]
            else:
                flag = sum(1 for end, _ in waiting if end < scan.start)
                if flag:
                    self.flagged[page] = self.flagged.get(page, 0) + flag
                    waiting[:] = [w for w in waiting if w[0] >= scan.start]
            if not waiting:
                del self.waiting[page]
        for page in reported - set(self.waiting):
            self.flagged.pop(page, None)

    def result(self) -> dict[str, float]:
        return {"dirty.missed_writes": sum(self.flagged.values()),
                "dirty.reported_pages": self.reported_bytes >> PAGE_LG2}


def dirty_log(devices: list[DmaDevice], scans: list[DirtyScan]) -> dict[str, float]:
    """The dirty-log oracle over whole lists (devices with records): see ``DirtyLog``,
    which a run keeps as it goes and which gives the same answer."""
    missed = 0
    for dev in devices:
        for w in dev.records or ():
            if not w.is_write or w.translation.outcome == FAULT:
                continue
            captured = any(
                s.end > w.issue and any(a <= w.iova < a + n for a, n in s.runs) for s in scans
            )
            if not captured and any(
                s.start > w.end and s.iova <= w.iova < s.iova + s.size for s in scans
            ):
                missed += 1
    reported = sum(n for s in scans for _, n in s.runs)
    return {"dirty.missed_writes": missed, "dirty.reported_pages": reported >> PAGE_LG2}


# --- judging a run -----------------------------------------------------------------------
def _incident(incidents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = next((i for i in incidents if i["kind"] == kind), None)
    assert found is not None, f"a {kind} metric without its incident"
    return found


def _visibility(m: dict[str, float], incidents: list[dict[str, Any]], _late: Any) -> Failure:
    inc = _incident(incidents, "invisible_map")
    return Failure(
        "visibility",
        f"{inc['device']}'s map of {inc['iova']:#x} -> {inc['pa']:#x} returned at cycle "
        f"{inc['cycle']:,} while the IOMMU could not translate it "
        f"({m['cpu.map.invisible']:.0f} such map(s))",
        inc["cycle"],
    )


def _use_after_free(m: dict[str, float], incidents: list[dict[str, Any]], _late: Any) -> Failure:
    inc = _incident(incidents, "use_after_free")
    return Failure(
        "use_after_free",
        f"the walker read freed table memory {inc['pa']:#x} for {inc['device']}'s DMA to "
        f"{inc['iova']:#x} at cycle {inc['cycle']:,} ({m['uaf.events']:.0f} read(s))",
        inc["cycle"],
    )


def _stale_after_unmap(_m: Any, _incidents: Any, late: list[tuple[int, Incident]]) -> Failure:
    issued, inc = late[0]
    return Failure(
        "stale_after_unmap",
        f"{inc.device}'s DMA to {inc.iova:#x}, issued at cycle {issued:,} after the unmap "
        f"of its page had completed, was translated to {inc.pa:#x} (cycle {inc.cycle:,}; "
        f"{len(late)} such DMA(s))",
        inc.cycle,
    )


def _leak(m: dict[str, float], _incidents: Any, _late: Any) -> Failure:
    return Failure(
        "leak",
        f"{m['table.leaked_pages']:.0f} table page(s) still allocated after deinit",
        int(m["sim.cycles"]),
    )


# oracle -> (the metric that counts its evidence, the failure it reports), in ORACLES order
_JUDGES: dict[str, tuple[str, Callable[..., Failure]]] = {
    "visibility": ("cpu.map.invisible", _visibility),
    "use_after_free": ("uaf.events", _use_after_free),
    "stale_after_unmap": ("dma.stale_after_unmap", _stale_after_unmap),
    "leak": ("table.leaked_pages", _leak),
}


def judge(
    metrics: dict[str, float],
    faults: list[dict[str, Any]],
    incidents: list[dict[str, Any]],
    late: list[tuple[int, Incident]],
    *,
    oracles: Sequence[str],
    scenario: Scenario,
    expect_mode: str,
) -> list[Failure]:
    """The failures of one run: the enabled oracles, then ``expect:`` read by mode
    (``hold``: a violated expectation fails; ``symptom``: a shown one; ``ignore``)."""
    out = [
        report(metrics, incidents, late)
        for name, (metric, report) in _JUDGES.items()
        if name in oracles and metrics[metric]
    ]
    if expect_mode != "ignore":
        out += _expectations(metrics, faults, incidents, scenario, expect_mode)
    return out


def _expectations(
    m: dict[str, float],
    faults: list[dict[str, Any]],
    incidents: list[dict[str, Any]],
    scenario: Scenario,
    expect_mode: str,
) -> list[Failure]:
    out = []
    for name, e in scenario.expect.items():
        ok = holds(e.condition, m[name])
        if expect_mode == "symptom" and ok:
            what = f"the symptom {name} {e.condition} shows ({name} = {m[name]:g})"
        elif expect_mode == "hold" and not ok:
            what = f"expect {name} {e.condition} fails ({name} = {m[name]:g})"
        else:
            continue
        cycle = None
        if faults:
            f = faults[0]
            what += (f"; first fault: {f['device']} {f['access']} {f['iova']:#x} "
                     f"{f['reason']} at cycle {f['cycle']:,}")
            cycle = f["cycle"]
        elif incidents:
            i = incidents[0]
            what += (f"; first incident: {i['kind']} by {i['device']} at {i['iova']:#x}, "
                     f"cycle {i['cycle']:,}")
            cycle = i["cycle"]
        out.append(Failure(f"expect:{name}", what, cycle))
    return out
