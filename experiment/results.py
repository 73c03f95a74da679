"""Results directories: results.json, config.resolved.yaml, traces, sweep index.

Everything is written into a fresh temporary directory beside the target, which then
replaces the target, so an interrupted run leaves either the old results or the new
ones, never a truncated file.

Layout without a sweep::

    DIR/results.json  DIR/config.resolved.yaml  [DIR/trace-<seed>.jsonl]

With a sweep, one such set per point and an index::

    DIR/index.json  DIR/point-000/...  DIR/point-001/...
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..hwmodels.trace import TraceRecord
from .runner import PointResult

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


def _write_point(folder: Path, point: PointResult, trace: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results_document(point), indent=1) + "\n")
    resolved = point.experiment.resolved(mode="python")
    (folder / "config.resolved.yaml").write_text(
        "# The configuration as run: presets, overrides and --set applied.\n"
        + yaml.safe_dump(resolved, sort_keys=False)
    )
    if trace:
        for run in point.runs:
            write_trace(folder / f"trace-{run.seed}.jsonl", run.trace)


def trace_rows(records: Sequence[TraceRecord]) -> list[dict[str, Any]]:
    """Trace records as the rows of a ``.jsonl`` trace: cycle, component, event, fields."""
    return [
        {"cycle": rec.cycle, "component": rec.component, "event": rec.event, **rec.fields}
        for rec in records
    ]


def write_trace(path: Path, records: Sequence[TraceRecord]) -> Path:
    with path.open("w") as f:
        for row in trace_rows(records):
            f.write(json.dumps(row, default=str) + "\n")
    return path


def write_results(out: Path, points: list[PointResult], *, trace: bool = False) -> list[Path]:
    """Write the results directory; returns the results.json files written."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if len(points) == 1 and not points[0].values:
            _write_point(tmp, points[0], trace)
            files = [out / "results.json"]
        else:
            index = {"schema": INDEX_SCHEMA, "parameters": list(points[0].values), "points": []}
            files = []
            for i, point in enumerate(points):
                name = f"point-{i:03d}"
                _write_point(tmp / name, point, trace)
                index["points"].append({"values": point.values, "results": f"{name}/results.json"})
                files.append(out / name / "results.json")
            (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _swap(new: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
