"""Where the runs of an experiment execute, chosen by name (as Ramulator 2 picks its parts).

Every executor gets the same task list, one ``Task(point, seed)`` per run of every sweep
point, and yields each run as it finishes, in whatever order. The runner sorts them, so
results do not depend on the executor, its number of workers or the order runs finish
in: one seed is one simulation, deterministic on its own.

- ``local`` (the default): a pool of ``jobs`` processes on this machine
  (``experiment.pool``); ``jobs`` 1 runs in this process.
- ``dask``: the workers of a Dask cluster (``experiment.dask_executor``), at
  ``scheduler`` (``tcp://host:8786``) or, without one, a local cluster of ``jobs``
  worker processes. ``dask.distributed`` is the optional extra ``iommusim[dask]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..errors import InputError, Problem, did_you_mean
from ..scenarios.resolve import Experiment
from .assembly import RunResult, simulate
from .pool import WorkerPool


class Task(NamedTuple):
    """One run: the seed ``seed`` of sweep point ``point`` (its index in the sweep)."""

    point: int
    seed: int


@dataclass(frozen=True)
class ExecutorOptions:
    """What the command line says about where to run."""

    jobs: int = 1
    scheduler: str | None = None  # a Dask scheduler address
    connect_timeout: float = 10.0  # seconds to reach the scheduler before giving up


class Executor(Protocol):
    """``with executor: for task, run in executor.run(tasks): ...``. Entering connects
    (so an unreachable cluster is reported before anything runs or is written)."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, RunResult]]: ...


# --- local: a process pool ----------------------------------------------------------------
_EXPERIMENTS: Sequence[Experiment] = ()
_TRACE = False


def _load(experiments: Sequence[Experiment], trace: bool) -> None:
    """Pool initializer: every worker holds the sweep's experiments once (inherited
    under fork), so a task is two integers instead of a pickled experiment."""
    global _EXPERIMENTS, _TRACE
    _EXPERIMENTS, _TRACE = experiments, trace


def _run_task(task: Task) -> tuple[Task, RunResult]:
    return task, simulate(_EXPERIMENTS[task.point], task.seed, trace=_TRACE)


class LocalPool:
    """``jobs`` worker processes on this machine (none when ``jobs`` is 1)."""

    def __init__(self, experiments: Sequence[Experiment], trace: bool,
                 options: ExecutorOptions) -> None:
        self.experiments = list(experiments)
        self.trace = trace
        self.jobs = options.jobs

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, RunResult]]:
        if not tasks:
            return
        with WorkerPool(min(self.jobs, len(tasks)), _load, (self.experiments, self.trace)) as pool:
            yield from pool.imap(_run_task, tasks, ordered=False)


# --- the registry ---------------------------------------------------------------------------
ExecutorFactory = Callable[[Sequence[Experiment], bool, ExecutorOptions], Executor]


def _dask(experiments: Sequence[Experiment], trace: bool,
          options: ExecutorOptions) -> Executor:
    from .dask_executor import DaskExecutor  # dask is optional: import it only when chosen

    return DaskExecutor(experiments, trace, options)


EXECUTORS: dict[str, ExecutorFactory] = {"local": LocalPool, "dask": _dask}
"""Executors by name (``iommusim run --executor NAME``)."""


def make_executor(name: str, experiments: Sequence[Experiment], *, trace: bool = False,
                  options: ExecutorOptions | None = None) -> Executor:
    """The executor called ``name`` (InputError naming the known ones otherwise)."""
    factory = EXECUTORS.get(name)
    if factory is None:
        known = ", ".join(EXECUTORS)
        raise InputError([Problem("--executor", None, "", f"no executor {name!r}"
                                  f"{did_you_mean(name, EXECUTORS)}; executors: {known}")])
    if name != "dask" and options is not None and options.scheduler is not None:
        raise InputError([Problem("--scheduler", None, "", "a scheduler address needs "
                                  "--executor dask")])
    return factory(experiments, trace, options or ExecutorOptions())
