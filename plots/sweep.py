"""Sweep: any metric against any swept parameter, one series per value of the other
swept parameters, mean over seeds with min–max error bars; a race sweep (a swept fix
switch, or a scenario with a regression guard) as the share of seeds showing the
symptom. Numeric axes join their points with lines; categorical ones (off/on, names)
draw points only, since there is nothing between two categories."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from ..errors import InputError, Problem, did_you_mean
from ..units import format_size, is_size_string
from .data import metric_names, metric_stats
from .share import describe_symptom, is_race_sweep, share, symptom
from .style import (
    PALETTE,
    describe,
    format_value,
    new_figure,
    parse_size,
    set_title,
    short_key,
    styled,
    thousands,
)

Meaning = Callable[[str], str]  # a metric name -> what it means ('' if unknown)

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
LINESTYLES = ("-", "--", "-.", ":")


def _bad(sweep: dict[str, Any], path: str, message: str) -> InputError:
    return InputError([Problem(str(sweep.get("_path", "sweep")), None, path, message)])


def check_parameter(sweep: dict[str, Any], x: str | None, option: str = "--x") -> str:
    params = list(sweep.get("parameters", []))
    if not params:
        raise _bad(sweep, "", "the sweep has no parameters")
    if x is None:
        return params[0]
    if x in params:
        return x
    shorts = {short_key(p): p for p in params}
    if x in shorts:
        return shorts[x]
    raise _bad(sweep, option, f"{x!r} is not a swept parameter (swept: {', '.join(params)})"
               f"{did_you_mean(x, params)}")


def check_metric(sweep: dict[str, Any], metric: str) -> str:
    names = metric_names(sweep["points"][0]["results"])
    if metric not in names:
        raise _bad(sweep, "--metric", f"no metric {metric!r} in the results"
                   f"{did_you_mean(metric, names)}")
    return metric


def default_metric(sweep: dict[str, Any]) -> str:
    expect = sweep["points"][0]["results"].get("scenario", {}).get("expect") or {}
    for name in expect:
        return name
    return "dma.latency.mean"


class XAxis:
    """How a swept parameter's values sit on the x axis: numbers (linear or log),
    sizes (log 2 with "4K" labels), or categories (booleans, names)."""

    def __init__(self, values: Sequence[Any]) -> None:
        uniq = []
        for v in values:
            if v not in uniq:
                uniq.append(v)
        nums = [parse_size(v) for v in uniq]
        self.sizes = all(is_size_string(v) or isinstance(v, int) for v in uniq) and any(
            is_size_string(v) for v in uniq)
        self.numeric = all(n is not None for n in nums)
        if self.numeric:
            pairs = sorted(zip(nums, uniq, strict=True), key=lambda p: float(p[0]))
            self.order = [u for _, u in pairs]
            positive = all(float(n) > 0 for n in nums)
            wide = max(nums) / min(nums) >= (4 if self.sizes else 16) if positive else False
            self.log = positive and len(nums) > 2 and wide
        else:
            self.order = uniq
            self.log = False

    def pos(self, value: Any) -> float:
        if self.numeric:
            return float(parse_size(value))  # type: ignore[arg-type]
        return float(self.order.index(value))

    def apply(self, ax: Axes) -> None:
        if self.numeric:
            if self.log:
                ax.set_xscale("log", base=2 if self.sizes else 10)
            ticks = [self.pos(v) for v in self.order]
            if self.sizes or self.log:
                ax.xaxis.set_major_locator(FixedLocator(ticks))
                ax.xaxis.set_minor_locator(NullLocator())
                labels = [format_size(t) if self.sizes else format_value(v)
                          for t, v in zip(ticks, self.order, strict=True)]
                ax.set_xticks(ticks, labels)
            else:
                ax.xaxis.set_major_formatter(thousands)
        else:
            ax.set_xticks(range(len(self.order)), [format_value(v) for v in self.order])
            ax.set_xlim(-0.5, len(self.order) - 0.5)


def series(sweep: dict[str, Any], x: str, metric: str,
           conditions: dict[str, str] | None = None) -> list[tuple[str, list[tuple]]]:
    """[(label, [(x value, mean, min, max), ...]), ...]: one series per combination of
    the other parameters' values. With ``conditions``, the percent of seeds on which
    the symptom shows instead (mean = min = max: a share has no spread)."""
    others = [p for p in sweep["parameters"] if p != x]
    groups: dict[tuple, list[tuple]] = {}
    for point in sweep["points"]:
        values = point["values"]
        key = tuple((p, _hashable(values.get(p))) for p in others)
        if conditions is not None:
            pct = share(point["results"], conditions)
            stats = None if pct is None else (pct, pct, pct)
        else:
            stats = metric_stats(point["results"], metric)
        if stats is None:
            continue
        groups.setdefault(key, []).append((values.get(x), *stats))
    out = []
    for key, rows in groups.items():
        if len(key) == 1:  # the legend title names the parameter
            label = format_value(key[0][1])
        else:
            label = ", ".join(f"{short_key(p)}={format_value(v)}" for p, v in key) or metric
        out.append((label, rows))
    return out


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def draw_series(ax: Axes, xaxis: XAxis, data: list[tuple[str, list[tuple]]],
                scale: float = 1.0, bars: bool = True) -> None:
    """Error bars from min to max (``bars``); lines between points on a numeric axis
    only."""
    n = len(data)
    for i, (label, rows) in enumerate(data):
        rows = sorted(rows, key=lambda r: xaxis.pos(r[0]))
        xs = np.array([xaxis.pos(r[0]) for r in rows])
        if not xaxis.numeric and n > 1:  # side by side so error bars do not hide each other
            xs = xs + (i - (n - 1) / 2) * min(0.12, 0.45 / n)
        mean = np.array([r[1] for r in rows]) * scale
        lo = np.array([r[2] for r in rows]) * scale
        hi = np.array([r[3] for r in rows]) * scale
        # later series get thinner dashes and smaller markers so that where lines
        # coincide (e.g. every point at 0) the earlier ones still show around them
        ax.errorbar(xs, mean, yerr=[mean - lo, hi - mean] if bars else None,
                    color=PALETTE[i % len(PALETTE)], marker=MARKERS[i % len(MARKERS)],
                    linestyle=LINESTYLES[i % 4] if xaxis.numeric else "none",
                    linewidth=max(1.2, 2.4 - 0.3 * i), markersize=max(4.0, 8.5 - 1.3 * i),
                    capsize=3.5, elinewidth=1.1, label=label, zorder=3 + i)


@styled
def sweep_figure(sweep: dict[str, Any], metric: str | None = None,
                 x: str | None = None, meaning: Meaning | None = None,
                 share: bool | None = None) -> Figure:
    """``metric`` (default: the scenario's first expect metric, else mean DMA latency)
    against the swept parameter ``x`` (default: the first), from a loaded sweep.
    ``share``: plot the percent of seeds showing the symptom (the regression guard's,
    else the expectations'; with ``metric``, that metric's condition) instead of the
    mean; by default on for a race sweep when no metric is named.
    ``meaning(metric)``, when given, words the y label and the title (the command
    passes the metric catalog's; plots know results files only)."""
    x = check_parameter(sweep, x)
    first = sweep["points"][0]["results"]
    if share is None:
        share = metric is None and is_race_sweep(sweep)
    named = metric
    metric = check_metric(sweep, metric or default_metric(sweep))
    conditions = None
    if share:  # the named metric's condition, else the whole symptom
        conditions = symptom(first, named) if named else (symptom(first)
                                                          or symptom(first, metric))
        for name in conditions:
            check_metric(sweep, name)
    data = series(sweep, x, metric, conditions)
    xaxis = XAxis([p["values"].get(x) for p in sweep["points"]])
    fig = new_figure(9, 5.8)
    ax = fig.subplots()
    others = [p for p in sweep["parameters"] if p != x]
    text = meaning(metric) if meaning is not None else ""
    if conditions is not None:
        what = f"seeds showing {describe_symptom(conditions)} against {x}"
        detail = " · share of the seeds"
    else:
        what = f"{metric} against {x}" + (f"\n({text})" if text else "")
        detail = " · mean over seeds, bars: min–max"
    set_title(fig, what, describe(first, with_sweep=False, vary=sweep["parameters"]) + detail)
    draw_series(ax, xaxis, data, bars=conditions is None)
    xaxis.apply(ax)
    ax.set_xlabel(x)
    if conditions is not None:
        ax.set_ylabel("seeds showing the symptom (%)")
        ax.set_ylim(-4, 104)
    else:
        ax.set_ylabel(metric_label(metric, text))
        ax.yaxis.set_major_formatter(thousands if _large(data)
                                     else ax.yaxis.get_major_formatter())
    if others or len(data) > 1:
        ax.legend(title=", ".join(others) if len(others) == 1 else None, loc="best")
    return fig


def metric_unit(metric: str) -> str:
    """The unit of a metric, from its name (the metric catalog's conventions: latencies
    and waits in cycles, hit rates as fractions, everything else a count per run)."""
    if metric.endswith("hit_rate"):
        return "fraction of lookups"
    if ".latency." in metric or metric.endswith(("cycles", ".wait")):
        return "cycles"
    if re.fullmatch(r"cpu\.[^.]+\.flush\.lines", metric) and metric != "cpu.flush.lines":
        return "cache lines per operation"  # cpu.<op>.flush.lines: a mean per operation
    if ".flush.lines" in metric:
        return "cache lines per run"
    return "per run"


def metric_label(metric: str, text: str = "") -> str:
    """A y label in words with its unit: "DMA requests that faulted (per run)"; the
    metric's own name when its meaning is not known."""
    words = text[:1].upper() + text[1:] if text else metric
    return f"{words} ({metric_unit(metric)})"


def _large(data: list[tuple[str, list[tuple]]]) -> bool:
    values = [abs(r[3]) for _, rows in data for r in rows]
    return bool(values) and max(values) >= 1000 and all(math.isfinite(v) for v in values)
