"""What the commands share: argument types, YAML output, the one progress printer."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml

from ..errors import InputError, Problem
from ..scenarios.schema import MAX_SEED, MAX_SEEDS

Progress = Callable[[int, int], None]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def seed_count(text: str) -> int:
    """``--seeds N``: 1 <= N <= MAX_SEEDS (a bigger N would build a list of runs that
    does not fit in memory, or never ends)."""
    value = positive_int(text)
    if value > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SEEDS:,} seeds, got {value:,}")
    return value


def seed_value(text: str) -> int:
    """``--seed S``: 0 <= S <= MAX_SEED (a signed 64-bit integer)."""
    value = nonneg_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is at most {MAX_SEED:,}, got {value:,}")
    return value


SET_HELP = "override a hardware or scenario key (repeatable)"


def add_set(p: argparse.ArgumentParser, text: str | None = SET_HELP) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=text)


def dump_yaml(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def progress_printer(quiet: bool, *, bar: bool = True, lines: bool = True) -> Progress | None:
    """Progress of ``done``/``total`` runs on stderr: a bar (or a counter without
    ``bar``) on a terminal; elsewhere a line per tenth of the work, or nothing without
    ``lines`` (the explorer's runs are too many to log)."""
    if quiet:
        return None
    tty = sys.stderr.isatty()
    if not tty and not lines:
        return None

    def show(done: int, total: int) -> None:
        if tty and bar:
            filled = 30 * done // total
            end = "\n" if done == total else ""
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} runs", end=end,
                  file=sys.stderr, flush=True)
        elif tty:
            print(f"\r{done}/{total} runs", end="", file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"{done}/{total} runs", file=sys.stderr, flush=True)

    return show


class PipeSafeStdout:
    """Stands in for ``sys.stdout`` while a command runs. When the reader goes away
    (``iommusim run ... | head -2``), the write or flush that meets the closed pipe is
    dropped, later output too, and fd 1 is pointed at /dev/null so the interpreter's
    last flush stays quiet: the command finishes its work and returns its own exit
    code (1 for a failed expectation), not 0 or 120."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self.gone = True
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def pipe_safe_stdout() -> Iterator[PipeSafeStdout]:
    """``sys.stdout`` wrapped in PipeSafeStdout, flushed and restored at the end."""
    wrapper = PipeSafeStdout(sys.stdout)
    sys.stdout = wrapper  # type: ignore[assignment]
    try:
        yield wrapper
    finally:
        wrapper.flush()
        sys.stdout = wrapper.stream


# --- files a command writes --------------------------------------------------------------
def check_output_dir(folder: Path, option: str) -> None:
    """InputError unless files may be put into ``folder``: a directory, or a path whose
    first existing ancestor is a writable directory (it will be created)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == folder else f"cannot be created: {existing} is a file"
        raise InputError([Problem(option, None, "", f"{folder} {what}")])
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError([Problem(option, None, "", f"{folder}: {existing} is not writable")])


def write_text_atomic(path: Path, text: str) -> Path:
    """Write via a hidden file beside ``path`` and a rename: never half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def starts_with_json_record(path: Path, keys: set[str]) -> bool:
    """The file's first line is a JSON object with ``keys`` (how iommusim's JSON and
    JSONL outputs are recognised)."""
    try:
        with path.open("rb") as f:
            first = f.readline(1 << 20)
        record = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and keys <= record.keys()
