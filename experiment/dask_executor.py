"""The ``dask`` executor: runs on the workers of a Dask cluster (``iommusim[dask]``).

Connecting is bounded (``connect_timeout`` seconds) and happens on entering, before any
run, so an unreachable scheduler is one clear error (exit 2) and nothing is written.
Each sweep point's experiment is sent to the cluster once (scattered) and every task
names it and a seed; the workers must run the same iommusim version as this process,
which is checked on connecting (a different version could give different results).

Start a cluster on other machines with ``dask scheduler`` on one and
``dask worker tcp://SCHEDULER:8786`` on each of the others (README, "Sweeps on many
machines").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from .. import __version__
from ..errors import InputError, Problem
from ..scenarios.resolve import Experiment
from .assembly import RunResult, simulate
from .executors import ExecutorOptions, Task

INSTALL = "pip install 'iommusim[dask]'"


def _simulate(experiment: Experiment, seed: int, trace: bool) -> RunResult:
    return simulate(experiment, seed, trace=trace)


def _version() -> str:
    from iommusim import __version__ as version

    return version


def _problem(option: str, message: str) -> InputError:
    return InputError([Problem(option, None, "", message)])


class DaskExecutor:
    """Runs tasks on a Dask cluster: at ``options.scheduler``, or a local cluster of
    ``options.jobs`` worker processes when no scheduler is given."""

    def __init__(self, experiments: Sequence[Experiment], trace: bool,
                 options: ExecutorOptions) -> None:
        self.experiments = list(experiments)
        self.trace = trace
        self.options = options
        self._client: Any = None
        self._cluster: Any = None

    def __enter__(self) -> DaskExecutor:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise _problem("--executor", f"dask needs dask.distributed ({INSTALL})") from None
        address, timeout = self.options.scheduler, self.options.connect_timeout
        try:
            if address is None:
                self._cluster = LocalCluster(
                    n_workers=self.options.jobs, threads_per_worker=1, processes=True,
                    dashboard_address=None, silence_logs=logging.ERROR,
                )
                self._client = Client(self._cluster, timeout=timeout)
            else:
                self._client = Client(address, timeout=timeout)
        except (KeyboardInterrupt, InputError):
            self.__exit__()
            raise
        except BaseException as exc:  # unreachable, refused, a bad address, a non-Dask port
            self.__exit__()
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _problem("--scheduler", f"cannot reach the Dask scheduler at {address} "
                           f"within {timeout:g} s ({reason}); is `dask scheduler` running "
                           "there?") from None
        try:
            self._check_workers(address or "the local cluster", timeout)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _check_workers(self, where: str, timeout: float) -> None:
        client = self._client
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise _problem("--scheduler", f"no Dask worker joined {where} within {timeout:g} s "
                           f"(start one with: dask worker {where})") from None
        versions = client.run(_version)
        other = {w: v for w, v in versions.items() if v != __version__}
        if other:
            worker, version = next(iter(other.items()))
            raise _problem("--scheduler", f"the Dask worker {worker} runs iommusim {version}, "
                           f"this is {__version__}: install the same version on every worker")

    def __exit__(self, *exc: object) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            client.close(timeout=5)
        if cluster is not None:
            cluster.close(timeout=5)

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, RunResult]]:
        if not tasks:
            return
        from dask.distributed import as_completed

        client = self._client
        experiments = client.scatter(self.experiments, hash=False)
        tag = uuid.uuid4().hex[:8]
        futures = {}
        for task in tasks:
            future = client.submit(_simulate, experiments[task.point], task.seed, self.trace,
                                   key=f"iommusim-{tag}-{task.point}-{task.seed}", pure=False)
            futures[future] = task
        try:
            for future in as_completed(futures):
                result = future.result()
                task = futures.pop(future)
                future.release()
                yield task, result
        finally:
            if futures:
                client.cancel(list(futures))
