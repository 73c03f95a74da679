"""IOTLB reach: mean DMA latency and IOTLB hit rate against the working-set size, from
a sweep over a DMA stream's region size (one line per value of the other parameters)."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from ..errors import InputError, Problem
from ..units import format_size
from .style import (
    GREY,
    PALETTE,
    cycles_axis_ns,
    describe,
    new_figure,
    set_title,
    styled,
    thousands,
)
from .sweep import XAxis, check_parameter, draw_series, series

PAGE = 4096


def reach_parameter(sweep: dict[str, Any], x: str | None) -> str:
    """--x, else the swept parameter that is a region size (a stream's working set)."""
    if x is not None:
        return check_parameter(sweep, x)
    params = sweep.get("parameters", [])
    sizes = [p for p in params if p.endswith("region.size")]
    if sizes:
        return sizes[0]
    if len(params) == 1:
        return params[0]
    raise InputError([Problem(str(sweep.get("_path", "sweep")), None, "--x",
                              "no swept region size (devices.N.stream.region.size); name the "
                              f"working-set parameter with --x (swept: {', '.join(params)})")])


@styled
def reach_figure(sweep: dict[str, Any], x: str | None = None) -> Figure:
    """Mean DMA latency (top) and IOTLB hit rate (bottom) against working-set size."""
    x = reach_parameter(sweep, x)
    xaxis = XAxis([p["values"].get(x) for p in sweep["points"]])
    latency = series(sweep, x, "dma.latency.mean")
    hits = series(sweep, x, "iotlb.hit_rate")
    fig = new_figure(9, 7.6)
    ax_lat, ax_hit = fig.subplots(2, 1, sharex=True)
    first = sweep["points"][0]["results"]
    set_title(fig, "IOTLB reach: DMA latency and IOTLB hit rate against working-set size",
              describe(first, with_sweep=False, vary=sweep["parameters"])
              + " · mean over seeds, bars: min–max")
    draw_series(ax_lat, xaxis, latency)
    draw_series(ax_hit, xaxis, hits, scale=100.0)
    xaxis.apply(ax_hit)
    ax_lat.set_ylabel("mean DMA latency (cycles)")
    ax_lat.yaxis.set_major_formatter(thousands)
    cycles_axis_ns(ax_lat, first.get("hardware", {}).get("clock_ghz"), which="y")
    ax_hit.set_ylabel("IOTLB hit rate (%)")
    ax_hit.set_ylim(-3, 103)
    ax_hit.set_xlabel(f"working set: {x}")
    if xaxis.numeric:
        _reach_lines(sweep, x, [ax_lat, ax_hit], xaxis)
    others = [p for p in sweep["parameters"] if p != x]
    if others:
        ax_lat.legend(title=others[0] if len(others) == 1 else None, loc="upper left")
    return fig


def _reach_lines(sweep: dict[str, Any], x: str, axes: list, xaxis: XAxis) -> None:
    """A dotted line where the working set equals IOTLB entries x 4K, per IOTLB size,
    named on a top axis (so no label sits on the data)."""
    others = [p for p in sweep["parameters"] if p != x]
    per_series: dict[tuple, int] = {}
    for point in sweep["points"]:
        key = tuple((p, str(point["values"].get(p))) for p in others)
        entries = point["results"].get("hardware", {}).get("iommu", {}).get("iotlb", {}).get(
            "entries")
        if entries:
            per_series.setdefault(key, int(entries))
    distinct = sorted(set(per_series.values()))
    lo, hi = min(xaxis.pos(v) for v in xaxis.order), max(xaxis.pos(v) for v in xaxis.order)
    keys = list(per_series)
    ticks, labels, colors = [], [], []
    for entries in distinct:
        reach = entries * PAGE
        if not lo <= reach <= hi:
            continue
        color = GREY
        if len(distinct) > 1:
            i = keys.index(next(k for k in keys if per_series[k] == entries))
            color = PALETTE[i % len(PALETTE)]
        for ax in axes:
            ax.axvline(reach, color=color, linestyle=":", linewidth=1.6, zorder=1)
        ticks.append(reach)
        labels.append(f"{entries}×4K\n= {format_size(reach)}")
        colors.append(color)
    if ticks:
        top = axes[0].secondary_xaxis("top")
        top.set_xticks(ticks, labels, fontsize=8)
        top.xaxis.set_minor_locator(NullLocator())
        for label, color in zip(top.get_xticklabels(), colors, strict=True):
            label.set_color(color)
        top.set_xlabel("IOTLB reach (entries × 4K pages)", fontsize=9)
