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

import textwrap
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..errors import InputError, Problem
from .story import CPU_RE, Record, Story, StoryEvent, Trace, find_story, is_cpu
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


# --- drawing ----------------------------------------------------------------------------
def lanes_of(records: Sequence[Record]) -> list[tuple[str, str]]:
    """[(lane name, kind)] in drawing order: CPUs, devices, the walker."""
    cpus = sorted({r["component"] for r in records if is_cpu(r)},
                  key=lambda c: int(CPU_RE.match(c)[1]))  # type: ignore[index]
    devices = sorted({r["component"] for r in records if r["event"] in ("request", "complete")
                      and not is_cpu(r)})
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
    records = Trace(trace)
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

    _lane_axes(ax, lanes, lo, hi, (results or {}).get("hardware", {}).get("clock_ghz"))
    ax_legend.legend(handles=list(used.values()), loc="center", ncols=min(5, len(used)),
                     frameon=False, fontsize=8.5, handlelength=1.8, columnspacing=1.4)
    _caption(ax_caption, story, caption, wrapped, summary, n_caption_lines)
    what = f"Race timeline, cycles {lo:,}–{hi:,}"
    if results is not None:
        seeds = [seed] if seed is not None else None
        detail = describe(results, seeds)
    else:
        detail = f"trace{'' if seed is None else f' of seed {seed}'}"
    set_title(fig, what, detail, width=150)
    return fig


def _lane_axes(ax: Axes, lanes: list[tuple[str, str]], lo: int, hi: int,
               clock: float | None) -> None:
    """Cycles on x (ns on top when the clock is known), one labelled row per lane."""
    ax.set_xlim(lo, hi)
    ax.set_ylim(len(lanes) - 0.2, -0.8)
    ax.set_yticks(range(len(lanes)), [_lane_label(n, k) for n, k in lanes])
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(thousands)
    ax.set_xlabel("cycle")
    cycles_axis_ns(ax, clock)
    for i in range(1, len(lanes)):
        ax.axhline(i - 0.5, color="#CCCCCC", linewidth=0.6, zorder=0)


def _caption(ax_caption: Axes, story: Story, caption: list[StoryEvent],
             wrapped: list[list[str]], summary: list[str], n_caption_lines: int) -> None:
    """The headline, the numbered events (a fault in red) and the why, below the lanes."""
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


def _draw_ops(ax: Axes, mine: list[Record], y: int, lo: int, hi: int,
              used: dict[str, Any]) -> None:
    """A light band per CPU operation (map, unmap, ...) with its name when it fits."""
    min_w = (hi - lo) * 0.0025
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
    if not ops:
        return
    _bars(ax, [(a, max(b - a, min_w)) for a, b, _ in ops], y, 0.86, LIGHT_GREY,
          edge="#AAAAAA", lw=0.6, z=1)
    used.setdefault(OP_LABEL, Patch(facecolor=LIGHT_GREY, edgecolor="#AAAAAA", label=OP_LABEL))
    for a, b, op in ops:
        mid = (max(a, lo) + min(b, hi)) / 2
        if min(b, hi) - max(a, lo) > (hi - lo) * 0.06:
            ax.text(mid, y - 0.36, op, ha="center", va="center", fontsize=7.5,
                    color="#555555", zorder=2)


def _draw_cpus(ax: Axes, records: Trace, lanes: list[tuple[str, str]],
               y_of: dict[str, int], lo: int, hi: int, used: dict[str, Any]) -> None:
    min_w = (hi - lo) * 0.0025
    for name, kind in lanes:
        if kind != "cpu":
            continue
        y = y_of[name]
        mine = [r for r in records if r["component"] == name]
        _draw_ops(ax, mine, y, lo, hi, used)
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


def _command_done(records: Trace, rec: Record) -> int | None:
    """The cycle the IOMMU finished the command ``rec`` (a blocking CPU command)."""
    for d in records.commands_done():
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
