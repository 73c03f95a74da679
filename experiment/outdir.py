"""Where results may be written: iommusim replaces only directories it wrote itself.

A results directory is written whole into a fresh directory beside its destination and
then swapped in (``results.write_results``). A swap replaces what was there, so the
destination is checked first, before anything simulates:

- a path that does not exist (its first existing ancestor must be a writable
  directory) or an empty directory: fine;
- a directory iommusim wrote (its ``.iommusim`` marker, or a ``results.json``,
  ``index.json`` or ``explore.json`` with an iommusim schema tag) that holds only what
  iommusim writes: replaced;
- such a directory that also holds other files (notes added by hand): refused unless
  ``--force``;
- anything else -- a file, a directory iommusim did not write, the current directory or
  one containing it: refused, ``--force`` or not.

Several runs may write into one destination at once: a run holds a lock named after its
destination while it runs (``DestinationLock``), so a second one waits for the first
instead of sharing its journal; and each swap holds an exclusive lock on the
destination's parent directory (``flock``; no lock file is left behind), checks the
destination again, and renames.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem

try:
    import fcntl
except ImportError:  # not POSIX: swaps are not serialised
    fcntl = None  # type: ignore[assignment]

MARKER = ".iommusim"
MARKER_TEXT = ("This directory was written by iommusim. `iommusim run --out` and "
               "`iommusim explore --out` may replace it as a whole.\n")
SCHEMA_TAG = re.compile(rb'"schema":\s*"iommusim\.(results|sweep|explore)/')
# What iommusim writes into a results or explore directory (and its sweep points).
OWN_NAMES = re.compile(
    r"(\.iommusim|results\.json|results\.csv|config\.resolved\.yaml|index\.json|shard\.json"
    r"|trace-\d+\.[a-z.]+|explore\.json|explored\.jsonl|[^/]+\.replay\.json"
    r"|[^/]+\.trace\.jsonl|[^/]+\.(png|svg)|point-\d+)"
)


def is_iommusim_dir(folder: Path) -> bool:
    """The marker, or a results / sweep index / explore summary with iommusim's tag."""
    if (folder / MARKER).is_file():
        return True
    for name in ("results.json", "index.json", "explore.json"):
        try:
            with (folder / name).open("rb") as f:
                head = f.read(4096)
        except OSError:
            continue
        if SCHEMA_TAG.search(head):
            return True
    return False


def foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` (and its point-NNN folders) iommusim would not have written."""
    out = []
    for entry in sorted(folder.iterdir()):
        if not OWN_NAMES.fullmatch(entry.name):
            out.append(entry.name)
        elif entry.name.startswith("point-"):
            if not entry.is_dir():
                out.append(entry.name)
            else:
                out += [f"{entry.name}/{n}" for n in foreign_entries(entry)]
    return out


def _names(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def destination_problem(out: Path, *, force: bool = False) -> str | None:
    """Why ``out`` may not be (re)written as a results directory, or None."""
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        return (f"{out} is the current directory or contains it; name a new directory "
                "for the results")
    if target.exists():
        if not target.is_dir():
            return f"{out} is a file, not a results directory; name a new directory"
        try:
            entries = sorted(p.name for p in target.iterdir())
        except OSError as exc:
            return f"cannot list {out}: {exc.strerror}"
        if entries and not is_iommusim_dir(target):
            return (f"{out} is a directory iommusim did not write (it holds "
                    f"{_names(entries)}); iommusim replaces only its own results "
                    "directories: name a new or empty directory")
        foreign = foreign_entries(target) if entries else []
        if foreign and not force:
            return (f"{out} holds files iommusim did not write ({_names(foreign)}); move "
                    "them away, or replace the directory anyway with --force")
        parent = target.parent
    else:
        parent = target.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            return f"cannot create {out}: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write {out}: {parent} is not writable"
    return None


def check_destination(out: Path, *, force: bool = False, option: str = "--out") -> None:
    """InputError (exit 2) if ``out`` may not be written; call before simulating."""
    problem = destination_problem(out, force=force)
    if problem is not None:
        raise InputError([Problem(option, None, "", problem)])


def staging_dir(out: Path) -> Path:
    """A fresh hidden directory beside ``out`` (same file system, so the swap is a
    rename), created with the usual permissions (umask), not mkdtemp's 0700."""
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        (tmp / MARKER).write_text(MARKER_TEXT)
        return tmp


@contextlib.contextmanager
def parent_locked(out: Path) -> Iterator[None]:
    """An exclusive lock on ``out``'s parent directory (released when the fd closes)."""
    if fcntl is None:
        yield
        return
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def swap_in(new: Path, out: Path, *, force: bool = False) -> None:
    """Replace ``out`` by ``new`` under the parent's lock, checking ``out`` again: a
    concurrent run may have swapped its own results in meanwhile (replaced, as any
    iommusim directory), or something else may have appeared there (refused)."""
    with parent_locked(out):
        problem = destination_problem(out, force=force)
        if problem is not None:
            raise InputError([Problem("--out", None, "", problem)])
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
            os.replace(out, old)
        os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class DestinationLock:
    """Held while a run writes toward ``out`` (its journal, its results): a second run
    into the same ``out`` waits for the first instead of sharing its journal. An
    abstract-namespace socket named after the path (Linux): nothing on disk, released
    when the process ends however it ends. Elsewhere, no lock (runs into one ``out``
    then share the journal, and only the final swap is serialised)."""

    def __init__(self, out: Path, wait: float = 0.2, say: Any = None) -> None:
        self.sock: socket.socket | None = None
        if not sys.platform.startswith("linux"):
            return
        name = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:40]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        told = False
        while True:
            try:
                sock.bind(f"\0iommusim-out-{name}")
                break
            except OSError:
                if not told and say is not None:
                    say(f"iommusim: waiting for another run writing {out}")
                    told = True
                time.sleep(wait)
        self.sock = sock

    def release(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __del__(self) -> None:
        self.release()


@contextlib.contextmanager
def staged(out: Path, *, force: bool = False) -> Iterator[Path]:
    """``with staged(out) as tmp:`` write into ``tmp``; on success it replaces ``out``,
    on any error (or Ctrl-C) it is removed and ``out`` is untouched."""
    out = out.resolve()
    tmp = staging_dir(out)
    try:
        yield tmp
        swap_in(tmp, out, force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
