"""The one worker-pool helper: independent runs in ``jobs`` processes, or in this one.

Fork on Linux (workers inherit the loaded experiment), spawn elsewhere. ``ordered``
results come in the order of the inputs (explore consumes them in its enumeration
order); unordered ones as they finish (the runner sorts its runs itself).

Signals belong to the parent: a worker ignores SIGINT (Ctrl-C reaches the whole process
group, and the parent alone reports it, in one line) and dies silently on SIGTERM (the
parent's ``terminate`` on the way out, or a ``kill`` of the group). SIGINT and SIGTERM
are blocked while the workers are forked, so none can arrive between the fork and the
worker's own handlers (it would print a worker traceback).
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
TERMINATE_WAIT = 5.0  # seconds the pool's own clean-up may take after an interrupt


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (then they are delivered): for
    forking workers, and for the few steps that must not stop half-way (the final
    swap of a results directory)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _start_worker(init: Callable[..., None] | None, args: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if init is not None:
        init(*args)


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
            with signals_blocked():  # the pool's threads inherit the mask too: fine
                self._pool = ctx.Pool(self.jobs, initializer=_start_worker,
                                      initargs=(self.init, self.args))
        elif self.init is not None:
            self.init(*self.args)
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kind is None:  # every result is in: the workers wait idle for the end
            pool.terminate()
            pool.join()
            return
        # Interrupted (Ctrl-C, SIGTERM, an error): a worker killed mid-send can leave the
        # pool's shared queue locks held for ever, and Pool.terminate would wait on them.
        # Kill the workers here, and give terminate a few seconds in a daemon thread.
        for worker in list(getattr(pool, "_pool", [])):
            if worker.exitcode is None:
                worker.kill()
        closing = threading.Thread(target=pool.terminate, daemon=True)
        closing.start()
        closing.join(TERMINATE_WAIT)

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], *, ordered: bool = True,
             chunksize: int = 1) -> Iterator[Any]:
        if self._pool is None:
            yield from map(fn, items)
        elif ordered:
            yield from self._pool.imap(fn, items, chunksize=chunksize)
        else:
            yield from self._pool.imap_unordered(fn, items, chunksize=chunksize)
