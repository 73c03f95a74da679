"""Trace files: the event trace of one seed, as JSON lines or as a Perfetto trace.

Formats (``iommusim run --trace-format``):

- ``jsonl.gz`` (the default): ``trace-<seed>.jsonl.gz``, one record per line
  (cycle, component, event, fields), gzip-compressed: a race trace is mostly
  repeated keys and addresses and shrinks about ten times.
- ``jsonl``: the same, uncompressed (``trace-<seed>.jsonl``), for grep and jq.
- ``perfetto``: ``trace-<seed>.perfetto.json.gz``, Chrome trace-event JSON that
  ui.perfetto.dev opens (``experiment.perfetto``).

Compressed files carry no name and no time in their gzip header, so the same run gives
the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..hwmodels.trace import TraceRecord

TRACE_FORMATS: dict[str, str] = {
    "jsonl.gz": ".jsonl.gz",
    "jsonl": ".jsonl",
    "perfetto": ".perfetto.json.gz",
}
"""Trace formats by name, with their file suffix."""
DEFAULT_TRACE_FORMAT = "jsonl.gz"
GZIP_LEVEL = 6  # 9 is three times slower for 3% less


def trace_name(seed: int, fmt: str) -> str:
    return f"trace-{seed}{TRACE_FORMATS[fmt]}"


def trace_formats(trace: bool | str | Sequence[str]) -> tuple[str, ...]:
    """``True`` is the default format, ``False`` none; a name or names as given."""
    if trace is True:
        return (DEFAULT_TRACE_FORMAT,)
    if not trace:
        return ()
    return (trace,) if isinstance(trace, str) else tuple(trace)


def iter_rows(records: Iterable[TraceRecord]) -> Iterator[dict[str, Any]]:
    """Trace records as the rows of a ``.jsonl`` trace: cycle, component, event, fields."""
    for rec in records:
        yield {"cycle": rec.cycle, "component": rec.component, "event": rec.event, **rec.fields}


def trace_rows(records: Iterable[TraceRecord]) -> list[dict[str, Any]]:
    return list(iter_rows(records))


@contextmanager
def open_write(path: Path) -> Iterator[IO[str]]:
    """A text file for writing, gzip-compressed (reproducibly) when the name ends in .gz."""
    if not path.name.endswith(".gz"):
        with path.open("w", encoding="utf-8") as f:
            yield f
        return
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                      compresslevel=GZIP_LEVEL) as zipped,
        io.TextIOWrapper(zipped, encoding="utf-8", newline="\n") as text,
    ):
        yield text


def write_trace(path: Path, records: Iterable[TraceRecord]) -> Path:
    """A JSON-lines trace (gzip-compressed when ``path`` ends in .gz)."""
    with open_write(path) as f:
        for row in iter_rows(records):
            f.write(json.dumps(row, default=str) + "\n")
    return path


def write_trace_as(path: Path, fmt: str, records: Sequence[TraceRecord], clock_ghz: float,
                   title: str = "") -> Path:
    """Write ``records`` to ``path`` in the trace format ``fmt``."""
    if fmt == "perfetto":
        from .perfetto import export

        doc = export(trace_rows(records), clock_ghz=clock_ghz, title=title)
        with open_write(path) as f:
            json.dump(doc, f, separators=(",", ":"), default=str)
        return path
    return write_trace(path, records)


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link when ``src`` is on the same file system (a journal beside the results
    directory), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_run_traces(folder: Path, run: Any, formats: Sequence[str], clock_ghz: float,
                     title: str = "") -> None:
    """The traces of one run in ``folder``: written from its records (a ``RunResult``), or
    linked from the files it was kept in (a ``StoredRun``)."""
    stored = getattr(run, "traces", None)
    for fmt in formats:
        dst = folder / trace_name(run.seed, fmt)
        if stored is not None and fmt in stored:
            link_or_copy(stored[fmt], dst)
        else:
            write_trace_as(dst, fmt, getattr(run, "trace", []), clock_ghz, title)
