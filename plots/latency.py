"""DMA latency: histogram and CDF of translation + access latency, split by how the
DMA was served (IOTLB hit, walk-cache hit, full walk, fault)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .data import hist_arrays, hist_percentile, pooled, select_runs
from .style import (
    BLACK,
    OUTCOME_COLORS,
    OUTCOME_LABELS,
    OUTCOMES,
    PALETTE,
    cycles_axis_ns,
    describe,
    fmt_num,
    new_figure,
    set_title,
    styled,
    thousands,
)

BINS = 50


def _bin_edges(groups: dict[str, Counter[int]]) -> np.ndarray:
    values = [v for c in groups.values() for v in c]
    lo, hi = min(values), max(values)
    step = max(1, int(np.ceil((hi - lo + 1) / BINS)))
    nbins = int(np.ceil((hi - lo + 1) / step))
    return lo - 0.5 + step * np.arange(nbins + 1)


def draw_histogram(ax: Axes, groups: dict[str, Counter[int]], colors: dict[str, str],
                   labels: dict[str, str], headroom: float = 1.0) -> None:
    """One outlined, lightly filled step histogram per group on common bins; a log
    count axis when one group is much rarer than another (a single fault among
    thousands of hits stays visible)."""
    edges = _bin_edges(groups)
    hists = {}
    for group, counter in groups.items():
        values, counts = hist_arrays(counter)
        hists[group], _ = np.histogram(values, bins=edges, weights=counts)
    peaks = [h.max() for h in hists.values() if h.max() > 0]
    log = len(peaks) > 1 and max(peaks) / min(peaks) > 30
    baseline = 0.7 if log else 0
    for group, h in hists.items():
        color = colors[group]
        ax.stairs(np.where(h > 0, h, baseline) if log else h, edges, baseline=baseline,
                  fill=True, facecolor=_alpha(color, 0.3), edgecolor=color, linewidth=1.6,
                  label=labels[group])
    top = max(peaks, default=1)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(baseline, top * (top / baseline) ** (headroom - 1) * 1.5)
        ax.set_ylabel("count per bin (log)")
    else:
        ax.set_ylim(0, top * 1.05 * headroom)
        ax.set_ylabel("count per bin")
    ax.xaxis.set_major_formatter(thousands)


def draw_cdf(ax: Axes, groups: dict[str, Counter[int]], colors: dict[str, str],
             labels: dict[str, str], total: Counter[int] | None = None,
             total_label: str = "all") -> None:
    """One empirical CDF per group (each reaching 1), and the pooled one dashed."""
    series = list(groups.items())
    if total is not None and len(groups) > 1:
        series.append(("__all__", total))
    for group, counter in series:
        values, counts = hist_arrays(counter)
        cdf = np.cumsum(counts) / sum(counts)
        xs = [values[0], *values]
        ys = [0.0, *cdf]
        if group == "__all__":
            ax.step(xs, ys, where="post", color=BLACK, linestyle="--", linewidth=1.3,
                    label=total_label)
        else:
            ax.step(xs, ys, where="post", color=colors[group], linewidth=2, label=labels[group])
    ax.set_ylim(-0.02, 1.04)
    ax.set_ylabel("cumulative fraction")
    ax.xaxis.set_major_formatter(thousands)


def percent(n: int, total: int) -> str:
    """A share that never rounds to 0% or 100% unless it is exactly that."""
    share = 100 * n / total if total else 0.0
    if 0 < share < 0.1:
        return "<0.1%"
    if 99.95 <= share < 100:
        return ">99.9%"
    if share in (0, 100) or 10 <= share < 99:
        return f"{share:.0f}%"
    return f"{share:.1f}%"


def latency_xlim(values: Counter[int]) -> tuple[float, float]:
    """From 0 when that costs little room, else from just below the smallest value (a
    narrow band far from 0 would be squeezed against the right edge)."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, 1)
    if lo < 0.35 * hi:
        return 0, hi + 0.05 * span + 1
    return lo - 0.08 * span - 1, hi + 0.05 * span + 1


def _alpha(color: str, a: float) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba

    return to_rgba(color, a)


def group_colors(groups: Sequence[str]) -> dict[str, str]:
    return {g: OUTCOME_COLORS.get(g, PALETTE[i % len(PALETTE)]) for i, g in enumerate(groups)}


@styled
def dma_latency_figure(results: dict[str, Any], seed: int | None = None) -> Figure:
    """Histogram (top) and CDF (bottom) of DMA latency by outcome, from a results dict.

    All seeds are pooled unless ``seed`` picks one. Cycles on x, ns on the top axis."""
    runs = select_runs(results, seed)
    dist = pooled(runs, "dma.latency")
    order = [o for o in OUTCOMES if o in dist] + sorted(k for k in dist if k not in OUTCOMES)
    groups = {k: dist[k] for k in order if sum(dist[k].values())}
    fig = new_figure(10.5, 7.2)
    ax_hist, ax_cdf = fig.subplots(2, 1, sharex=True)
    seeds = [r.get("seed") for r in runs]
    set_title(fig, "DMA latency (translation + access) by how the DMA was served",
              describe(results, seeds))
    if not groups:
        for ax in (ax_hist, ax_cdf):
            ax.text(0.5, 0.5, "no DMAs in this run", transform=ax.transAxes, ha="center")
        ax_cdf.set_xlabel("latency (cycles)")
        return fig
    total: Counter[int] = Counter()
    for c in groups.values():
        total.update(c)
    n_all = sum(total.values())
    labels = {
        k: f"{OUTCOME_LABELS.get(k, k)}: {n:,} ({percent(n, n_all)})"
        for k, n in ((k, sum(c.values())) for k, c in groups.items())
    }
    colors = group_colors(list(groups))
    draw_histogram(ax_hist, groups, colors, labels)
    draw_cdf(ax_cdf, groups, colors, labels, total, total_label=f"all DMAs: {n_all:,}")
    p50, p99 = hist_percentile(total, 50), hist_percentile(total, 99)
    mean = sum(v * c for v, c in total.items()) / n_all
    # One legend for both panels, beside them, so it never hides a curve.
    handles, names = ax_cdf.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", title="served by (DMAs)")
    ax_cdf.set_title(f"all DMAs: mean {fmt_num(round(mean))}, p50 {fmt_num(p50)}, "
                     f"p99 {fmt_num(p99)}, max {fmt_num(max(total))} cycles", fontsize=10)
    ax_cdf.set_xlabel("latency (cycles)")
    ax_cdf.set_xlim(*latency_xlim(total))
    cycles_axis_ns(ax_hist, results.get("hardware", {}).get("clock_ghz"))
    return fig
