"""The one worker-pool helper: independent runs in ``jobs`` processes, or in this one.

Fork on Linux (workers inherit the loaded experiment), spawn elsewhere. ``ordered``
results come in the order of the inputs (explore consumes them in its enumeration
order); unordered ones as they finish (the runner sorts its seeds itself).
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class WorkerPool:
    """``with WorkerPool(jobs, init, args) as pool: pool.imap(fn, items)``; ``init(*args)``
    runs once in every worker (and here, when ``jobs`` is 1)."""

    def __init__(self, jobs: int, init: Callable[..., None] | None = None,
                 args: tuple[Any, ...] = ()) -> None:
        self.jobs = jobs
        self.init = init
        self.args = args
        self._pool: Any = None

    def __enter__(self) -> WorkerPool:
        if self.jobs > 1:
            ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            self._pool = ctx.Pool(self.jobs, initializer=self.init, initargs=self.args)
        elif self.init is not None:
            self.init(*self.args)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], *, ordered: bool = True,
             chunksize: int = 1) -> Iterator[Any]:
        if self._pool is None:
            yield from map(fn, items)
        elif ordered:
            yield from self._pool.imap(fn, items, chunksize=chunksize)
        else:
            yield from self._pool.imap_unordered(fn, items, chunksize=chunksize)
