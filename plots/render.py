"""Writing figures: by file extension (PNG, SVG or PDF), atomically, and the standard set that
``iommusim run --plot`` puts next to results.json; ``iommusim plot`` itself."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from ..errors import InputError, Problem, check_output_file
from .data import is_trace, load_results, load_sweep, load_trace, trace_files, trace_seed
from .flushes import flush_figure
from .kinds import KINDS, accepting
from .latency import dma_latency_figure
from .ops import op_cost_figure
from .reach import reach_figure
from .style import SAVE_RC
from .sweep import Meaning, sweep_figure
from .timeline import parse_window, timeline_figure

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

DPI = 130


def check_output(path: str | Path) -> Path:
    """A figure file that may be written: PNG, SVG or PDF by its name, in a writable
    folder, new or a figure iommusim wrote (``errors.check_output_file``)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError([Problem(str(path), None, "-o", "the figure file must end in .png, "
                                  ".svg or .pdf")])
    check_output_file(path, "-o", is_iommusim_figure)
    return path


# What _metadata writes into each format: how a figure iommusim wrote is recognised.
_SIGNATURES = {"png": b"tEXtSoftware\x00iommusim", "svg": b"<dc:title>iommusim</dc:title>",
               "pdf": b"/Creator (iommusim)"}


def is_iommusim_figure(path: Path, limit: int = 64 << 20) -> bool:
    """A regular file of at most ``limit`` bytes carrying iommusim's metadata."""
    fmt = FORMATS.get(path.suffix.lower())
    try:
        if fmt is None or not path.is_file() or path.stat().st_size > limit:
            return False
        return _SIGNATURES[fmt] in path.read_bytes()
    except OSError:
        return False


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG, SVG or PDF (by extension) via a temporary file, so a failure
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
    # No creation dates: the same results give byte-identical SVGs and PDFs.
    if fmt == "pdf":
        return {"Creator": "iommusim", "CreationDate": None}
    return {"Date": None, "Creator": "iommusim"} if fmt == "svg" else {"Software": "iommusim"}


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
    if is_trace(path):
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


@dataclass(frozen=True)
class Request:
    """One ``iommusim plot``: the inputs (with what each is) and the options."""

    paths: list[Path]
    classes: list[str]  # "results", "sweep" or "trace" for each path
    kind: str
    metric: str | None = None
    x: str | None = None
    window: tuple[int | None, int | None] | None = None
    seed: int | None = None
    meaning: Meaning | None = None
    share: bool | None = None  # --kind sweep: the share of seeds showing the symptom


def build_figure(inputs: Sequence[str], kind: str | None = None, *, metric: str | None = None,
                 x: str | None = None, window: str | None = None,
                 seed: int | None = None, meaning: Meaning | None = None,
                 share: bool | None = None) -> tuple[Figure, str]:
    """Load ``inputs`` and draw one figure; returns (figure, kind). All checks first."""
    paths = [Path(p) for p in inputs]
    classes = [classify(p) for p in paths]
    if kind is None:
        kind = {"trace": "timeline", "sweep": "sweep", "results": "latency"}[classes[0]]
    if kind not in KINDS:
        raise _bad("--kind", f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    given = {"second": len(paths) > 1, "window": window is not None,
             "metric": metric is not None, "x": x is not None, "seed": seed is not None,
             "share": share is not None}
    _check_options(kind, given, paths)
    req = Request(paths, classes, kind, metric, x,
                  parse_window(window) if window is not None else None, seed, meaning, share)
    return globals()[KINDS[kind].drawer](req), kind


def _check_options(kind: str, given: dict[str, bool], paths: list[Path]) -> None:
    """Refuse an option the kind has no use for, naming the kinds that use it."""
    def kinds(option: str) -> str:
        return " or ".join(accepting(option))

    fits = KINDS[kind].options
    if len(paths) > 2 or (given["second"] and "second" not in fits):
        raise _bad(str(paths[-1]), f"a second RESULTS is only for --kind {kinds('second')} "
                   "(side by side)")
    for option in ("window", "metric", "x", "share"):
        if given[option] and option not in fits:
            raise _bad(f"--{option}", f"--{option} is for --kind {kinds(option)}, not {kind}")
    if given["seed"] and "seed" not in fits:
        raise _bad("--seed", f"--seed does not apply to --kind {kind} (it uses every seed)")


# --- the drawers KINDS names ------------------------------------------------------------
def _sweep_of(req: Request) -> dict[str, Any]:
    if req.classes[0] != "sweep":
        raise _bad(str(req.paths[0]), f"--kind {req.kind} needs a sweep directory (with "
                   "index.json); run a scenario that has a sweep: section")
    return load_sweep(req.paths[0])


def draw_sweep(req: Request) -> Figure:
    return sweep_figure(_sweep_of(req), req.metric, req.x, req.meaning, req.share)


def draw_reach(req: Request) -> Figure:
    return reach_figure(_sweep_of(req), req.x)


def draw_flushes(req: Request) -> Figure:
    loaded: list[dict[str, Any]] = []
    for p, c in zip(req.paths, req.classes, strict=True):
        if c == "trace":
            raise _bad(str(p), "--kind flushes needs results, not a trace")
        if c == "sweep":
            if len(req.paths) > 1:
                raise _bad(str(p), "compare two results files, or draw one sweep alone")
            return flush_figure(load_sweep(p), seed=req.seed)
        loaded.append(load_results(p))
    return flush_figure(loaded, seed=req.seed)


def draw_timeline(req: Request) -> Figure:
    first, what, seed = req.paths[0], req.classes[0], req.seed
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
    return timeline_figure(load_trace(trace_path), results, req.window, seed=trace_seed)


def _one_results(req: Request) -> dict[str, Any]:
    first, what = req.paths[0], req.classes[0]
    if what == "trace":
        raise _bad(str(first), f"--kind {req.kind} needs results (results.json or its "
                   "directory), not a trace")
    if what == "sweep":
        raise _bad(str(first), f"--kind {req.kind} draws one results file; name a point "
                   f"directory (e.g. {first / 'point-000'})")
    return load_results(first)


def draw_latency(req: Request) -> Figure:
    return dma_latency_figure(_one_results(req), req.seed)


def draw_ops(req: Request) -> Figure:
    return op_cost_figure(_one_results(req), req.seed)


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
    if is_trace(first):
        return folder / f"timeline-{trace_seed(first)}.png"
    return folder / f"{kind}.png"


def plot_command(inputs: Sequence[str], kind: str | None, *, metric: str | None = None,
                 x: str | None = None, window: str | None = None, seed: int | None = None,
                 output: str | None = None, meaning: Meaning | None = None,
                 share: bool | None = None) -> Path:
    """``iommusim plot``: check everything, draw, then write one file."""
    if output is not None:
        check_output(output)
    fig, kind = build_figure(inputs, kind, metric=metric, x=x, window=window, seed=seed,
                             meaning=meaning, share=share)
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
