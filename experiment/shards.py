"""Shards: one slice of an experiment's runs, and joining the slices again.

``iommusim run --shard K/N`` runs every N-th task of the (sweep point, seed) list,
starting with the K-th, so N machines can each run one shard without any cluster. A
shard directory is an ordinary results directory holding its runs only (sweep points
keep their names, ``point-NNN``, by their place in the whole sweep) plus ``shard.json``,
which names the shard and lists every task of the whole experiment with the
fingerprint of every point. ``iommusim merge`` checks that the shards belong together
and cover every task, and writes the results directory the unsharded run would have
written (the same bytes, apart from the creation time).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..scenarios.resolve import Experiment
from .executors import Task
from .resume import (
    StoredExperiment,
    StoredRun,
    document_fingerprint,
    experiment_fingerprint,
    point_documents,
    stored_runs,
)
from .traces import TRACE_FORMATS

SHARD_SCHEMA = "iommusim.shard/1"
SHARD_FILE = "shard.json"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based, as written on the command line: 2/4)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N`` with 1 <= K <= N (ValueError with the reason otherwise)."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise ValueError(f"{text!r} is not K/N (for example 2/4)")
        k, n = int(m[1]), int(m[2])
        if n < 1 or not 1 <= k <= n:
            raise ValueError(f"shard {k}/{n}: K must be between 1 and N")
        return cls(k, n)

    def select(self, tasks: Sequence[Task]) -> list[Task]:
        """Every ``count``-th task from the ``index``-th: shards of equal size within one,
        each with a share of every sweep point."""
        if self.count > len(tasks):
            raise InputError([Problem("--shard", None, "", f"{self} leaves shards without "
                                      f"runs: the experiment has {len(tasks)} run(s)")])
        return list(tasks[self.index - 1 :: self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def manifest(shard: Shard, points: Sequence[tuple[dict[str, Any], Experiment]],
             tasks: Sequence[Task]) -> str:
    """shard.json: this shard, and every task and point of the whole experiment."""
    doc = {
        "schema": SHARD_SCHEMA,
        "shard": shard.index,
        "of": shard.count,
        "points": [{"values": values, "fingerprint": experiment_fingerprint(exp, values)}
                   for values, exp in points],
        "tasks": [[t.point, t.seed] for t in tasks],
    }
    return json.dumps(doc, indent=1) + "\n"


@dataclass
class _Shard:
    folder: Path
    doc: dict[str, Any]


def _problem(where: Path | str, message: str) -> InputError:
    return InputError([Problem(str(where), None, "", message)])


def _read_shard(folder: Path) -> _Shard:
    path = folder / SHARD_FILE
    if not folder.is_dir():
        raise _problem(folder, "no such directory")
    if not path.is_file():
        raise _problem(folder, f"not a shard directory (no {SHARD_FILE}; write one with "
                       "`iommusim run --shard K/N`)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _problem(path, f"not readable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SHARD_SCHEMA:
        raise _problem(path, f"not an iommusim shard file (schema {SHARD_SCHEMA!r})")
    return _Shard(folder, doc)


def _check_together(shards: list[_Shard]) -> None:
    first = shards[0]
    for other in shards[1:]:
        for key in ("of", "points", "tasks"):
            if other.doc.get(key) != first.doc.get(key):
                what = {"of": "shard count", "points": "configuration",
                        "tasks": "seeds"}[key]
                raise _problem(other.folder, f"not a shard of the same experiment as "
                               f"{first.folder} (its {what} differs)")
    seen: dict[int, Path] = {}
    for s in shards:
        k = s.doc["shard"]
        if k in seen:
            raise _problem(s.folder, f"shard {k}/{s.doc['of']} given twice (also {seen[k]})")
        seen[k] = s.folder
    missing = sorted(set(range(1, first.doc["of"] + 1)) - set(seen))
    if missing:
        names = ", ".join(f"{k}/{first.doc['of']}" for k in missing)
        raise _problem(first.folder, f"shard(s) {names} missing: merge needs all "
                       f"{first.doc['of']}")


def merge(folders: Sequence[Path]) -> tuple[list[Any], tuple[str, ...]]:
    """Join shard directories: the points (``runner.PointResult``) of the whole
    experiment and the trace formats every run has. InputError when the shards do not
    belong together or leave a run out."""
    from .runner import PointResult, evaluate

    shards = [_read_shard(Path(f)) for f in folders]
    _check_together(shards)
    prints = [p["fingerprint"] for p in shards[0].doc["points"]]
    point_of = {fp: i for i, fp in enumerate(prints)}
    docs: dict[int, tuple[Path, dict[str, Any]]] = {}
    runs: dict[Task, StoredRun] = {}
    for s in shards:
        for folder, doc in point_documents(s.folder):
            i = point_of.get(document_fingerprint(doc))
            if i is None:
                raise _problem(folder, "results that are not of this experiment")
            docs.setdefault(i, (folder, doc))
            for run in stored_runs(folder, doc, list(TRACE_FORMATS)):
                runs[Task(i, run.seed)] = run
    tasks = [Task(p, s) for p, s in shards[0].doc["tasks"]]
    lost = [t for t in tasks if t not in runs]
    if lost:
        t = lost[0]
        raise _problem(shards[0].folder, f"{len(lost)} run(s) missing from the shards, "
                       f"the first: point-{t.point:03d} seed {t.seed}")
    formats = tuple(f for f in TRACE_FORMATS if all(f in runs[t].traces for t in tasks))
    points = []
    for i in sorted(docs):
        folder, doc = docs[i]
        exp = StoredExperiment(doc, folder / "config.resolved.yaml")
        mine = sorted((runs[t] for t in tasks if t.point == i), key=lambda r: r.seed)
        points.append(PointResult(exp, dict(doc.get("sweep") or {}), list(mine),
                                  evaluate(exp, mine), i))
    return points, formats
