"""SIGTERM handled as Ctrl-C is: the same clean-up, one line, a conventional exit code.

Python turns SIGINT into ``KeyboardInterrupt`` but dies silently on SIGTERM, leaving
temporary directories and pool workers behind. While a command runs, SIGTERM raises
``Terminated`` (a ``KeyboardInterrupt``), so every ``finally`` and ``except
BaseException`` clean-up on the way out runs for both. ``main`` then prints one line
(the interrupted command may add a note: where its finished runs are kept) and exits
130 for SIGINT, 143 for SIGTERM (128 + the signal number, as a shell reports it). Pool
workers leave signals to the parent (``experiment.pool``), so a Ctrl-C to the whole
process group prints that one line and no worker traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as SIGINT raises KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` (main thread only: a handler can
    be set nowhere else)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def report_interrupt(exc: KeyboardInterrupt) -> int:
    """One line on stderr; the exit code (130 for SIGINT, 143 for SIGTERM)."""
    terminated = isinstance(exc, Terminated)
    notes = getattr(exc, "__notes__", [])
    text = "terminated" if terminated else "interrupted"
    print("iommusim: " + "; ".join([text, *notes]), file=sys.stderr, flush=True)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
