"""The story of a trace: the events that explain its first fault (or, without one, its
first lost cmpxchg race), numbered for the timeline's call-outs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]
MAX_STORY = 9
CPU_RE = re.compile(r"^cpu(\d+)$")


class Trace(list[Record]):
    """Trace records in order, with what the story asks of them again and again
    (a record's position, the IOMMU's finished commands) computed once per trace."""

    def __init__(self, records: Iterable[Record]) -> None:
        super().__init__(records)
        self._positions = {id(r): i for i, r in enumerate(self)}
        self._done: list[Record] | None = None

    @classmethod
    def of(cls, records: Sequence[Record]) -> Trace:
        return records if isinstance(records, Trace) else cls(records)

    def pos(self, rec: Record) -> int:
        """The position of ``rec`` (the object itself, not an equal record)."""
        return self._positions[id(rec)]

    def commands_done(self) -> list[Record]:
        """The invalidation queue's ``done`` records."""
        if self._done is None:
            self._done = [r for r in self if r["component"] == "iommu.invalidation"
                          and r["event"] == "done"]
        return self._done


@dataclass
class StoryEvent:
    cycle: int
    lane: str
    text: str
    marker: bool = True  # False: outside the window, told in the caption only


@dataclass
class Story:
    window: tuple[int, int]
    events: list[StoryEvent] = field(default_factory=list)
    headline: str = ""
    summary: str = ""  # one sentence: why it went wrong


def _hex(value: Any) -> str:
    return f"{value:#x}" if isinstance(value, int) else str(value)


def is_cpu(rec: Record) -> bool:
    return bool(CPU_RE.match(str(rec["component"])))


def _writes(rec: Record, pa: int) -> bool:
    """A CPU store, or a cmpxchg that succeeded, at ``pa``."""
    if not is_cpu(rec) or rec.get("pa") != pa:
        return False
    if rec["event"] == "store":
        return True
    return rec["event"] == "cmpxchg" and rec.get("result") == rec.get("expected")


def _flushes(rec: Record, pa: int) -> bool:
    if not is_cpu(rec) or rec["event"] != "flush":
        return False
    start, n = rec.get("pa"), rec.get("nbytes") or 1
    return isinstance(start, int) and start <= pa < start + n


def _lost(rec: Record) -> bool:
    return is_cpu(rec) and rec["event"] == "cmpxchg" and rec.get("result") != rec.get(
        "expected")


def _op_start(records: Trace, rec: Record) -> int:
    """The cycle at which the operation containing ``rec`` started (its own cycle if none)."""
    i = records.pos(rec)
    for r in reversed(records[max(0, i - 5000):i]):
        if r["component"] == rec["component"]:
            if r["event"] == "op_start":
                return int(r["cycle"])
            if r["event"] == "op_end":
                break
    return int(rec["cycle"])


def _write_text(rec: Record, flushed_before: bool) -> str:
    cpu, pa = rec["component"], rec["pa"]
    value = rec.get("new", rec.get("value"))
    what = "cmpxchg" if rec["event"] == "cmpxchg" else "store"
    text = f"{cpu} {what} at {_hex(pa)} writes {_hex(value)}"
    if rec["event"] == "cmpxchg" and rec.get("expected") == 0:
        text += " (installs a new table)"
    if not flushed_before:
        text += f", into {cpu}'s cache only: DRAM keeps the old value"
    return text


def _change(rec: Record) -> str:
    """'0x5003 → 0x5403 (sets bit 0x400)' for a cmpxchg, 'writes 0x…' for a store."""
    old, new = rec.get("expected"), rec.get("new", rec.get("value"))
    if rec["event"] != "cmpxchg" or not isinstance(old, int) or not isinstance(new, int):
        return f"writes {_hex(new)}"
    text = f"{_hex(old)} → {_hex(new)}"
    added, removed = new & ~old, old & ~new
    if added and not removed and added & (added - 1) == 0:
        text += f" (sets bit {_hex(added)})"
    elif removed and not added and removed & (removed - 1) == 0:
        text += f" (clears bit {_hex(removed)})"
    return text


def fault_story(records: Trace, fault: Record) -> Story:
    """The events that led to ``fault`` (an iommu.walker fault record)."""
    dev, f_cycle = fault.get("device"), int(fault["cycle"])
    events: list[tuple[Record, str, str]] = []  # (record, lane, text)
    complete = next((r for r in records if r["component"] == dev and r["event"] == "complete"
                     and r.get("outcome") == "fault" and r["cycle"] >= f_cycle), None)
    requests = [r for r in records if r["component"] == dev and r["event"] == "request"
                and r["cycle"] <= f_cycle
                and (complete is None or r.get("index") == complete.get("index"))]
    request = requests[-1] if requests else None
    r_cycle = int(request["cycle"]) if request else f_cycle
    reads = [r for r in records if r["component"] == "iommu.port" and r["event"] == "read"
             and r_cycle <= r["cycle"] <= f_cycle]
    bad = next((r for r in reversed(reads) if r.get("stale") or r.get("freed")), None)
    starts = [r_cycle]
    ends = [int(complete["cycle"]) if complete else f_cycle]
    why = ""
    if bad is not None:
        why = _bad_read(records, bad, r_cycle, f_cycle, (starts, ends), events)
    if request is not None:
        _dma_start(records, request, dev, events)
    level = fault.get("level")
    events.append((fault, "walker", f"FAULT: {dev} {fault.get('access')} at iova "
                   f"{_hex(fault.get('iova'))}: {fault.get('reason')}"
                   + (f" at level {level}" if level is not None else "")))
    story = _finish(records, events, min(starts), max(ends))
    story.headline = (f"first fault at cycle {f_cycle:,}: {dev} {fault.get('access')} "
                      f"{_hex(fault.get('iova'))} ({fault.get('reason')})")
    if why:
        story.summary = why
    return story


def race_story(records: Trace, lost: Record) -> Story:
    """A lost cmpxchg: who won, what was flushed, and the DMA that followed the map."""
    pa, cpu = lost["pa"], lost["component"]
    i = records.pos(lost)
    before = [r for r in reversed(records[:i]) if _writes(r, pa)]
    # the winner installed the entry (a cmpxchg from empty); later cmpxchgs only mark it
    writer = next((r for r in before if r["event"] == "store" or r.get("expected") == 0),
                  before[0] if before else None)
    events: list[tuple[Record, str, str]] = []
    starts = [_op_start(records, lost)]
    ends = [int(lost["cycle"])]
    if writer is not None:
        j = records.pos(writer)
        events.append((writer, writer["component"], _write_text(writer, True).replace(
            " writes ", " wins: writes ")))
        starts.append(_op_start(records, writer))
        between = records[j + 1:i]
        for r in [r for r in between if _flushes(r, pa)][:2]:
            events.append((r, r["component"], f"{r['component']} flushes {_hex(pa)} "
                           f"({r.get('cause', 'flush')}) to DRAM"))
        for r in [r for r in between if _writes(r, pa)][:2]:
            events.append((r, r["component"], f"{r['component']} {r['event']} at {_hex(pa)}: "
                           f"{_change(r)}"))
    events.append((lost, cpu, f"{cpu} cmpxchg at {_hex(pa)} fails: the slot already holds "
                   f"{_hex(lost.get('result'))}, {cpu} continues under that entry"))
    end = next((r for r in records[i:] if r["component"] == cpu and r["event"] == "op_end"),
               None)
    later = records[i:]
    for r in [r for r in later if _flushes(r, pa)
              and (end is None or r["cycle"] <= end["cycle"])][:1]:
        events.append((r, r["component"], f"{r['component']} flushes {_hex(pa)} "
                       f"({r.get('cause', 'flush')}) to DRAM"))
    if end is not None:
        events.append((end, cpu, f"{cpu}'s {end.get('op', 'op')} returns {end.get('result')}"))
        ends.append(int(end["cycle"]))
        _dma_after(records, later, end, pa, events, ends)
    story = _finish(records, events, min(starts), max(ends))
    winner = writer["component"] if writer is not None else "another CPU"
    story.headline = (f"no fault; first lost cmpxchg race at cycle {lost['cycle']:,}: "
                      f"{winner} and {cpu} both install at {_hex(pa)}")
    return story


def _bad_read(records: Trace, bad: Record, r_cycle: int, f_cycle: int,
              spans: tuple[list[int], list[int]], events: list[tuple[Record, str, str]]) -> str:
    """The walker's stale or freed read before a fault: who wrote the entry, who lost
    the race to it, when it was flushed. Returns the one-sentence why ('' if unclear)."""
    starts, ends = spans
    why = ""
    pa = bad["pa"]
    before = [r for r in records if r["cycle"] <= bad["cycle"]]
    writer = next((r for r in reversed(before) if _writes(r, pa)), None)
    flush = None
    if writer is not None:
        after = records[records.pos(writer) + 1:]
        flush = next((r for r in after if _flushes(r, pa)), None)
        flushed_before = flush is not None and flush["cycle"] < bad["cycle"]
        events.append((writer, writer["component"], _write_text(writer, flushed_before)))
        starts.append(_op_start(records, writer))
        lost = [r for r in after if r["cycle"] <= r_cycle and _lost(r) and r.get("pa") == pa
                and r["component"] != writer["component"]]
        if lost and not flushed_before and bad.get("stale"):
            w, lz = writer["component"], lost[-1]["component"]
            until = flush["cycle"] if flush is not None else f_cycle
            irq = sum(int(r.get("duration") or 0) for r in after
                      if r["component"] == w and r["event"] == "interrupt"
                      and r["cycle"] < until)
            held = f"; an interrupt held {w} for {irq:,} cycles" if irq else ""
            why = (f"In short: {lz}'s map returned while the table entry it depends on was "
                   f"still only in {w}'s cache ({w} had not flushed it yet{held}); the "
                   "IOMMU walker does not snoop CPU caches, so it read the old value from "
                   "DRAM and the DMA faulted.")
        if lost:
            loser = lost[-1]
            events.append((loser, loser["component"],
                           f"{loser['component']} cmpxchg at {_hex(pa)} fails: "
                           f"{writer['component']} got there first, so "
                           f"{loser['component']} continues under {writer['component']}'s "
                           "entry"))
            starts.append(_op_start(records, loser))
    state = "a freed table page" if bad.get("freed") else "stale: the CPU view differs"
    events.append((bad, "walker", f"the IOMMU walker reads {_hex(pa)} from DRAM and "
                   f"gets {_hex(bad.get('value'))} ({state})"))
    if flush is not None and flush["cycle"] > bad["cycle"]:
        gap = int(flush["cycle"]) - f_cycle
        when = f"{gap:,} cycles after the fault" if gap >= 0 else "before the fault"
        events.append((flush, flush["component"],
                        f"{flush['component']} flushes {_hex(pa)} "
                        f"({flush.get('cause', 'flush')}): only now does DRAM hold it, "
                        f"{when}"))
        span = max(ends[0] - min(starts), 1)
        if flush["cycle"] - ends[0] <= 3 * span:
            ends.append(int(flush["cycle"]) + int(flush.get("cost") or 0))
    return why


def _dma_start(records: Trace, request: Record, dev: Any,
               events: list[tuple[Record, str, str]]) -> None:
    """The map that returned just before the faulting DMA, and the DMA's start."""
    r_cycle = int(request["cycle"])
    returned = [r for r in records if is_cpu(r) and r["event"] == "op_end"
                and r_cycle - 50 <= r["cycle"] <= r_cycle]
    if returned:
        op = returned[-1]
        events.append((op, op["component"], f"{op['component']}'s {op.get('op', 'op')} "
                       f"returns {op.get('result')} (success)" if op.get("result") == 0
                       else f"{op['component']}'s {op.get('op')} returns {op.get('result')}"))
    access = "write" if request.get("is_write") else "read"
    events.append((request, str(dev), f"{dev} starts a {request.get('size')}-byte {access} "
                   f"DMA to iova {_hex(request.get('iova'))}"))


def _dma_after(records: Trace, later: list[Record], end: Record, pa: int,
               events: list[tuple[Record, str, str]], ends: list[int]) -> None:
    """The DMA a device started as the map returned, and what the walker read for it."""
    request = next((r for r in later if r["event"] == "request"
                    and end["cycle"] <= r["cycle"] <= end["cycle"] + 50), None)
    if request is not None:
        dev = request["component"]
        access = "write" if request.get("is_write") else "read"
        events.append((request, dev, f"{dev} starts a {request.get('size')}-byte {access} "
                       f"DMA to iova {_hex(request.get('iova'))}"))
        k = records.pos(request)
        done = next((r for r in records[k:] if r["component"] == dev
                     and r["event"] == "complete" and r.get("index") == request.get("index")),
                    None)
        if done is not None:
            stop = done["cycle"]
            for r in records[k:]:
                if r["cycle"] > stop:
                    break
                if r["component"] == "iommu.port" and r["event"] == "read" and r.get(
                        "pa") == pa:
                    note = (" (differs from the CPU view)" if r.get("stale") else "")
                    events.append((r, "walker", f"the IOMMU walker reads {_hex(pa)}: "
                                   f"{_hex(r.get('value'))}{note}"))
            outcome = done.get("outcome")
            how = (f"translated ({done.get('path')})" if outcome == "ok"
                   else f"{outcome}: {done.get('reason')}")
            events.append((done, dev, f"{dev}'s DMA completes after "
                           f"{done.get('latency')} cycles: {how}"))
            ends.append(int(stop))


def _finish(records: Trace, events: list[tuple[Record, str, str]], start: int,
            end: int) -> Story:
    seen = set()
    uniq = []
    for rec, lane, text in sorted(events, key=lambda e: (e[0]["cycle"], records.pos(e[0]))):
        if id(rec) not in seen:
            seen.add(id(rec))
            uniq.append(StoryEvent(int(rec["cycle"]), lane, text))
    return Story(_padded(start, end), uniq[:MAX_STORY])


def _padded(start: int, end: int) -> tuple[int, int]:
    span = max(end - start, 200)
    pad = max(int(span * 0.04), 50)
    return max(0, start - pad), end + pad


def find_story(records: Trace, window: tuple[int | None, int | None] | None = None
               ) -> Story:
    """The window to show and the events to number. With an explicit ``window`` the
    story is about the first fault (else race) inside it."""
    records = Trace.of(records)
    lo = hi = None
    if window is not None:
        lo, hi = window
    inside = [r for r in records if (lo is None or r["cycle"] >= lo)
              and (hi is None or r["cycle"] <= hi)]
    fault = next((r for r in inside if r["component"] == "iommu.walker"
                  and r["event"] == "fault"), None)
    lost = next((r for r in inside if _lost(r)), None)
    if fault is not None:
        story = fault_story(records, fault)
    elif lost is not None:
        story = race_story(records, lost)
    else:
        first = next((r["cycle"] for r in records if r["event"] == "op_start"),
                     records[0]["cycle"])
        last = records[-1]["cycle"]
        story = Story(_padded(first, min(last, first + 20_000)))
        story.headline = "no fault and no cmpxchg race in the trace"
    if window is not None:
        w_lo = lo if lo is not None else min(r["cycle"] for r in records)
        w_hi = hi if hi is not None else max(r["cycle"] for r in records)
        story.window = (w_lo, w_hi)
    for ev in story.events:
        ev.marker = story.window[0] <= ev.cycle <= story.window[1]
    return story
