"""Flushes: cache lines flushed per map and per unmap, stacked by cause, one bar per
run (two results files, or every point of a sweep) so a fix on/off reads side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .data import pooled, select_runs
from .style import (
    CAUSE_COLORS,
    CAUSE_LABELS,
    FLUSH_CAUSES,
    PALETTE,
    describe,
    difference_labels,
    differing_keys,
    fixes_phrase,
    hardware_name,
    new_figure,
    run_seeds,
    seeds_phrase,
    set_title,
    styled,
)

KINDS = ("map", "unmap", "read_and_clear_dirty")
PLURAL = {"map": "maps", "unmap": "unmaps", "read_and_clear_dirty": "dirty reads"}


def flush_table(results: dict[str, Any], seed: int | None = None) -> dict[str, dict[str, Any]]:
    """{kind: {"ops": n, "per_op": {cause: mean lines per op}}} for one results dict."""
    dist = pooled(select_runs(results, seed), "cpu.flush_lines")
    out: dict[str, dict[str, Any]] = {}
    for group, counter in dist.items():
        kind, _, cause = group.rpartition(".")
        n = sum(counter.values())
        entry = out.setdefault(kind, {"ops": 0, "per_op": {}})
        entry["ops"] = max(entry["ops"], n)
        entry["per_op"][cause] = sum(v * c for v, c in counter.items()) / n if n else 0.0
    return out


def _as_runs(data: Any) -> list[dict[str, Any]]:
    """A results dict, a list of them, or a loaded sweep -> a list of results dicts."""
    if isinstance(data, dict) and "points" in data:
        return [p["results"] for p in data["points"]]
    if isinstance(data, dict):
        return [data]
    return list(data)


@styled
def flush_figure(data: Any, labels: Sequence[str] | None = None,
                 seed: int | None = None) -> Figure:
    """Stacked bars of mean cache lines flushed per operation, by cause.

    ``data``: one results dict, a list of them (side by side), or a loaded sweep (one
    bar per point). ``labels`` name the bars; by default the sweep values or the
    settings that differ between the results (e.g. ``flush_done_sw_bit=off``)."""
    runs = _as_runs(data)
    labels = _bar_labels(runs, labels)
    tables = [flush_table(r, seed) for r in runs]
    kinds, causes = _columns(tables)
    colors = {c: CAUSE_COLORS.get(c, PALETTE[i % len(PALETTE)]) for i, c in enumerate(causes)}
    many = len(runs) > 10
    dominant = {k: _dominant(tables, [k], causes) for k in kinds}
    rows = 2 if any(dominant.values()) else 1
    per_bar = 0.6 if many else 1.5
    width = min(20.0, max(7.5, (1.5 + len(runs) * per_bar) * max(1, len(kinds))))
    fig = new_figure(width, (4.4 if many else 3.9) * rows + 1.6)
    axes = fig.subplots(rows, max(1, len(kinds)), squeeze=False)
    set_title(fig, "Cache lines flushed per operation, by cause (mean over operations)",
              _detail(runs))
    if not kinds:
        axes[0][0].text(0.5, 0.5, "no map or unmap operations", ha="center",
                        transform=axes[0][0].transAxes)
        return fig
    x = np.arange(len(runs))
    for col, kind in enumerate(kinds):
        ops = [t.get(kind, {}).get("ops", 0) for t in tables]
        ticks = [f"{lab}\n({n:,} {PLURAL.get(kind, kind)})"
                 for lab, n in zip(labels, ops, strict=True)]
        panels = [(axes[0][col], causes, f"per {kind}")]
        big = dominant[kind]
        if big:
            rest = [c for c in causes if c != big]
            panels.append((axes[1][col], rest, f"per {kind}, zoomed:\nwithout "
                           f"{CAUSE_LABELS.get(big, big)}"))
        elif rows > 1:
            axes[1][col].set_visible(False)  # nothing dwarfs the rest in this column
        for row, (ax, shown, title) in enumerate(panels):
            _stack(ax, x, tables, kind, shown, colors, values=row > 0 or not big)
            ax.set_xticks(x, ticks, rotation=90 if many else 0, fontsize=8 if many else 9)
            ax.set_ylabel(f"lines flushed per {kind}")
            ax.set_title(title)
            ax.grid(axis="x", visible=False)
    handles = [Patch(facecolor=colors[c], edgecolor="black", linewidth=0.6,
                     label=CAUSE_LABELS.get(c, c)) for c in causes]
    fig.legend(handles=handles, loc="outside lower center", title="flush cause",
               ncols=max(1, min(len(handles), int(width // 2.7))))
    return fig


def _bar_labels(runs: list[dict[str, Any]], labels: Sequence[str] | None) -> Sequence[str]:
    """The given labels, else the scenario names told apart by what differs."""
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"{len(labels)} labels for {len(runs)} results")
        return labels
    names = [r.get("scenario", {}).get("name", f"run {i + 1}") for i, r in enumerate(runs)]
    if len(set(names)) < len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    return difference_labels(runs, names, sep="\n") if len(runs) > 1 else [fixes_phrase(runs[0])]


def _columns(tables: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The operation kinds that flushed (map, unmap first) and the causes that appear."""
    present = {k for t in tables for k, e in t.items() if e["ops"]}
    kinds = [k for k in ("map", "unmap") if k in present]
    kinds += [k for k in sorted(present - {"map", "unmap"})
              if any(sum(t.get(k, {}).get("per_op", {}).values()) for t in tables)]
    causes = [c for c in FLUSH_CAUSES
              if any(t.get(k, {}).get("per_op", {}).get(c, 0) for t in tables for k in kinds)]
    causes += sorted({c for t in tables for k in kinds for c in t.get(k, {}).get("per_op", {})
                      if c not in FLUSH_CAUSES and t[k]["per_op"][c]})
    return kinds, causes


def _detail(runs: list[dict[str, Any]]) -> str:
    first = runs[0]
    if len(runs) == 1:
        return describe(first)
    vary = differing_keys(runs)
    return (f"{first.get('scenario', {}).get('name', '?')} on {hardware_name(first)} · "
            f"{fixes_phrase(first, vary)} · {seeds_phrase(run_seeds(first))} · "
            f"bars: {len(runs)} runs compared")


def _dominant(tables: list[dict[str, Any]], kinds: list[str], causes: list[str]) -> str | None:
    """A cause so large that the others would be slivers (then a zoomed row shows them)."""
    for cause in causes:
        big = small = 0.0
        for t in tables:
            for k in kinds:
                per_op = t.get(k, {}).get("per_op", {})
                big = max(big, per_op.get(cause, 0.0))
                small = max(small, sum(v for c, v in per_op.items() if c != cause))
        if small > 0 and big > 0 and small < 0.2 * big:
            return cause
    return None


def _stack(ax: Any, x: np.ndarray, tables: list[dict[str, Any]], kind: str,
           causes: Sequence[str], colors: dict[str, str], *, values: bool) -> None:
    """Stacked bars of ``causes``; the total above each bar, and each segment's value
    inside it when ``values`` and the segment is tall enough to hold the text."""
    bottom = np.zeros(len(tables))
    segments = []
    for cause in causes:
        heights = np.array([t.get(kind, {}).get("per_op", {}).get(cause, 0.0) for t in tables])
        if not heights.any():
            continue
        ax.bar(x, heights, 0.62, bottom=bottom, color=colors[cause], edgecolor="black",
               linewidth=0.6, label=CAUSE_LABELS.get(cause, cause))
        segments.append((bottom.copy(), heights))
        bottom += heights
    top = float(bottom.max()) if bottom.size else 0.0
    ax.set_ylim(0, top * 1.14 if top else 1)
    ax.set_xlim(-0.5 - 0.25 * (len(tables) < 3), len(tables) - 0.5 + 0.25 * (len(tables) < 3))
    for xi, total in zip(x, bottom, strict=True):
        ax.text(xi, total + top * 0.015, f"{total:.3g}", ha="center", va="bottom",
                fontsize=9, fontweight="bold")
    if values and top:
        parts = sum((h > 0).astype(int) for _, h in segments)
        for base, heights in segments:
            for i, (xi, b, h) in enumerate(zip(x, base, heights, strict=True)):
                if h >= top * 0.055 and parts[i] > 1:
                    ax.text(xi, b + h / 2, f"{h:.3g}", ha="center", va="center", fontsize=8.5,
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6,
                                  "alpha": 0.85})
