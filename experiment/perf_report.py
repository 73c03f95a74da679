"""What ``iommusim perf`` prints and writes: the kernel's table, perf.json/.csv, a figure.

The printed table keeps the layout of kunit_iommu_perf.h's report (``map_pages`` and
``unmap_pages`` sections, ``pgsz, avg new,old ns, min new,old ns, min %``). One
difference: the kernel prints min % as ``%lld.%02llu`` of an integer percent and its
absolute value modulo 100, so its "79.79" means 79 %; here the two decimals are real.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from .perf import Row

COLUMNS = [f.name for f in fields(Row)]
BANNER = "   pgsz  ,avg new,old ns, min new,old ns  , min % (+ve is better)"


def table_lines(rows: Sequence[Row]) -> list[str]:
    """The kernel's report for the rows of one pair (map section, then unmap)."""
    if not rows:
        return []
    first = rows[0]
    lines = [f"{first.format} (new) vs {first.old} (old), {first.walker} walker"]
    for op, title in (("map", "map_pages"), ("unmap", "unmap_pages")):
        lines += ["", f"{title} ", BANNER]
        for r in rows:
            if r.op == op:
                lines.append(
                    f"{r.case:>9s},{round(r.avg_new_ns):7d},{round(r.avg_old_ns):<6d},"
                    f"{round(r.min_new_ns):8d},{round(r.min_old_ns):<8d}, {r.min_pct:6.2f}"
                )
    return lines


def report_text(rows: Sequence[Row]) -> str:
    """Every pair's table, in the order the pairs ran."""
    pairs: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        pairs.setdefault((r.format, r.old), []).append(r)
    blocks = ["\n".join(table_lines(group)) for group in pairs.values()]
    return "\n\n".join(blocks) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(rows: Sequence[Row], path: Path) -> None:
    _atomic_write(path, json.dumps([asdict(r) for r in rows], indent=1) + "\n")


def write_csv(rows: Sequence[Row], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow(asdict(r))
    os.replace(tmp, path)


def write_figure(rows: Sequence[Row], path: Path, title: str) -> None:
    """min % per case, map and unmap side by side, one panel per pair."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pairs: dict[str, list[Row]] = {}
    for r in rows:
        pairs.setdefault(f"{r.format} vs {r.old}", []).append(r)
    fig = Figure(figsize=(4.2 * max(1, len(pairs)), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(pairs)), squeeze=False)[0]
    for ax, (name, group) in zip(axes, pairs.items(), strict=False):
        cases = list(dict.fromkeys(r.case for r in group))
        x = range(len(cases))
        for offset, op in ((-0.2, "map"), (0.2, "unmap")):
            pct = {r.case: r.min_pct for r in group if r.op == op}
            ax.bar([i + offset for i in x], [pct.get(c, 0.0) for c in cases], 0.4, label=op)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(list(x), cases, rotation=90, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("min % (old - new) / old, + = new faster")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def write_outputs(rows: Sequence[Row], out: Path, title: str) -> list[Path]:
    """perf.json, perf.csv and perf.png in ``out`` (which must exist)."""
    paths = [out / "perf.json", out / "perf.csv", out / "perf.png"]
    write_json(rows, paths[0])
    write_csv(rows, paths[1])
    write_figure(rows, paths[2], title)
    return paths
