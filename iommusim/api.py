"""The Python API: run a scenario or read a results directory, get a table.

    import iommusim
    res = iommusim.run("shared-level-flush", seeds=4, set={"cpu.jitter": 0})
    res.aggregate["dma.faults"]["mean"]
    df = res.to_frame()          # pandas (pip install 'iommusim[frame]')
    again = iommusim.load("results/shared-level-flush")

``run`` goes through the same loading, validation and runner as ``iommusim run``
(bad input raises ``iommusim.InputError`` listing every problem), and ``Results`` is
built from the same documents as ``results.json``, so a run in memory and one read back
from disk give the same table.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, Problem

RESULTS_SCHEMA = "iommusim.results/1"
SWEEP_SCHEMA = "iommusim.sweep/1"


@dataclass(frozen=True)
class Run:
    """One seed of one sweep point, as ``results.json`` holds it."""

    values: dict[str, Any]  # the sweep point ({} without a sweep)
    seed: int
    metrics: dict[str, float]
    faults: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    stats: dict[str, dict[str, float]]
    distributions: dict[str, Any]


@dataclass(frozen=True)
class Point:
    """Every seed of one sweep point: its results.json document, parsed."""

    document: dict[str, Any]

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.document.get("sweep") or {})

    @property
    def runs(self) -> list[Run]:
        return [Run(self.values, r["seed"], r["metrics"], r.get("faults", []),
                    r.get("incidents", []), r.get("stats", {}), r.get("distributions", {}))
                for r in self.document["runs"]]

    @property
    def aggregate(self) -> dict[str, dict[str, float]]:
        """mean, min, max and sum over the seeds of every metric."""
        return self.document["aggregate"]

    @property
    def expectations(self) -> list[dict[str, Any]]:
        return self.document.get("expect", [])

    @property
    def ok(self) -> bool:
        return all(e["ok"] for e in self.expectations)


class Results:
    """The results of a scenario: its sweep points, every run, their table."""

    def __init__(self, documents: Sequence[dict[str, Any]], path: Path | None = None) -> None:
        if not documents:
            raise ValueError("results need at least one point")
        self.points = [Point(d) for d in documents]
        self.path = path  # the results directory, when there is one

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return (f"<Results {self.name}: {len(self.points)} point(s), "
                f"{len(self.runs)} run(s){where}>")

    @property
    def name(self) -> str:
        return self.points[0].document["scenario"]["name"]

    @property
    def parameters(self) -> list[str]:
        """The swept keys ([] without a sweep)."""
        return list(self.points[0].values)

    @property
    def runs(self) -> list[Run]:
        """Every run, point by point, seed by seed."""
        return [run for point in self.points for run in point.runs]

    @property
    def aggregate(self) -> dict[str, dict[str, float]]:
        """mean/min/max/sum over the seeds of every metric. A sweep has one per point:
        ``results.points[i].aggregate``, or group ``to_frame()``."""
        if len(self.points) > 1:
            raise ValueError(f"{self.name} is a sweep of {len(self.points)} points: use "
                             "results.points[i].aggregate or to_frame()")
        return self.points[0].aggregate

    @property
    def ok(self) -> bool:
        """Every expectation held at every point."""
        return all(p.ok for p in self.points)

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """(columns, rows): a row per (sweep point, seed); the sweep keys, ``seed`` and
        every metric as columns -- the table of ``results.csv``."""
        from .experiment.results import results_table

        return results_table([(p.values, [(r.seed, r.metrics) for r in p.runs])
                              for p in self.points])

    def to_frame(self) -> Any:
        """The table as a pandas DataFrame (needs the ``frame`` extra)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_frame() needs pandas: pip install 'iommusim[frame]'") from None
        columns, rows = self.table()
        return pd.DataFrame(rows, columns=columns)


def _scenario_path(scenario: str | Path | Mapping[str, Any], tmp: Path) -> Path:
    """A file path for a path, a catalog name or a scenario written as a dict (saved
    under ``tmp``; a relative ``hardware:`` path is taken from the current directory)."""
    from .scenarios.resolve import find_hardware, find_scenario

    if isinstance(scenario, Mapping):
        data = dict(scenario)
        hw = data.get("hardware")
        if isinstance(hw, str) and ("/" in hw or hw.endswith((".yaml", ".yml"))):
            data["hardware"] = str(find_hardware(hw, Path.cwd()).resolve())
        name = str(data.get("name") or "scenario")
        safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)
        path = tmp / f"{safe}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path
    return find_scenario(str(scenario))


def _overrides(set: Mapping[str, Any] | Sequence[str] | None) -> list[Any]:
    """``{"cpu.jitter": 0}`` or ``["cpu.jitter=0"]`` as the runner's overrides."""
    from .scenarios.yamldoc import Override

    if set is None:
        return []
    if isinstance(set, str):
        return [set]
    if isinstance(set, Mapping):
        return [Override(str(k), v, "set=", None, f"{k}={v!r}") for k, v in set.items()]
    return list(set)


def _seeds(seeds: int | Sequence[int] | None) -> list[int] | None:
    if seeds is None:
        return None
    if isinstance(seeds, int):
        if seeds < 1:
            raise InputError([Problem("seeds=", None, "", f"must be at least 1, got {seeds}")])
        return list(range(1, seeds + 1))
    return list(seeds)


def run(scenario: str | Path | Mapping[str, Any], *, seeds: int | Sequence[int] | None = None,
        set: Mapping[str, Any] | Sequence[str] | None = None, jobs: int = 1,
        out: str | Path | None = None, trace: bool = False) -> Results:
    """Run every point and seed of a scenario and return its results.

    ``scenario``: a file path, a catalog name, or the scenario as a dict (what the
    YAML file would hold). ``seeds``: N for seeds 1..N, or a list (default: the
    scenario's ``run.seeds``). ``set``: key paths and values, as ``--set`` takes them
    (a dict, or ``"KEY=VALUE"`` strings). ``jobs``: worker processes. ``out``: also
    write the results directory there (results.json, results.csv, ...), as
    ``iommusim run --out`` does."""
    from .experiment.results import results_document, write_results
    from .experiment.runner import run_experiment

    with tempfile.TemporaryDirectory(prefix="iommusim-") as tmp:
        path = _scenario_path(scenario, Path(tmp))
        points = run_experiment(path, _overrides(set), seeds=_seeds(seeds), jobs=jobs,
                                trace=trace)
        written = None
        if out is not None:
            write_results(Path(out), points, trace=trace)
            written = Path(out).resolve()
        return Results([results_document(p) for p in points], written)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError([Problem(str(path), None, "", "no such file")]) from None
    except json.JSONDecodeError as exc:
        raise InputError([Problem(str(path), exc.lineno, "", f"not valid JSON: {exc.msg}")]
                         ) from None


def load(path: str | Path) -> Results:
    """Read a results directory (``results.json``, or a sweep's ``index.json`` and its
    points) back as ``Results``."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if (folder / "index.json").exists():
        index = _read(folder / "index.json")
        if index.get("schema") != SWEEP_SCHEMA:
            raise InputError([Problem(str(folder / "index.json"), None, "",
                                      f"not an iommusim sweep index ({SWEEP_SCHEMA})")])
        docs = [_read(folder / p["results"]) for p in index["points"]]
    elif (folder / "results.json").exists():
        docs = [_read(folder / "results.json")]
    else:
        raise InputError([Problem(str(folder), None, "", "no results.json or index.json here: "
                                  "not a results directory")])
    for doc in docs:
        if doc.get("schema") != RESULTS_SCHEMA:
            raise InputError([Problem(str(folder), None, "",
                                      f"not an iommusim results file ({RESULTS_SCHEMA})")])
    return Results(docs, folder.resolve())
