"""Runs kept on disk: the journal of a run in progress, and runs read back from results
directories (for ``--resume`` and ``iommusim merge``).

While ``iommusim run --out DIR`` runs, every finished run is written at once to the
journal ``DIR.partial/`` beside DIR (its results.json entry and its traces, each file
complete before it is named). When the results directory is written the journal goes
away; after an interrupt (Ctrl-C, SIGTERM, a lost cluster) it stays, and
``--resume`` takes every run from it, and from DIR itself, that was made with the
same configuration: the same resolved scenario and hardware, sweep point and iommusim
version (their ``fingerprint``). A kept run is a ``StoredRun``: its results.json entry
and its trace files, which the results writer links instead of rewriting.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..errors import InputError, Problem
from ..scenarios.resolve import Experiment
from ..scenarios.schema import Expectation
from .assembly import RunResult
from .executors import Task
from .traces import trace_name, write_trace_as


@dataclass
class StoredRun:
    """One finished run on disk: its results.json entry and its trace files by format.
    Stands in for a ``RunResult`` wherever results are aggregated or written."""

    seed: int
    document: dict[str, Any]
    traces: dict[str, Path] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return self.document["metrics"]

    def to_json(self) -> dict[str, Any]:
        return self.document


@dataclass
class StoredScenario:
    """What the summary and the expectations need of a scenario read back from a file."""

    name: str
    expect: dict[str, Expectation]


@dataclass
class StoredExperiment:
    """A sweep point's experiment as a results directory holds it (``iommusim merge``
    has the results, not the scenario file): results.json and config.resolved.yaml."""

    document: dict[str, Any]
    resolved_yaml: Path

    @property
    def source(self) -> str:
        return self.document["source"]

    @property
    def scenario(self) -> StoredScenario:
        s = self.document["scenario"]
        return StoredScenario(s["name"], {k: Expectation.model_validate(v)
                                          for k, v in s.get("expect", {}).items()})

    @property
    def hardware_source(self) -> str:
        return str(self.document["scenario"].get("hardware", "hardware"))

    @property
    def clock_ghz(self) -> float:
        return float(self.document["hardware"].get("clock_ghz", 1.0))

    def resolved(self, mode: str = "json") -> dict[str, Any]:
        if mode == "python":  # integer keys kept, as config.resolved.yaml has them
            return yaml.safe_load(self.resolved_yaml.read_text())
        return {"scenario": self.document["scenario"], "hardware": self.document["hardware"]}


def fingerprint(scenario: Any, hardware: Any, values: dict[str, Any]) -> str:
    """What makes two runs of the same seed identical: the resolved configuration, the
    sweep point and the iommusim version (hashed)."""
    text = json.dumps({"scenario": scenario, "hardware": hardware, "sweep": values,
                       "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def experiment_fingerprint(exp: Experiment, values: dict[str, Any]) -> str:
    resolved = exp.resolved()
    # JSON round trip: the same value types as a results.json read back
    return fingerprint(*json.loads(json.dumps([resolved["scenario"], resolved["hardware"]])),
                       values)


def document_fingerprint(doc: dict[str, Any]) -> str:
    return fingerprint(doc.get("scenario"), doc.get("hardware"), doc.get("sweep") or {})


# --- reading results directories ------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError([Problem(str(path), None, "", f"not a readable results file ({exc})")
                          ]) from None


def point_documents(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The results.json documents of a results directory (one, or one per sweep point
    listed in index.json), each with its folder."""
    index = folder / "index.json"
    if index.exists():
        data = _read_json(index)
        points = data.get("points", []) if isinstance(data, dict) else []
        out = []
        for point in points:
            path = folder / str(point.get("results", ""))
            out.append((path.parent, _read_json(path)))
        return out
    if (folder / "results.json").exists():
        return [(folder, _read_json(folder / "results.json"))]
    return []


def stored_runs(folder: Path, doc: dict[str, Any], formats: Sequence[str]) -> list[StoredRun]:
    """The runs of one results.json, with their trace files in ``formats`` when there."""
    runs = []
    for entry in doc.get("runs", []):
        seed = entry["seed"]
        traces = {fmt: folder / trace_name(seed, fmt) for fmt in formats}
        runs.append(StoredRun(seed, entry, {f: p for f, p in traces.items() if p.exists()}))
    return runs


# --- the journal ----------------------------------------------------------------------------
class Journal:
    """Keeps every run of ``iommusim run --out DIR`` in ``DIR.partial`` as it finishes;
    with ``resume``, hands back the runs already made (there, or in DIR)."""

    def __init__(self, out: Path, points: Sequence[tuple[dict[str, Any], Experiment]],
                 formats: Sequence[str] = (), *, resume: bool = False) -> None:
        self.out = Path(os.path.abspath(out))
        self.dir = self.out.with_name(self.out.name + ".partial")
        self.points = list(points)
        self.fingerprints = [experiment_fingerprint(exp, values) for values, exp in points]
        self.formats = tuple(formats)
        self.resume = resume
        self.kept = 0  # runs written to the journal by this process
        self.reused = 0  # runs taken from earlier work (--resume)
        self._cleared = resume  # without --resume an old journal is stale: dropped first

    def stored(self, tasks: Iterable[Task]) -> dict[Task, StoredRun]:
        """The runs among ``tasks`` made before with the same configuration and with every
        trace format asked for (a run kept without its trace is made again)."""
        if not self.resume:
            return {}
        found: dict[Task, StoredRun] = {}
        point_of = {fp: i for i, fp in enumerate(self.fingerprints)}
        for folder, doc in point_documents(self.out) if self.out.is_dir() else []:
            i = point_of.get(document_fingerprint(doc))
            for run in stored_runs(folder, doc, self.formats) if i is not None else []:
                found[Task(i, run.seed)] = run
        for task, run in self._journal_runs(point_of):
            found[task] = run
        wanted = {t: r for t, r in found.items()
                  if t in set(tasks) and all(f in r.traces for f in self.formats)}
        self.reused = len(wanted)
        return wanted

    def _journal_runs(self, point_of: dict[str, int]) -> Iterable[tuple[Task, StoredRun]]:
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*/run-*.json")):
            try:
                entry = json.loads(path.read_text())
                i = point_of.get(path.parent.name)
                if i is None:
                    continue
                run = stored_runs(path.parent, {"runs": [entry]}, self.formats)[0]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not one of ours: ignored
            yield Task(i, run.seed), run

    def keep(self, task: Task, run: RunResult) -> StoredRun:
        """Write ``run`` (its entry and traces) to the journal; the run comes back as a
        ``StoredRun`` so its trace records can leave memory."""
        if not self._cleared:
            shutil.rmtree(self.dir, ignore_errors=True)
            self._cleared = True
        folder = self.dir / self.fingerprints[task.point]
        folder.mkdir(parents=True, exist_ok=True)
        exp = self.points[task.point][1]
        traces = {}
        for fmt in self.formats:
            path = folder / trace_name(run.seed, fmt)
            write_trace_as(path, fmt, run.trace, exp.hardware.clock_ghz, _label(exp, run.seed))
            traces[fmt] = path
        document = run.to_json()
        tmp = folder / f".run-{run.seed}.json.tmp"
        tmp.write_text(json.dumps(document))
        os.replace(tmp, folder / f"run-{run.seed}.json")  # complete before it is named
        self.kept += 1
        return StoredRun(run.seed, document, traces)

    def close(self) -> None:
        """The results directory is written: the journal is not needed any more."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def note(self) -> str:
        """For the interrupt message: where the finished runs are kept."""
        if not self.dir.is_dir():
            return ""
        n = len(list(self.dir.glob("*/run-*.json")))
        return f"{n} finished run(s) kept in {self.dir}; run again with --resume to go on"


def _label(exp: Experiment, seed: int) -> str:
    return f"{exp.scenario.name} seed {seed}"
