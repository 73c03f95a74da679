"""Writing figures: by file extension (PNG or SVG), atomically, and the standard set that
``iommusim run --plot`` puts next to results.json; ``iommusim plot`` itself."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from ..errors import InputError, Problem
from .data import load_results, load_sweep, load_trace, trace_files
from .flushes import flush_figure
from .kinds import KINDS
from .latency import dma_latency_figure
from .ops import op_cost_figure
from .reach import reach_figure
from .style import SAVE_RC
from .sweep import Meaning, sweep_figure
from .timeline import parse_window, timeline_figure

FORMATS = {".png": "png", ".svg": "svg"}

DPI = 130


def check_output(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError([Problem(str(path), None, "-o", "the figure file must end in .png or "
                                  ".svg")])
    if not path.parent.exists() and str(path.parent):
        raise InputError([Problem(str(path), None, "-o", f"no such directory: {path.parent}")])
    return path


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG or SVG (by extension) via a temporary file, so a failure
    leaves no partial figure behind."""
    path = check_output(path)
    fmt = FORMATS[path.suffix.lower()]
    # a hidden name beside the target (same file system, so the rename is atomic);
    # opened by savefig itself so that the file gets the usual permissions
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with matplotlib.rc_context(SAVE_RC):
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=_metadata(fmt))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _metadata(fmt: str) -> dict[str, Any]:
    # No creation dates: the same results give byte-identical SVGs.
    return {"Date": None} if fmt == "svg" else {"Software": "iommusim"}


# --- choosing what to draw --------------------------------------------------------------
def _bad(source: str, message: str, option: str = "") -> InputError:
    return InputError([Problem(source, None, option, message)])


def classify(path: Path) -> str:
    """'trace', 'sweep' or 'results' for an input path (InputError if none)."""
    if path.is_dir():
        if (path / "index.json").exists():
            return "sweep"
        if (path / "results.json").exists():
            return "results"
        raise _bad(str(path), "neither a results directory (results.json) nor a sweep "
                   "directory (index.json)")
    if not path.exists():
        raise _bad(str(path), "no such file or directory")
    if path.suffix == ".jsonl":
        return "trace"
    if path.name == "index.json":
        return "sweep"
    return "results"


def pick_trace(folder: Path, results: dict[str, Any] | None, seed: int | None
               ) -> tuple[Path, int]:
    """The trace of ``seed``, else of the first seed that faulted, else of the first seed."""
    traces = trace_files(folder)
    if not traces:
        raise _bad(str(folder), "no trace-<seed>.jsonl here; run the scenario with --trace "
                   "to draw a timeline")
    if seed is not None:
        if seed not in traces:
            raise _bad(str(folder), f"no trace for seed {seed} (traces: "
                       f"{', '.join(map(str, traces))})", "--seed")
        return traces[seed], seed
    if results is not None:
        for run in results.get("runs", []):
            if run.get("faults") and run.get("seed") in traces:
                return traces[run["seed"]], run["seed"]
    first = next(iter(traces))
    return traces[first], first


def _seed_of(trace: Path) -> int | None:
    stem = trace.stem.removeprefix("trace-")
    return int(stem) if stem.isdigit() else None


def build_figure(inputs: Sequence[str], kind: str | None = None, *, metric: str | None = None,
                 x: str | None = None, window: str | None = None,
                 seed: int | None = None, meaning: Meaning | None = None) -> tuple[Figure, str]:
    """Load ``inputs`` and draw one figure; returns (figure, kind). All checks first."""
    paths = [Path(p) for p in inputs]
    classes = [classify(p) for p in paths]
    first, what = paths[0], classes[0]
    if kind is None:
        kind = {"trace": "timeline", "sweep": "sweep", "results": "latency"}[what]
    if kind not in KINDS:
        raise _bad("--kind", f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    if len(paths) > 2 or (len(paths) == 2 and kind != "flushes"):
        raise _bad(str(paths[-1]), "a second RESULTS is only for --kind flushes "
                   "(side by side)")
    if window is not None and kind != "timeline":
        raise _bad("--window", f"--window is for --kind timeline, not {kind}")
    if metric is not None and kind != "sweep":
        raise _bad("--metric", f"--metric is for --kind sweep, not {kind}")
    if x is not None and kind not in ("sweep", "reach"):
        raise _bad("--x", f"--x is for --kind sweep or reach, not {kind}")
    if seed is not None and kind in ("sweep", "reach"):
        raise _bad("--seed", f"--seed does not apply to --kind {kind} (it uses every seed)")
    parsed_window = parse_window(window) if window is not None else None

    if kind in ("sweep", "reach"):
        if what != "sweep":
            raise _bad(str(first), f"--kind {kind} needs a sweep directory (with index.json); "
                       "run a scenario that has a sweep: section")
        sweep = load_sweep(first)
        fig = sweep_figure(sweep, metric, x, meaning) if kind == "sweep" else reach_figure(sweep, x)
        return fig, kind
    if kind == "flushes":
        loaded: list[dict[str, Any]] = []
        for p, c in zip(paths, classes, strict=True):
            if c == "trace":
                raise _bad(str(p), "--kind flushes needs results, not a trace")
            if c == "sweep":
                if len(paths) > 1:
                    raise _bad(str(p), "compare two results files, or draw one sweep alone")
                return flush_figure(load_sweep(p), seed=seed), kind
            loaded.append(load_results(p))
        return flush_figure(loaded, seed=seed), kind
    if kind == "timeline":
        if what == "sweep":
            raise _bad(str(first), "a timeline is drawn from one point; name a point "
                       f"directory (e.g. {first / 'point-000'}) or a trace file")
        if what == "trace":
            trace_path = first
            results = _sibling_results(first)
            trace_seed = _seed_of(first)
            if seed is not None and trace_seed is not None and seed != trace_seed:
                raise _bad(str(first), f"this is the trace of seed {trace_seed}, not {seed}",
                           "--seed")
        else:
            results = load_results(first)
            folder = first if first.is_dir() else first.parent
            trace_path, trace_seed = pick_trace(folder, results, seed)
        records = load_trace(trace_path)
        return timeline_figure(records, results, parsed_window, seed=trace_seed), kind
    # latency, ops: one results file
    if what == "trace":
        raise _bad(str(first), f"--kind {kind} needs results (results.json or its directory), "
                   "not a trace")
    if what == "sweep":
        raise _bad(str(first), f"--kind {kind} draws one results file; name a point directory "
                   f"(e.g. {first / 'point-000'})")
    results = load_results(first)
    builder = dma_latency_figure if kind == "latency" else op_cost_figure
    return builder(results, seed), kind


def _sibling_results(trace: Path) -> dict[str, Any] | None:
    candidate = trace.parent / "results.json"
    if candidate.exists():
        try:
            return load_results(candidate)
        except InputError:
            return None
    return None


def default_output(inputs: Sequence[str], kind: str) -> Path:
    """``<results dir>/<kind>.png`` (``timeline-<seed>.png`` beside a trace)."""
    first = Path(inputs[0])
    folder = first if first.is_dir() else first.parent
    if first.suffix == ".jsonl":
        return folder / f"timeline-{first.stem.removeprefix('trace-')}.png"
    return folder / f"{kind}.png"


def plot_command(inputs: Sequence[str], kind: str | None, *, metric: str | None = None,
                 x: str | None = None, window: str | None = None, seed: int | None = None,
                 output: str | None = None, meaning: Meaning | None = None) -> Path:
    """``iommusim plot``: check everything, draw, then write one file."""
    if output is not None:
        check_output(output)
    fig, kind = build_figure(inputs, kind, metric=metric, x=x, window=window, seed=seed,
                             meaning=meaning)
    path = Path(output) if output is not None else default_output(inputs, kind)
    return save_figure(fig, path)


# --- the standard set -------------------------------------------------------------------
def standard_figures(folder: str | Path, fmt: str = "png",
                     meaning: Meaning | None = None) -> list[Path]:
    """Draw the figures that explain a results directory, next to its results.json.

    A plain results directory gets latency, ops, flushes and (when traced) the
    timeline of the first faulting seed; a sweep directory gets the sweep and flushes
    figures at its top (and reach when a region size was swept), and latency, ops
    and timeline in every point's directory."""
    folder = Path(folder)
    written: list[Path] = []
    if (folder / "index.json").exists():
        sweep = load_sweep(folder)
        written.append(save_figure(sweep_figure(sweep, meaning=meaning), folder / f"sweep.{fmt}"))
        written.append(save_figure(flush_figure(sweep), folder / f"flushes.{fmt}"))
        if any(p.endswith("region.size") for p in sweep["parameters"]):
            written.append(save_figure(reach_figure(sweep), folder / f"reach.{fmt}"))
        for point in sweep["points"]:
            point_dir = Path(point["results"]["_path"]).parent
            written += _point_figures(point_dir, point["results"], fmt, flushes=False)
        return written
    return _point_figures(folder, load_results(folder), fmt, flushes=True)


def _point_figures(folder: Path, results: dict[str, Any], fmt: str, *, flushes: bool
                   ) -> list[Path]:
    written = [
        save_figure(dma_latency_figure(results), folder / f"latency.{fmt}"),
        save_figure(op_cost_figure(results), folder / f"ops.{fmt}"),
    ]
    if flushes:
        written.append(save_figure(flush_figure(results), folder / f"flushes.{fmt}"))
    if trace_files(folder):
        path, seed = pick_trace(folder, results, None)
        fig = timeline_figure(load_trace(path), results, seed=seed)
        written.append(save_figure(fig, folder / f"timeline.{fmt}"))
    return written
