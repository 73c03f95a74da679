"""Map / unmap cost: the latency distribution of CPU operations, one column per
operation kind, one line per page size ("map 4K", "map 2M", "unmap 4K", ...)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from matplotlib.figure import Figure

from ..units import parse_size
from .data import hist_mean, hist_percentile, pooled, select_runs
from .latency import draw_cdf, draw_histogram, latency_xlim
from .style import PALETTE, cycles_axis_ns, describe, fmt_num, new_figure, set_title, styled

KIND_ORDER = ("map", "unmap", "read_and_clear_dirty")


def _size_key(group: str) -> tuple[int, int]:
    """"map 4K" -> (0, 4096): groups by size, unsized ones last."""
    try:
        return 0, parse_size(group.partition(" ")[2])
    except ValueError:
        return 1, 0


def split_groups(dist: dict[str, Counter[int]]) -> dict[str, dict[str, Counter[int]]]:
    """{"map 4K": h, "map 2M": h, "unmap 4K": h} -> {"map": {...}, "unmap": {...}}."""
    kinds: dict[str, dict[str, Counter[int]]] = {}
    for group, counter in dist.items():
        if sum(counter.values()):
            kinds.setdefault(group.partition(" ")[0], {})[group] = counter
    order = [k for k in KIND_ORDER if k in kinds] + sorted(k for k in kinds if k not in KIND_ORDER)
    return {k: dict(sorted(kinds[k].items(), key=lambda kv: _size_key(kv[0]))) for k in order}


@styled
def op_cost_figure(results: dict[str, Any], seed: int | None = None) -> Figure:
    """Histogram (top) and CDF (bottom) of CPU operation latency per kind and page size."""
    runs = select_runs(results, seed)
    kinds = split_groups(pooled(runs, "cpu.latency"))
    ncols = max(1, len(kinds))
    fig = new_figure(max(7.5, 5.2 * ncols), 7.2)
    axes = fig.subplots(2, ncols, squeeze=False)
    set_title(fig, "CPU operation cost by kind and page size",
              describe(results, [r.get("seed") for r in runs]))
    if not kinds:
        axes[0][0].text(0.5, 0.5, "no CPU operations in this run", ha="center",
                        transform=axes[0][0].transAxes)
        return fig
    colors_used = 0
    clock = results.get("hardware", {}).get("clock_ghz")
    for col, (kind, groups) in enumerate(kinds.items()):
        ax_hist, ax_cdf = axes[0][col], axes[1][col]
        ax_cdf.sharex(ax_hist)
        colors = {}
        for g in groups:
            colors[g] = PALETTE[colors_used % len(PALETTE)]
            colors_used += 1
        labels = {
            g: f"{g}: {sum(c.values()):,} ops, mean {fmt_num(round(hist_mean(c)))}"
            for g, c in groups.items()
        }
        draw_histogram(ax_hist, groups, colors, labels, headroom=1.2 + 0.15 * len(groups))
        ax_hist.set_title(f"{kind}: latency distribution")
        ax_hist.legend(loc="upper right")
        total: Counter[int] = Counter()
        for c in groups.values():
            total.update(c)
        draw_cdf(ax_cdf, groups, colors, labels, total, total_label=f"all {kind}")
        ax_cdf.set_title(f"{kind}: CDF (p50 {fmt_num(hist_percentile(total, 50))}, "
                         f"p99 {fmt_num(hist_percentile(total, 99))} cycles)")
        ax_cdf.set_xlabel(f"{kind} latency (cycles)")
        ax_cdf.set_xlim(*latency_xlim(total))
        cycles_axis_ns(ax_hist, clock)
    return fig
