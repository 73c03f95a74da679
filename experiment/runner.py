"""Running experiments: one task list of (sweep point, seed), aggregates, expectations.

Every run is a task ``Task(point, seed)``; the tasks of every sweep point form one list,
so ``--jobs`` (or a Dask cluster, ``experiment.executors``) runs points side by side as
well as seeds. Runs come back in whatever order they finish and are put back in
(point, seed) order, which makes the results independent of the executor, the number of
workers and of sharding (``--shard K/N`` runs every N-th task). A sweep is the cross
product of its parameters' values; every point is an experiment of its own (resolved and
validated before anything runs). A ``Journal`` (``experiment.resume``) keeps every run
as it finishes, so an interrupted run can be resumed.
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
from ..scenarios.schema import Expectation
from ..scenarios.yamldoc import Override, YamlDoc
from .assembly import RunResult
from .executors import ExecutorOptions, Task, make_executor
from .load import load
from .resume import Journal, StoredExperiment, StoredRun
from .shards import Shard

Progress = Callable[[int, int], None]
Run = RunResult | StoredRun  # a run simulated here, or read back from a results directory


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

    experiment: Experiment | StoredExperiment
    values: dict[str, Any]  # the sweep values of this point ({} without a sweep)
    runs: list[Run]
    expectations: list[ExpectOutcome]
    index: int | None = None  # the point's place in the sweep (names point-NNN)

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.expectations)

    def aggregate(self) -> dict[str, dict[str, float]]:
        return aggregate(self.runs)


def aggregate(runs: Sequence[Run]) -> dict[str, dict[str, float]]:
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


def evaluate(exp: Experiment | StoredExperiment, runs: Sequence[Run]) -> list[ExpectOutcome]:
    return evaluate_expect(exp.scenario.expect, runs)


def evaluate_expect(expect: dict[str, Expectation], runs: Sequence[Run]) -> list[ExpectOutcome]:
    """Each ``expect:`` condition over the seeds of one point."""
    outcomes = []
    for name, expectation in expect.items():
        passed = [r.seed for r in runs if holds(expectation.condition, r.metrics[name])]
        failed = [r.seed for r in runs if r.seed not in passed]
        ok = len(passed) >= expectation.required(len(runs))
        outcomes.append(
            ExpectOutcome(name, expectation.condition, expectation.seeds, passed, failed, ok)
        )
    return outcomes


def plan(points: Sequence[tuple[dict[str, Any], Experiment]],
         seeds: Sequence[int] | None = None) -> list[Task]:
    """Every run of every point, in (point, seed) order: ``seeds``, or each point's own
    ``run.seeds``."""
    return [Task(i, seed) for i, (_, exp) in enumerate(points)
            for seed in (seeds if seeds is not None else exp.scenario.run.seeds)]


def run_tasks(
    experiments: Sequence[Experiment],
    tasks: Sequence[Task],
    *,
    executor: str = "local",
    options: ExecutorOptions | None = None,
    trace: bool = False,
    progress: Progress | None = None,
    journal: Journal | None = None,
) -> dict[Task, Run]:
    """Run ``tasks`` on the executor named ``executor``; with a ``journal``, every run is
    kept on disk as it finishes (and handed back as a ``StoredRun``)."""
    runs: dict[Task, Run] = {}
    if not tasks:
        return runs
    with make_executor(executor, experiments, trace=trace, options=options) as ex:
        for task, run in ex.run(tasks):
            runs[task] = journal.keep(task, run) if journal is not None else run
            if progress:
                progress(len(runs), len(tasks))
    return runs


def run_seeds(
    exp: Experiment,
    seeds: Sequence[int],
    *,
    jobs: int = 1,
    trace: bool = False,
    progress: Progress | None = None,
) -> list[RunResult]:
    """Simulate every seed of one experiment, in ``jobs`` processes; results in seed order."""
    runs = run_tasks([exp], [Task(0, s) for s in seeds], options=ExecutorOptions(jobs=jobs),
                     trace=trace, progress=progress)
    return [run for _, run in sorted(runs.items()) if isinstance(run, RunResult)]


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
    executor: str = "local",
    scheduler: str | None = None,
    connect_timeout: float = 10.0,
    shard: Shard | None = None,
    journal: Journal | None = None,
) -> list[PointResult]:
    """Run every point of a scenario (one without a sweep) with every seed."""
    return run_prepared(
        prepare(path, sets), seeds=seeds, jobs=jobs, trace=trace, progress=progress,
        executor=executor, scheduler=scheduler, connect_timeout=connect_timeout,
        shard=shard, journal=journal,
    )


def run_prepared(
    points: Sequence[tuple[dict[str, Any], Experiment]],
    *,
    seeds: Sequence[int] | None = None,
    jobs: int | None = None,
    trace: bool = False,
    progress: Progress | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    connect_timeout: float = 10.0,
    shard: Shard | None = None,
    journal: Journal | None = None,
) -> list[PointResult]:
    """Run the points ``prepare`` returned: one task list over every point and seed (or
    the ``shard``'s slice of it), less the runs the ``journal`` already holds
    (``--resume``). Points without a run in the shard are left out."""
    tasks = plan(points, seeds)
    if shard is not None:
        tasks = shard.select(tasks)
    runs: dict[Task, Run] = dict(journal.stored(tasks)) if journal is not None else {}
    todo = [t for t in tasks if t not in runs]
    options = ExecutorOptions(jobs=jobs if jobs is not None else (os.cpu_count() or 1),
                              scheduler=scheduler, connect_timeout=connect_timeout)
    runs.update(run_tasks([exp for _, exp in points], todo, executor=executor,
                          options=options, trace=trace, progress=progress, journal=journal))
    results = []
    for i, (values, exp) in enumerate(points):
        mine = [runs[t] for t in tasks if t.point == i]
        if mine:
            mine.sort(key=lambda r: r.seed)
            results.append(PointResult(exp, values, mine, evaluate(exp, mine), i))
    return results
