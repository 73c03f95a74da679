"""Running experiments: seeds in parallel processes, aggregates, expectations, sweeps.

Seeds are independent simulations, so they run in worker processes (``jobs``); the
results are ordered by seed, which makes ``--jobs 2`` give exactly what ``--jobs 1``
gives. A sweep is the cross product of its parameters' values; every point is an
experiment of its own (resolved and validated before anything runs).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..scenarios.conditions import holds
from ..scenarios.resolve import Experiment
from ..scenarios.yamldoc import Override, YamlDoc
from .assembly import RunResult, simulate
from .load import load
from .pool import WorkerPool

Progress = Callable[[int, int], None]


@dataclass
class ExpectOutcome:
    metric: str
    condition: str
    seeds: str
    passed_seeds: list[int]
    failed_seeds: list[int]
    ok: bool


@dataclass
class PointResult:
    """All seeds of one experiment (one sweep point)."""

    experiment: Experiment
    values: dict[str, Any]  # the sweep values of this point ({} without a sweep)
    runs: list[RunResult]
    expectations: list[ExpectOutcome]

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.expectations)

    def aggregate(self) -> dict[str, dict[str, float]]:
        return aggregate(self.runs)


def aggregate(runs: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    """mean, min, max and sum of every metric over the seeds."""
    out: dict[str, dict[str, float]] = {}
    for name in runs[0].metrics:
        values = [r.metrics[name] for r in runs]
        out[name] = {
            "mean": sum(values) / len(values),
            "min": min(values),
            "max": max(values),
            "sum": sum(values),
        }
    return out


def evaluate(exp: Experiment, runs: Sequence[RunResult]) -> list[ExpectOutcome]:
    outcomes = []
    for name, expectation in exp.scenario.expect.items():
        passed = [r.seed for r in runs if holds(expectation.condition, r.metrics[name])]
        failed = [r.seed for r in runs if r.seed not in passed]
        ok = len(passed) >= expectation.required(len(runs))
        outcomes.append(
            ExpectOutcome(name, expectation.condition, expectation.seeds, passed, failed, ok)
        )
    return outcomes


def _simulate(args: tuple[Experiment, int, bool]) -> RunResult:
    exp, seed, trace = args
    return simulate(exp, seed, trace=trace)


def run_seeds(
    exp: Experiment,
    seeds: Sequence[int],
    *,
    jobs: int = 1,
    trace: bool = False,
    progress: Progress | None = None,
    done_before: int = 0,
    total: int | None = None,
) -> list[RunResult]:
    """Simulate every seed, in ``jobs`` processes; results in seed order."""
    total = total if total is not None else len(seeds)
    tasks = [(exp, seed, trace) for seed in seeds]
    results: list[RunResult] = []
    with WorkerPool(min(jobs, len(tasks))) as pool:
        for result in pool.imap(_simulate, tasks, ordered=False):
            results.append(result)
            if progress:
                progress(done_before + len(results), total)
    return sorted(results, key=lambda r: r.seed)


def sweep_points(exp: Experiment, path: Path) -> list[tuple[dict[str, Any], list[Override]]]:
    """Every combination of the sweep's values, as override lists (origin: the sweep key)."""
    sweep = exp.scenario.sweep
    if not sweep:
        return [({}, [])]
    doc = YamlDoc.read(path)
    keys = list(sweep)
    points = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        overrides = [
            Override(k, v, doc.source, doc.key_line(("sweep", k)), f"sweep.{k}")
            for k, v in values.items()
        ]
        points.append((values, overrides))
    return points


def prepare(path: Path, sets: Sequence[str]) -> list[tuple[dict[str, Any], Experiment]]:
    """Resolve and validate the experiment and every sweep point before running any."""
    base = load(path, sets)
    prepared = []
    problems = []
    for values, overrides in sweep_points(base, path):
        try:
            exp = base if not overrides else load(path, [*sets, *overrides])
        except InputError as exc:
            problems += exc.problems
            continue
        prepared.append((values, exp))
    if problems:
        raise InputError(problems)
    return prepared


def run_experiment(
    path: Path,
    sets: Sequence[str] = (),
    *,
    seeds: Sequence[int] | None = None,
    jobs: int | None = None,
    trace: bool = False,
    progress: Progress | None = None,
) -> list[PointResult]:
    """Run every point of a scenario (one without a sweep) with every seed."""
    points = prepare(path, sets)
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    per_point = [seeds if seeds is not None else exp.scenario.run.seeds for _, exp in points]
    total = sum(len(s) for s in per_point)
    results = []
    done = 0
    for (values, exp), point_seeds in zip(points, per_point, strict=True):
        runs = run_seeds(
            exp, point_seeds, jobs=jobs, trace=trace, progress=progress,
            done_before=done, total=total,
        )
        done += len(runs)
        results.append(PointResult(exp, values, runs, evaluate(exp, runs)))
    return results
