"""``iommusim trace export``: a JSON-lines trace as a Perfetto (Chrome trace-event) trace.

``iommusim run --trace-format perfetto`` writes the Perfetto trace while it runs; this
command converts a trace written before (``trace-<seed>.jsonl`` or ``.jsonl.gz``). The
clock rate shown in the process names is read from the results.json beside the trace.
"""

from __future__ import annotations

import argparse
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

from ..errors import check_output_file
from ..experiment.perfetto import export
from ..experiment.traces import open_write
from ..plots.data import load_trace, trace_seed


def add_parser(sub: Any) -> None:
    p = sub.add_parser("trace", help="convert traces (to Perfetto)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    e = verbs.add_parser("export", help="write a trace as Perfetto / Chrome trace-event JSON",
                         description="Write a trace-<seed>.jsonl(.gz) as Chrome trace-event "
                         "JSON that ui.perfetto.dev opens (gzip-compressed when OUT ends in "
                         ".gz; Perfetto reads both).")
    e.add_argument("trace", metavar="TRACE", help="a trace-<seed>.jsonl or .jsonl.gz file")
    e.add_argument("-o", "--output", metavar="OUT",
                   help="default: trace-<seed>.perfetto.json.gz beside TRACE")
    e.set_defaults(func=export_command)


def _clock(trace: Path) -> float | None:
    """The clock of the run, from the results.json beside the trace (None if not there)."""
    try:
        doc = json.loads((trace.parent / "results.json").read_text())
        return float(doc["hardware"]["clock_ghz"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def export_command(args: argparse.Namespace) -> int:
    path = Path(args.trace)
    out = Path(args.output) if args.output else path.with_name(
        f"trace-{trace_seed(path)}.perfetto.json.gz")
    check_output_file(out, "-o", _is_export)  # replaces only an export iommusim wrote
    rows = load_trace(path)
    doc = export(rows, clock_ghz=_clock(path), title=path.name)
    with open_write(out) as f:
        json.dump(doc, f, separators=(",", ":"), default=str)
    slices = sum(1 for e in doc["traceEvents"] if e["ph"] == "X")
    flows = sum(1 for e in doc["traceEvents"] if e["ph"] == "s")
    print(f"{out}: {slices:,} slices, {flows:,} flow arrows (open it in ui.perfetto.dev)")
    return 0


def _is_export(path: Path) -> bool:
    """A trace-event file ``trace export`` wrote: its JSON ends with iommusim's
    ``otherData`` (read as a stream, gzip or not, keeping only the last bytes)."""
    tail = b""
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")) as f:
            while chunk := f.read(1 << 20):
                tail = (tail + chunk)[-4096:]
    except (OSError, EOFError, zlib.error):
        return False
    return b'"generator":"iommusim"' in tail
