"""Shared look: the Okabe–Ito palette, titles that say what was run, axis helpers.

Figures are plain ``matplotlib.figure.Figure`` objects, not pyplot figures: drawing
needs no display and chooses no backend (a notebook keeps its own). Every figure uses
the colour-blind-safe Okabe–Ito colours; vermillion is kept for
what went wrong (faults, stale reads) so that it stands out in every figure.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .. import units

# Okabe & Ito, "Color Universal Design" (2008).
BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
GREEN = "#009E73"
YELLOW = "#F0E442"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
GREY = "#999999"
LIGHT_GREY = "#E4E4E4"
PALETTE = (BLUE, ORANGE, GREEN, PURPLE, SKY_BLUE, VERMILLION, YELLOW, BLACK)

# How a DMA was served (distributions["dma.latency"] keys), in drawing order.
OUTCOMES = ("iotlb", "walk_cache", "walk", "fault")
OUTCOME_LABELS = {
    "iotlb": "IOTLB hit",
    "walk_cache": "walk-cache hit",
    "walk": "full walk",
    "fault": "fault",
}
OUTCOME_COLORS = {"iotlb": GREEN, "walk_cache": SKY_BLUE, "walk": ORANGE, "fault": VERMILLION}

# Why a CPU flushed cache lines (tables.transactions.FLUSH_CAUSES), in stacking order.
FLUSH_CAUSES = ("table_start", "install", "helper", "leaf", "clear", "unmap")
CAUSE_LABELS = {
    "table_start": "new table page (start)",
    "install": "table pointer install",
    "helper": "helper (another CPU's pointer)",
    "leaf": "leaf range",
    "clear": "clear for a large leaf",
    "unmap": "unmap clear",
}
CAUSE_COLORS = {
    "table_start": YELLOW,
    "install": PURPLE,
    "helper": BLUE,
    "leaf": GREEN,
    "clear": ORANGE,
    "unmap": SKY_BLUE,
}

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "axes.grid": True,
    "grid.color": "#D8D8D8",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
SAVE_RC = {"svg.hashsalt": "iommusim"}  # stable ids: the same data give the same SVG


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout, which keeps labels, titles and legends from
    overlapping."""
    with matplotlib.rc_context(RC):
        return Figure(figsize=(width, height), layout="constrained")


def styled(func):  # type: ignore[no-untyped-def]
    """Run a figure builder under the style's rc parameters."""

    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(RC):
            return func(*args, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    return wrapper


# --- numbers ------------------------------------------------------------------------
def fmt_num(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}"


thousands = FuncFormatter(lambda v, _pos: f"{v:,.0f}")


def parse_size(value: Any) -> int | float | None:
    """A number, or a size string ("64K", "2M", "4096"), as a number; None for anything
    else (sweep values on an axis)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return units.parse_size(value)
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            return None
    return None


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return fmt_num(value)
    return str(value)


def cycles_axis_ns(ax: Axes, clock_ghz: float | None, *, which: str = "x") -> None:
    """A secondary axis in nanoseconds for an axis in cycles (top or right)."""
    if not clock_ghz:
        return
    ghz = float(clock_ghz)
    funcs = (lambda c: c / ghz, lambda ns: ns * ghz)
    if which == "x":
        sec = ax.secondary_xaxis("top", functions=funcs)
        sec.set_xlabel(f"ns (at {ghz:g} GHz)")
        sec.xaxis.set_major_formatter(thousands)
    else:
        sec = ax.secondary_yaxis("right", functions=funcs)
        sec.set_ylabel(f"ns (at {ghz:g} GHz)")
        sec.yaxis.set_major_formatter(thousands)


# --- what was run ---------------------------------------------------------------------
def short_key(key: str) -> str:
    """The last part of a dotted key: kernel.fixes.flush_done_sw_bit -> flush_done_sw_bit."""
    return key.rsplit(".", 1)[-1]


def hardware_name(results: dict[str, Any]) -> str:
    name = str(results.get("scenario", {}).get("hardware", "") or "")
    return Path(name).stem if name else "?"


def fixes_off(results: dict[str, Any]) -> list[str]:
    fixes = results.get("scenario", {}).get("kernel", {}).get("fixes", {}) or {}
    return [name for name, on in fixes.items() if on is False]


def fixes_phrase(results: dict[str, Any], vary: Iterable[str] = ()) -> str:
    """'fix off: x', 'all fixes on'; fixes named in ``vary`` (swept or compared keys,
    dotted or short) are left out: the figure tells them apart itself."""
    varying = {short_key(k) for k in vary}
    off = [f for f in fixes_off(results) if f not in varying]
    rest = "other " if varying & set(
        results.get("scenario", {}).get("kernel", {}).get("fixes", {}) or {}) else ""
    if not off:
        return f"all {rest}fixes on"
    return ("fix off: " if len(off) == 1 else "fixes off: ") + ", ".join(off)


def seeds_phrase(seeds: Sequence[int]) -> str:
    seeds = sorted(seeds)
    if not seeds:
        return "no seeds"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    shown = ", ".join(map(str, seeds[:6]))
    return f"seeds {shown}{', …' if len(seeds) > 6 else ''}"


def run_seeds(results: dict[str, Any]) -> list[int]:
    return [int(r.get("seed", 0)) for r in results.get("runs", [])]


def describe(results: dict[str, Any], seeds: Iterable[int] | None = None, *,
             with_sweep: bool = True, with_fixes: bool = True, vary: Iterable[str] = ()
             ) -> str:
    """'shared-level-flush on vtd-incoherent · fix off: flush_done_sw_bit · seeds 1–20'."""
    scenario = results.get("scenario", {})
    parts = [f"{scenario.get('name', '?')} on {hardware_name(results)}"]
    sweep = results.get("sweep") or {}
    if with_sweep and sweep:
        parts.append(", ".join(f"{short_key(k)}={format_value(v)}" for k, v in sweep.items()))
    if with_fixes:
        parts.append(fixes_phrase(results, vary))
    parts.append(seeds_phrase(list(seeds) if seeds is not None else run_seeds(results)))
    return " · ".join(parts)


def set_title(fig: Figure, what: str, detail: str, width: int | None = None) -> None:
    """A line saying what the figure shows and one saying what was run (wrapped to the
    figure's width)."""
    if width is None:
        width = int(fig.get_figwidth() * 11.5)
    detail = "\n".join(wrap_parts(detail, width)) if detail else ""
    text = f"{what}\n{detail}" if detail else what
    fig.suptitle(text, fontsize=11.5, x=0.5, ha="center")


def wrap_parts(text: str, width: int, sep: str = " · ") -> list[str]:
    """Wrap at the " · " between parts where possible, inside a part only if it must."""
    lines: list[str] = []
    for part in text.split(sep):
        if lines and len(lines[-1]) + len(sep) + len(part) <= width:
            lines[-1] += sep + part
        else:
            lines += textwrap.wrap(part, width) or [""]
    return lines


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept whole as values."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                out.update(flatten(value, name))
            else:
                out[name] = value
    else:
        out[prefix] = data
    return out


IGNORED_DIFFERENCES = ("scenario.description", "scenario.sweep", "scenario.expect",
                       "scenario.run.seeds")


def _flat_config(r: dict[str, Any]) -> dict[str, Any]:
    d = {f"scenario.{k}": v for k, v in flatten(r.get("scenario", {})).items()}
    d.update({f"hardware.{k}": v for k, v in flatten(r.get("hardware", {})).items()})
    d.update({f"sweep.{k}": v for k, v in (r.get("sweep") or {}).items()})
    return d


def differing_keys(results: Sequence[dict[str, Any]]) -> list[str]:
    """The configuration keys whose values differ between results: the sweep values
    when there are any (the resolved keys they changed would repeat them), else the
    scenario and hardware keys (``scenario.kernel.fixes.flush_done_sw_bit``)."""
    flat = [_flat_config(r) for r in results]
    keys = sorted(set().union(*flat)) if flat else []
    differing = [
        k for k in keys
        if not k.startswith(IGNORED_DIFFERENCES)
        and len({repr(f.get(k)) for f in flat}) > 1
    ]
    sweep_keys = [k for k in differing if k.startswith("sweep.")]
    return sweep_keys or differing


def difference_labels(results: Sequence[dict[str, Any]], names: Sequence[str],
                      sep: str = ", ") -> list[str]:
    """Short labels telling results apart, e.g. 'flush_done_sw_bit=off', from
    ``differing_keys``; ``names`` when nothing or more than three keys differ."""
    differing = differing_keys(results)
    if not differing or len(differing) > 3:
        return list(names)
    flat = [_flat_config(r) for r in results]
    shorts = [short_key(k) for k in differing]
    if len(set(shorts)) < len(shorts):
        shorts = [k.split(".", 1)[1] for k in differing]
    return [
        sep.join(f"{s}={format_value(f.get(k))}" for s, k in zip(shorts, differing, strict=True))
        for f in flat
    ]
