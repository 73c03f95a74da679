"""Results directories: results.json, config.resolved.yaml, traces, sweep index.

Everything is written into a fresh temporary directory beside the target, which then
replaces the target, so an interrupted run leaves either the old results or the new
ones, never a truncated file.

Layout without a sweep::

    DIR/results.json  DIR/results.csv  DIR/config.resolved.yaml  [DIR/trace-<seed>.jsonl.gz]

With a sweep, one such set per point (results.csv only at the top) and an index::

    DIR/index.json  DIR/results.csv  DIR/point-000/...  DIR/point-001/...
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from .outdir import staging_dir, swap_in
from .pool import signals_blocked
from .resume import StoredExperiment
from .runner import PointResult
from .traces import (
    trace_formats,
    trace_rows,  # noqa: F401  (explore.replay and cli.replay take them from here)
    write_run_traces,
    write_trace,  # noqa: F401
)

RESULTS_SCHEMA = "iommusim.results/1"
INDEX_SCHEMA = "iommusim.sweep/1"


def results_document(point: PointResult) -> dict[str, Any]:
    exp = point.experiment
    resolved = exp.resolved()
    return {
        "schema": RESULTS_SCHEMA,
        "version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": exp.source,
        "scenario": resolved["scenario"],
        "hardware": resolved["hardware"],
        "sweep": point.values,
        "runs": [r.to_json() for r in point.runs],
        "aggregate": point.aggregate(),
        "expect": [
            {
                "metric": e.metric,
                "condition": e.condition,
                "seeds": e.seeds,
                "ok": e.ok,
                "failed_seeds": e.failed_seeds,
            }
            for e in point.expectations
        ],
    }


def _write_point(folder: Path, point: PointResult, trace: Sequence[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results_document(point), indent=1) + "\n")
    resolved = point.experiment.resolved(mode="python")
    (folder / "config.resolved.yaml").write_text(
        "# The configuration as run: presets, overrides and --set applied.\n"
        + yaml.safe_dump(resolved, sort_keys=False)
    )
    exp = point.experiment
    clock = exp.clock_ghz if isinstance(exp, StoredExperiment) else exp.hardware.clock_ghz
    for run in point.runs:
        write_run_traces(folder, run, trace, clock, f"{exp.scenario.name} seed {run.seed}")


TableInput = Sequence[tuple[dict[str, Any], Sequence[tuple[int, dict[str, float]]]]]


def results_table(points: TableInput) -> tuple[list[str], list[list[Any]]]:
    """The runs as one table: a row per (sweep point, seed), a column per sweep key,
    ``seed``, then every metric. ``points``: (sweep values, [(seed, metrics), ...]).
    ``results.csv`` and ``iommusim.Results.to_frame()`` are this table."""
    keys = list(points[0][0]) if points else []
    metrics: dict[str, None] = {}
    for _, runs in points:
        for _, values in runs:
            metrics.update(dict.fromkeys(values))
    rows = [[values.get(k) for k in keys] + [seed] + [m.get(name) for name in metrics]
            for values, runs in points for seed, m in runs]
    return [*keys, "seed", *metrics], rows


def _csv_cell(value: Any) -> Any:
    """Sweep values as they would be written in YAML flow style (true, [16, 64])."""
    if isinstance(value, bool | list | dict) or value is None:
        return json.dumps(value)
    return value


def write_table(path: Path, points: Sequence[PointResult]) -> Path:
    """``results.csv``: the results_table of ``points``."""
    columns, rows = results_table(
        [(p.values, [(r.seed, r.metrics) for r in p.runs]) for p in points])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([_csv_cell(c) for c in row] for row in rows)
    return path


def write_results(out: Path, points: list[PointResult], *,
                  trace: bool | str | Sequence[str] = False,
                  extra: dict[str, str] | None = None, force: bool = False) -> list[Path]:
    """Write the results directory; returns the results.json files written. ``trace``:
    the trace formats (``experiment.traces``; True for the default); ``extra``: more
    files at the top (a shard's shard.json). ``out`` must pass
    ``outdir.check_destination`` (checked before simulating, and again under a lock
    at the swap); ``force`` as there."""
    trace = trace_formats(trace)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out)  # with the .iommusim marker and the usual permissions
    try:
        if len(points) == 1 and not points[0].values:
            _write_point(tmp, points[0], trace)
            files = [out / "results.json"]
        else:
            index = {"schema": INDEX_SCHEMA, "parameters": list(points[0].values), "points": []}
            files = []
            for i, point in enumerate(points):
                name = f"point-{i if point.index is None else point.index:03d}"
                _write_point(tmp / name, point, trace)
                index["points"].append({"values": point.values, "results": f"{name}/results.json"})
                files.append(out / name / "results.json")
            (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        write_table(tmp / "results.csv", points)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
        with signals_blocked():  # Ctrl-C or SIGTERM wait for the two renames
            swap_in(tmp, out, force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files

