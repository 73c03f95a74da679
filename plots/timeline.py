"""Timeline / race diagram from a trace: one lane per CPU, per device and for the IOMMU
walker, over a window of cycles.

CPU lanes show each operation (a light band) and the transactions inside it (load,
store, cmpxchg, flush, fence, table allocation, IOMMU commands and the wait for them)
and interrupts; device lanes show each DMA from request to completion; the walker
lane shows every table read (stale ones marked) and the faults. Numbered call-outs
tell the story of the first fault: who wrote the table entry the walker read, who
used it, when the device's DMA started, what the walker found in DRAM, and when the
entry was finally flushed. Without a fault the story is the first lost cmpxchg race.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..errors import InputError, Problem
from .style import (
    BLACK,
    BLUE,
    GREEN,
    GREY,
    LIGHT_GREY,
    ORANGE,
    PURPLE,
    SKY_BLUE,
    VERMILLION,
    YELLOW,
    cycles_axis_ns,
    describe,
    new_figure,
    set_title,
    styled,
    thousands,
)

Record = dict[str, Any]

# Transaction kind -> (colour, legend label, hatch); kinds sharing a label share an entry.
COMMANDS = ("flush_write_buffer", "wait_invalidation", "invalidate_range", "invalidate_all",
            "change_top")
TX_STYLE: dict[str, tuple[str, str, str]] = {
    "load": (SKY_BLUE, "load", ""),
    "store": (BLUE, "store", ""),
    "cmpxchg": (PURPLE, "cmpxchg", ""),
    "flush": (GREEN, "cache-line flush", ""),
    "fence": (BLACK, "fence", ""),
    "alloc_table": (YELLOW, "alloc / free table page", ""),
    "free_table": (YELLOW, "alloc / free table page", ""),
    "lock": (ORANGE, "lock / unlock", ""),
    "unlock": (ORANGE, "lock / unlock", ""),
    "work": ("#BBBBBB", "other work", ""),
    **{c: (GREY, "IOMMU command", "") for c in COMMANDS},
}
WAIT_STYLE = ("white", "waiting for the IOMMU", "////")
IRQ_STYLE = ("white", "interrupt", "xx")
OP_LABEL = "inside a CPU operation (map, unmap, …)"
DMA_OK = "DMA (request → done)"
DMA_FAULT = "DMA that faulted"
INCIDENT_STYLE = {
    "invisible_map": ("D", ORANGE, "map returned, walker cannot translate it"),
    "stale_translation": ("v", PURPLE, "stale translation used"),
    "use_after_free": ("s", PURPLE, "walker read a freed table page"),
}
MAX_STORY = 9
CPU_RE = re.compile(r"^cpu(\d+)$")


def _bad_window(message: str) -> InputError:
    return InputError([Problem("--window", None, "", message)])


def parse_window(text: str) -> tuple[int | None, int | None]:
    """"START:END" in cycles; either side may be empty; underscores and commas allowed."""
    start, sep, end = text.partition(":")
    if not sep:
        raise _bad_window(f"{text!r} is not a window; write START:END in cycles, "
                          "e.g. 770000:785000")
    try:
        lo = int(start.replace("_", "").replace(",", "")) if start.strip() else None
        hi = int(end.replace("_", "").replace(",", "")) if end.strip() else None
    except ValueError:
        raise _bad_window(f"{text!r} is not a window; START and END must be whole cycles, "
                          "e.g. 770000:785000") from None
    if lo is not None and hi is not None and hi <= lo:
        raise _bad_window(f"{text!r}: END must be after START")
    if (lo is not None and lo < 0) or (hi is not None and hi < 0):
        raise _bad_window(f"{text!r}: cycles cannot be negative")
    return lo, hi


# --- the story --------------------------------------------------------------------------
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


def _is_cpu(rec: Record) -> bool:
    return bool(CPU_RE.match(str(rec["component"])))


def _writes(rec: Record, pa: int) -> bool:
    """A CPU store, or a cmpxchg that succeeded, at ``pa``."""
    if not _is_cpu(rec) or rec.get("pa") != pa:
        return False
    if rec["event"] == "store":
        return True
    return rec["event"] == "cmpxchg" and rec.get("result") == rec.get("expected")


def _flushes(rec: Record, pa: int) -> bool:
    if not _is_cpu(rec) or rec["event"] != "flush":
        return False
    start, n = rec.get("pa"), rec.get("nbytes") or 1
    return isinstance(start, int) and start <= pa < start + n


def _lost(rec: Record) -> bool:
    return _is_cpu(rec) and rec["event"] == "cmpxchg" and rec.get("result") != rec.get(
        "expected")


def _pos(records: Sequence[Record], rec: Record) -> int:
    """The position of ``rec`` (the object itself, not an equal record) in ``records``."""
    i = _positions.get(id(rec))
    if i is None or i >= len(records) or records[i] is not rec:
        _positions.clear()
        _positions.update({id(r): i for i, r in enumerate(records)})
        i = _positions[id(rec)]
    return i


_positions: dict[int, int] = {}  # id(record) -> position, checked on use


def _op_start(records: Sequence[Record], rec: Record) -> int:
    """The cycle at which the operation containing ``rec`` started (its own cycle if none)."""
    i = _pos(records, rec)
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


def fault_story(records: Sequence[Record], fault: Record) -> Story:
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
        pa = bad["pa"]
        before = [r for r in records if r["cycle"] <= bad["cycle"]]
        writer = next((r for r in reversed(before) if _writes(r, pa)), None)
        flush = None
        if writer is not None:
            after = records[_pos(records, writer) + 1:]
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
    if request is not None:
        returned = [r for r in records if _is_cpu(r) and r["event"] == "op_end"
                    and r_cycle - 50 <= r["cycle"] <= r_cycle]
        if returned:
            op = returned[-1]
            events.append((op, op["component"], f"{op['component']}'s {op.get('op', 'op')} "
                           f"returns {op.get('result')} (success)" if op.get("result") == 0
                           else f"{op['component']}'s {op.get('op')} returns {op.get('result')}"))
        access = "write" if request.get("is_write") else "read"
        events.append((request, str(dev), f"{dev} starts a {request.get('size')}-byte {access} "
                       f"DMA to iova {_hex(request.get('iova'))}"))
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


def race_story(records: Sequence[Record], lost: Record) -> Story:
    """A lost cmpxchg: who won, what was flushed, and the DMA that followed the map."""
    pa, cpu = lost["pa"], lost["component"]
    i = _pos(records, lost)
    before = [r for r in reversed(records[:i]) if _writes(r, pa)]
    # the winner installed the entry (a cmpxchg from empty); later cmpxchgs only mark it
    writer = next((r for r in before if r["event"] == "store" or r.get("expected") == 0),
                  before[0] if before else None)
    events: list[tuple[Record, str, str]] = []
    starts = [_op_start(records, lost)]
    ends = [int(lost["cycle"])]
    if writer is not None:
        j = _pos(records, writer)
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
        request = next((r for r in later if r["event"] == "request"
                        and end["cycle"] <= r["cycle"] <= end["cycle"] + 50), None)
        if request is not None:
            dev = request["component"]
            access = "write" if request.get("is_write") else "read"
            events.append((request, dev, f"{dev} starts a {request.get('size')}-byte {access} "
                           f"DMA to iova {_hex(request.get('iova'))}"))
            k = _pos(records, request)
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
    story = _finish(records, events, min(starts), max(ends))
    winner = writer["component"] if writer is not None else "another CPU"
    story.headline = (f"no fault; first lost cmpxchg race at cycle {lost['cycle']:,}: "
                      f"{winner} and {cpu} both install at {_hex(pa)}")
    return story


def _finish(records: Sequence[Record], events: list[tuple[Record, str, str]], start: int,
            end: int) -> Story:
    seen = set()
    uniq = []
    for rec, lane, text in sorted(events, key=lambda e: (e[0]["cycle"], _pos(records, e[0]))):
        if id(rec) not in seen:
            seen.add(id(rec))
            uniq.append(StoryEvent(int(rec["cycle"]), lane, text))
    return Story(_padded(start, end), uniq[:MAX_STORY])


def _padded(start: int, end: int) -> tuple[int, int]:
    span = max(end - start, 200)
    pad = max(int(span * 0.04), 50)
    return max(0, start - pad), end + pad


def find_story(records: Sequence[Record], window: tuple[int | None, int | None] | None = None
               ) -> Story:
    """The window to show and the events to number. With an explicit ``window`` the
    story is about the first fault (else race) inside it."""
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


# --- drawing ----------------------------------------------------------------------------
def lanes_of(records: Sequence[Record]) -> list[tuple[str, str]]:
    """[(lane name, kind)] in drawing order: CPUs, devices, the walker."""
    cpus = sorted({r["component"] for r in records if _is_cpu(r)},
                  key=lambda c: int(CPU_RE.match(c)[1]))  # type: ignore[index]
    devices = sorted({r["component"] for r in records if r["event"] in ("request", "complete")
                      and not _is_cpu(r)})
    return [(c, "cpu") for c in cpus] + [(d, "device") for d in devices] + [("walker", "walker")]


@styled
def timeline_figure(trace: Sequence[Record], results: dict[str, Any] | None = None,
                    window: tuple[int | None, int | None] | str | None = None,
                    seed: int | None = None) -> Figure:
    """The race diagram of a trace (a list of records from ``load_trace``).

    ``window``: (start, end) cycles or "START:END"; by default a window around the first
    fault (or first lost cmpxchg). ``results`` (optional) supplies the title and clock."""
    if isinstance(window, str):
        window = parse_window(window)
    records = list(trace)
    if not records:
        raise InputError([Problem("trace", None, "", "the trace is empty")])
    story = find_story(records, window)
    lo, hi = story.window
    shown = [r for r in records if _in_window(r, lo, hi)]
    if not shown:
        raise _bad_window(f"no trace events between cycles {lo:,} and {hi:,} (the trace spans "
                          f"{records[0]['cycle']:,}–{records[-1]['cycle']:,})")
    lanes = lanes_of(records)
    y_of = {name: i for i, (name, _) in enumerate(lanes)}
    numbered = [e for e in story.events if e.marker]
    caption = [e for e in story.events]
    wrapped = [textwrap.wrap(_caption_line(i, e), 150) for i, e in enumerate(caption, 1)]
    summary = textwrap.wrap(story.summary, 160) if story.summary else []
    n_caption_lines = sum(len(w) for w in wrapped) + (1 if story.headline else 0) + len(summary)
    lane_h = 0.62 * len(lanes) + 1.5
    legend_h = 0.75
    caption_h = 0.2 * n_caption_lines + 0.25
    fig = new_figure(14, lane_h + legend_h + caption_h + 1.0)
    grid = fig.add_gridspec(3, 1, height_ratios=[lane_h, legend_h, caption_h])
    ax = fig.add_subplot(grid[0])
    ax_legend = fig.add_subplot(grid[1])
    ax_caption = fig.add_subplot(grid[2])
    for a in (ax_legend, ax_caption):
        a.axis("off")

    used: dict[str, Any] = {}
    _draw_cpus(ax, records, lanes, y_of, lo, hi, used)
    _draw_devices(ax, records, lanes, y_of, lo, hi, used)
    _draw_walker(ax, records, y_of, lo, hi, used)
    for r in shown:
        if r["component"] == "iommu.walker" and r["event"] == "fault":
            ax.axvline(r["cycle"], color=VERMILLION, linestyle="--", linewidth=1.1, alpha=0.8,
                       zorder=1)
    _callouts(ax, numbered, story.events, y_of, lo, hi)

    ax.set_xlim(lo, hi)
    ax.set_ylim(len(lanes) - 0.2, -0.8)
    ax.set_yticks(range(len(lanes)), [_lane_label(n, k) for n, k in lanes])
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(thousands)
    ax.set_xlabel("cycle")
    clock = (results or {}).get("hardware", {}).get("clock_ghz")
    cycles_axis_ns(ax, clock)
    for i in range(1, len(lanes)):
        ax.axhline(i - 0.5, color="#CCCCCC", linewidth=0.6, zorder=0)

    handles = [h for h in used.values()]
    ax_legend.legend(handles=handles, loc="center", ncols=min(5, len(handles)), frameon=False,
                     fontsize=8.5, handlelength=1.8, columnspacing=1.4)
    y = 1.0
    step = 1.0 / max(n_caption_lines, 1)
    if story.headline:
        ax_caption.text(0.0, y, story.headline[0].upper() + story.headline[1:] + ":",
                        transform=ax_caption.transAxes, va="top", fontsize=9.5,
                        fontweight="bold")
        y -= step
    for i, lines in enumerate(wrapped):
        for k, line in enumerate(lines):
            ax_caption.text(0.0 if k == 0 else 0.035, y, line, transform=ax_caption.transAxes,
                            va="top", fontsize=9.5,
                            color=VERMILLION if caption[i].text.startswith("FAULT") else BLACK)
            y -= step
    for line in summary:
        ax_caption.text(0.0, y, line, transform=ax_caption.transAxes, va="top", fontsize=9.5,
                        fontstyle="italic")
        y -= step

    what = f"Race timeline, cycles {lo:,}–{hi:,}"
    if results is not None:
        seeds = [seed] if seed is not None else None
        detail = describe(results, seeds)
    else:
        detail = f"trace{'' if seed is None else f' of seed {seed}'}"
    set_title(fig, what, detail, width=150)
    return fig


def _caption_line(i: int, e: StoryEvent) -> str:
    where = "" if e.marker else " (outside the window)"
    return f"({i})  cycle {e.cycle:,}{where}: {e.text}"


def _lane_label(name: str, kind: str) -> str:
    if kind == "device":
        return f"{name} (DMA)"
    if kind == "walker":
        return "IOMMU walker"
    return name


def _in_window(rec: Record, lo: int, hi: int) -> bool:
    end = rec["cycle"] + int(rec.get("cost") or rec.get("duration") or 0)
    return end >= lo and rec["cycle"] <= hi


def _bars(ax: Axes, spans: list[tuple[float, float]], y: float, height: float, color: str,
          hatch: str = "", edge: str = BLACK, lw: float = 0.5, z: float = 3) -> None:
    if spans:
        ax.broken_barh(spans, (y - height / 2, height), facecolors=color, edgecolors=edge,
                       linewidths=lw, hatch=hatch or None, zorder=z)


def _draw_cpus(ax: Axes, records: Sequence[Record], lanes: list[tuple[str, str]],
               y_of: dict[str, int], lo: int, hi: int, used: dict[str, Any]) -> None:
    min_w = (hi - lo) * 0.0025
    for name, kind in lanes:
        if kind != "cpu":
            continue
        y = y_of[name]
        mine = [r for r in records if r["component"] == name]
        start = None
        ops: list[tuple[float, float, str]] = []
        for r in mine:
            if r["event"] == "op_start":
                start = r
            elif r["event"] == "op_end" and start is not None:
                ops.append((start["cycle"], r["cycle"], str(r.get("op", ""))))
                start = None
        if start is not None:
            ops.append((start["cycle"], mine[-1]["cycle"], str(start.get("op", ""))))
        ops = [o for o in ops if o[1] >= lo and o[0] <= hi]
        if ops:
            _bars(ax, [(a, max(b - a, min_w)) for a, b, _ in ops], y, 0.86, LIGHT_GREY,
                  edge="#AAAAAA", lw=0.6, z=1)
            used.setdefault(OP_LABEL, Patch(facecolor=LIGHT_GREY, edgecolor="#AAAAAA",
                                            label=OP_LABEL))
            for a, b, op in ops:
                mid = (max(a, lo) + min(b, hi)) / 2
                if min(b, hi) - max(a, lo) > (hi - lo) * 0.06:
                    ax.text(mid, y - 0.36, op, ha="center", va="center", fontsize=7.5,
                            color="#555555", zorder=2)
        by_style: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        waits: list[tuple[float, float]] = []
        irqs: list[tuple[float, float]] = []
        for r in mine:
            ev = r["event"]
            if ev == "interrupt":
                if _in_window(r, lo, hi):
                    irqs.append((r["cycle"], max(int(r.get("duration") or 0), min_w)))
                continue
            if "cost" not in r:
                continue
            if ev in ("flush_write_buffer", "wait_invalidation"):
                done = _command_done(records, r)
                if done is not None and done > r["cycle"] + r["cost"] and done >= lo and r[
                        "cycle"] <= hi:
                    waits.append((r["cycle"] + r["cost"], done - r["cycle"] - r["cost"]))
            if not _in_window(r, lo, hi):
                continue
            style = TX_STYLE.get(ev, ("#BBBBBB", ev, ""))
            by_style.setdefault(style, []).append((r["cycle"], max(int(r["cost"]), min_w)))
        for (color, label, hatch), spans in by_style.items():
            _bars(ax, spans, y, 0.5, color, hatch)
            used.setdefault(label, Patch(facecolor=color, edgecolor=BLACK, linewidth=0.5,
                                         label=label))
        if waits:
            _bars(ax, waits, y, 0.3, WAIT_STYLE[0], WAIT_STYLE[2], edge=GREY, z=2)
            used.setdefault(WAIT_STYLE[1], Patch(facecolor="white", edgecolor=GREY,
                                                 hatch=WAIT_STYLE[2], label=WAIT_STYLE[1]))
        if irqs:
            _bars(ax, irqs, y, 0.5, IRQ_STYLE[0], IRQ_STYLE[2], edge=GREY)
            used.setdefault(IRQ_STYLE[1], Patch(facecolor="white", edgecolor=GREY,
                                                hatch=IRQ_STYLE[2], label=IRQ_STYLE[1]))
            for start_c, width in irqs:
                a, b = max(start_c, lo), min(start_c + width, hi)
                if b - a > (hi - lo) * 0.07:
                    ax.text((a + b) / 2, y, "interrupt", ha="center", va="center",
                            fontsize=8, zorder=4,
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})


_done_cache: dict[str, Any] = {}


def _command_done(records: Sequence[Record], rec: Record) -> int | None:
    """The cycle the IOMMU finished the command ``rec`` (a blocking CPU command)."""
    if _done_cache.get("records") is not records:
        _done_cache["records"] = records
        _done_cache["done"] = [r for r in records if r["component"] == "iommu.invalidation"
                               and r["event"] == "done"]
    for d in _done_cache["done"]:
        if d["cycle"] >= rec["cycle"] and d.get("source") == rec["component"] and d.get(
                "kind", rec["event"]) == rec["event"]:
            return int(d["cycle"])
    return None


def _draw_devices(ax: Axes, records: Sequence[Record], lanes: list[tuple[str, str]],
                  y_of: dict[str, int], lo: int, hi: int, used: dict[str, Any]) -> None:
    min_w = (hi - lo) * 0.0025
    for name, kind in lanes:
        if kind != "device":
            continue
        y = y_of[name]
        pending: dict[Any, Record] = {}
        spans: list[tuple[float, float, bool]] = []  # (start, width, faulted)
        for r in records:
            if r["component"] != name:
                continue
            if r["event"] == "request":
                pending[r.get("index")] = r
            elif r["event"] == "complete":
                req = pending.pop(r.get("index"), None)
                start = req["cycle"] if req else r["cycle"] - int(r.get("latency") or 0)
                if r["cycle"] < lo or start > hi:
                    continue
                spans.append((start, max(r["cycle"] - start, min_w),
                              r.get("outcome") == "fault"))
        for req in pending.values():  # requests still in flight at the end
            if lo <= req["cycle"] <= hi:
                spans.append((req["cycle"], max(hi - req["cycle"], min_w), False))
        # DMAs in flight together go in sub-rows so that none hides another
        rows = _pack(spans)
        n_rows = max(rows, default=0) + 1
        height = 0.6 / n_rows
        for row in range(n_rows):
            y_row = y - 0.3 + height * (row + 0.5)
            mine = [sp for sp, r in zip(spans, rows, strict=True) if r == row]
            ok = [(a, w) for a, w, bad in mine if not bad]
            bad = [(a, w) for a, w, bad in mine if bad]
            if ok:
                _bars(ax, ok, y_row, height * 0.85, "white", edge=BLACK, lw=1.0)
                used.setdefault(DMA_OK, Patch(facecolor="white", edgecolor=BLACK,
                                              label=DMA_OK))
            if bad:
                _bars(ax, bad, y_row, height * 0.85, VERMILLION, edge=BLACK, lw=1.0)
                used.setdefault(DMA_FAULT, Patch(facecolor=VERMILLION, edgecolor=BLACK,
                                                 label=DMA_FAULT))


MAX_SUBROWS = 6


def _pack(spans: list[tuple[float, float, bool]]) -> list[int]:
    """A sub-row per span: the first row free at its start (at most MAX_SUBROWS;
    beyond that, the row that frees up first)."""
    ends: list[float] = []
    rows = [0] * len(spans)
    for i in sorted(range(len(spans)), key=lambda i: spans[i][0]):
        start, width, _ = spans[i]
        free = next((k for k, end in enumerate(ends) if end <= start), None)
        if free is None and len(ends) < MAX_SUBROWS:
            ends.append(0.0)
            free = len(ends) - 1
        if free is None:
            free = min(range(len(ends)), key=ends.__getitem__)
        ends[free] = start + width
        rows[i] = free
    return rows


def _draw_walker(ax: Axes, records: Sequence[Record], y_of: dict[str, int], lo: int, hi: int,
                 used: dict[str, Any]) -> None:
    y = y_of["walker"]
    inside = [r for r in records if lo <= r["cycle"] <= hi]
    reads = [r for r in inside if r["component"] == "iommu.port" and r["event"] == "read"]
    fine = [r["cycle"] for r in reads if not r.get("stale") and not r.get("freed")]
    stale = [r["cycle"] for r in reads if r.get("stale")]
    freed = [r["cycle"] for r in reads if r.get("freed")]
    if fine:
        ax.plot(fine, [y] * len(fine), linestyle="none", marker="|", markersize=14,
                markeredgewidth=1.6, color=BLACK, zorder=4)
        used.setdefault("walker read", Line2D([], [], linestyle="none", marker="|",
                                              markersize=11, markeredgewidth=1.6, color=BLACK,
                                              label="walker read (matches CPU view)"))
    if stale:
        ax.plot(stale, [y] * len(stale), linestyle="none", marker="X", markersize=11,
                color=VERMILLION, markeredgecolor=BLACK, markeredgewidth=0.6, zorder=5)
        used.setdefault("stale", Line2D([], [], linestyle="none", marker="X", markersize=9,
                                        color=VERMILLION, markeredgecolor=BLACK,
                                        markeredgewidth=0.6,
                                        label="walker read: stale (DRAM ≠ CPU view)"))
    if freed:
        ax.plot(freed, [y] * len(freed), linestyle="none", marker="s", markersize=9,
                color=PURPLE, markeredgecolor=BLACK, zorder=5)
        used.setdefault("freed", Line2D([], [], linestyle="none", marker="s", color=PURPLE,
                                        markeredgecolor=BLACK, label="walker read: freed page"))
    faults = [r["cycle"] for r in inside if r["component"] == "iommu.walker"
              and r["event"] == "fault"]
    if faults:
        ax.plot(faults, [y] * len(faults), linestyle="none", marker="*", markersize=20,
                color=VERMILLION, markeredgecolor=BLACK, markeredgewidth=0.8, zorder=6)
        used.setdefault("fault", Line2D([], [], linestyle="none", marker="*", markersize=14,
                                        color=VERMILLION, markeredgecolor=BLACK,
                                        label="IOMMU fault"))
    for kind, (marker, color, label) in INCIDENT_STYLE.items():
        hits = [r for r in inside if r["component"] == "iommu.walker" and r["event"] == kind]
        if not hits:
            continue
        xs = [r["cycle"] for r in hits]
        ys = [y_of.get(str(r.get("device")), y) + 0.3 for r in hits]
        ax.plot(xs, ys, linestyle="none", marker=marker, markersize=8, color=color,
                markeredgecolor=BLACK, markeredgewidth=0.6, zorder=6)
        used.setdefault(kind, Line2D([], [], linestyle="none", marker=marker, color=color,
                                     markeredgecolor=BLACK, markeredgewidth=0.6, label=label))


def _callouts(ax: Axes, numbered: list[StoryEvent], every: list[StoryEvent],
              y_of: dict[str, int], lo: int, hi: int) -> None:
    """Numbered circles above (or, when crowded, below) the event in its lane."""
    placed: dict[tuple[str, int], list[float]] = {}
    near = (hi - lo) * 0.03
    xs = [ev.cycle for ev in numbered]
    if len(numbered) > 2 and max(xs) - min(xs) < near:
        # too close together to number one by one at this zoom: one marker for them all
        first, last = every.index(numbered[0]) + 1, every.index(numbered[-1]) + 1
        mid = (min(xs) + max(xs)) / 2
        ax.annotate(f"({first})–({last}): cycles {min(xs):,}–{max(xs):,}, zoom in to see them",
                    (mid, -0.45), xytext=(mid, -0.68), ha="center", va="center", fontsize=8.5,
                    zorder=8, bbox={"boxstyle": "round,pad=0.25", "facecolor": "white",
                                    "edgecolor": BLACK, "linewidth": 0.8},
                    arrowprops={"arrowstyle": "->", "color": BLACK, "linewidth": 0.8})
        return
    for ev in numbered:
        n = every.index(ev) + 1
        lane = ev.lane if ev.lane in y_of else "walker"
        y = y_of[lane]
        side = -1
        for s in (-1, 1):
            if all(abs(ev.cycle - x) > near for x in placed.get((lane, s), [])):
                side = s
                break
        else:
            side = -1 if len(placed.get((lane, -1), [])) <= len(placed.get((lane, 1), [])) else 1
        placed.setdefault((lane, side), []).append(ev.cycle)
        ax.annotate(str(n), (ev.cycle, y + side * 0.27), xytext=(ev.cycle, y + side * 0.56),
                    ha="center", va="center", fontsize=8.5, fontweight="bold", zorder=8,
                    color=VERMILLION if ev.text.startswith("FAULT") else BLACK,
                    bbox={"boxstyle": "circle,pad=0.18", "facecolor": "white",
                          "edgecolor": VERMILLION if ev.text.startswith("FAULT") else BLACK,
                          "linewidth": 1.0},
                    arrowprops={"arrowstyle": "-", "color": BLACK, "linewidth": 0.8,
                                "shrinkA": 0, "shrinkB": 0})
