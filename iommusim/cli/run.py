"""``iommusim run``: every seed (and sweep point) of a scenario into a results directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..experiment.executors import EXECUTORS
from ..experiment.metrics import meaning
from ..experiment.outdir import DestinationLock, check_destination
from ..experiment.results import write_results
from ..experiment.resume import Journal
from ..experiment.runner import PointResult, plan, prepare, run_prepared
from ..experiment.shards import Shard, manifest
from ..experiment.traces import DEFAULT_TRACE_FORMAT, TRACE_FORMATS
from ..scenarios.resolve import find_scenario
from ..scenarios.schema import MAX_SEEDS
from .common import add_set, positive_int, progress_printer, seed_count, seed_value

DEFAULT_SCENARIO = "shared-level-flush"
SUMMARY_METRICS = (
    "dma.requests",
    "dma.faults",
    "dma.stale_translations",
    "dma.latency.mean",
    "dma.latency.p99",
    "iotlb.hits",
    "iotlb.misses",
    "walker.walks",
    "cpu.map.count",
    "cpu.map.latency.mean",
    "cpu.unmap.latency.mean",
    "cpu.flush.lines",
    "table.leaked_pages",
    "uaf.events",
    "sim.cycles",
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a scenario and write a results directory")
    p.add_argument("scenario", nargs="?", metavar="SCENARIO",
                   help=f"a scenario file or catalog name (default: {DEFAULT_SCENARIO})")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=seed_count, metavar="N",
                       help=f"run seeds 1..N (N <= {MAX_SEEDS:,})")
    which.add_argument("--seed", type=seed_value, metavar="S", help="run this one seed")
    p.add_argument("--jobs", type=positive_int, metavar="J",
                   help="parallel processes (default: the CPU count)")
    add_set(p)
    p.add_argument("--out", metavar="DIR", help="results directory (default: results/<name>); "
                   "an existing one is replaced only if iommusim wrote it")
    p.add_argument("--force", action="store_true",
                   help="replace an iommusim results directory even if it holds other files")
    p.add_argument("--trace", action="store_true", help="also write the event trace per seed")
    p.add_argument("--trace-format", type=trace_format_list, metavar="FMT[,FMT]",
                   help=f"trace formats, implies --trace: {', '.join(TRACE_FORMATS)} "
                   f"(default {DEFAULT_TRACE_FORMAT})")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--plot", action="store_true",
                   help="also write the standard figures next to results.json")
    add_engine_options(p)
    p.set_defaults(func=run)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Where the runs execute, and which of them (README, "Sweeps on many machines")."""
    p.add_argument("--executor", choices=list(EXECUTORS), default="local",
                   help="where the runs execute: local processes (default) or a Dask cluster")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="the Dask scheduler (tcp://host:8786) for --executor dask; "
                   "without it a local Dask cluster of --jobs workers")
    p.add_argument("--connect-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                   help="give up reaching the scheduler after this long (default 10)")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in --out (or kept from an interrupted run) "
                   "and run only the others")
    p.add_argument("--shard", type=shard_arg, metavar="K/N",
                   help="run only the K-th of N slices of the runs; join the slices with "
                   "`iommusim merge`")


def trace_format_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in TRACE_FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(bad) or repr(text)}: not a trace format "
                                         f"(formats: {', '.join(TRACE_FORMATS)})")
    return names


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def shard_arg(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    path = find_scenario(args.scenario or DEFAULT_SCENARIO)
    seeds = None
    if args.seed is not None:
        seeds = [args.seed]
    elif args.seeds is not None:
        seeds = list(range(1, args.seeds + 1))
    prepared = prepare(path, args.set)
    formats = args.trace_format or ((DEFAULT_TRACE_FORMAT,) if args.trace else ())
    out = Path(args.out) if args.out else Path("results") / prepared[0][1].scenario.name
    check_destination(out, force=args.force)  # before anything runs (outdir.py)
    say = None if args.quiet else (lambda text: print(text, file=sys.stderr))
    held = DestinationLock(out, say=say)  # noqa: F841 (held until run returns)
    extra = None
    if args.shard is not None:
        extra = {"shard.json": manifest(args.shard, prepared, plan(prepared, seeds))}
    journal = Journal(out, prepared, formats, resume=args.resume)
    try:
        points = run_prepared(
            prepared, seeds=seeds, jobs=args.jobs, trace=bool(formats),
            progress=progress_printer(args.quiet), executor=args.executor,
            scheduler=args.scheduler, connect_timeout=args.connect_timeout,
            shard=args.shard, journal=journal,
        )
        if journal.reused and not args.quiet:
            print(f"resumed: {journal.reused} run(s) taken from {out} and {journal.dir.name}",
                  file=sys.stderr)
        files = write_results(out, points, trace=formats, extra=extra, force=args.force)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: say where the finished runs are
        if journal.note():
            exc.add_note(journal.note())
        raise
    journal.close()
    if args.shard is not None:
        return print_shard(points, files, args.shard)
    print_summary(points, files)
    if args.plot:
        from ..plots import standard_figures

        figures = standard_figures(out, meaning=meaning)
        print(f"figures: {len(figures)} written ({', '.join(sorted({f.name for f in figures}))})")
    return 0 if all(p.ok for p in points) and not unfinished_fails(points) else 1


def _stop_info(run: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """Why a run stopped early and who had not finished (a RunResult, or a run read
    back from a results directory)."""
    doc = getattr(run, "document", None)
    if doc is not None:
        return doc.get("stopped"), doc.get("unfinished") or []
    return getattr(run, "stopped", None), getattr(run, "unfinished", [])


def unfinished_fails(points: list[PointResult]) -> bool:
    """A run that stopped before its work was done fails the command (exit 1) unless the
    scenario's ``expect:`` speaks of ``sim.finished`` (it expects that on purpose)."""
    return any(
        _stop_info(run)[0] is not None and "sim.finished" not in p.experiment.scenario.expect
        for p in points for run in p.runs
    )


def print_unfinished(points: list[PointResult], shown: int = 5) -> None:
    """One warning per run that stopped early (the first ``shown``): why, and who had
    not finished with how far each got."""
    late = [(p, run) for p in points for run in p.runs if _stop_info(run)[0] is not None]
    for point, run in late[:shown]:
        stopped, who = _stop_info(run)
        where = f" at {point.values}" if point.values else ""
        names = "; ".join(f"{u['name']}: {u['progress']}" for u in who) or "nobody named"
        print(f"  warning: seed {run.seed}{where} did not finish: {stopped}; unfinished: "
              f"{names}")
    if len(late) > shown:
        print(f"  warning: {len(late) - shown} more run(s) did not finish (results.json: "
              "runs[].stopped, runs[].unfinished)")


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def print_summary(points: list[PointResult], files: list[Path]) -> None:
    first = points[0]
    exp = first.experiment
    seeds = [r.seed for r in first.runs]
    print(f"{exp.scenario.name} on {Path(exp.hardware_source).stem}: "
          f"{len(points)} point(s) x {len(seeds)} seed(s)")
    shown = list(SUMMARY_METRICS) + [m for m in exp.scenario.expect if m not in SUMMARY_METRICS]
    if len(points) == 1 and not first.values:
        agg = first.aggregate()
        print(f"  {'metric':32} {'mean':>14} {'min':>14} {'max':>14}")
        for name in shown:
            a = agg[name]
            print(f"  {name:32} {_fmt(a['mean']):>14} {_fmt(a['min']):>14} {_fmt(a['max']):>14}")
    else:
        keys = list(first.values)
        cols = [m for m in shown if m in exp.scenario.expect] or ["dma.faults", "dma.latency.mean"]
        print("  " + "  ".join(f"{k:>24}" for k in keys + cols))
        for point in points:
            agg = point.aggregate()
            cells = [str(point.values[k]) for k in keys] + [_fmt(agg[c]["mean"]) for c in cols]
            print("  " + "  ".join(f"{c:>24}" for c in cells))
    print_expectations(points)
    print_unfinished(points)
    swept = len(points) > 1 or bool(points[0].values)  # the layout write_results chose
    print(f"results: {files[0].parent.parent if swept else files[0].parent}")


def print_expectations(points: list[PointResult]) -> None:
    for point in points:
        where = f" at {point.values}" if point.values else ""
        for e in point.expectations:
            verdict = "ok" if e.ok else "FAILED"
            detail = f"holds on {len(e.passed_seeds)}/{len(point.runs)} seeds (needs {e.seeds})"
            if e.failed_seeds and not e.ok:
                detail += f"; fails on seeds {', '.join(map(str, e.failed_seeds[:20]))}"
            print(f"  expect {e.metric} {e.condition}{where}: {verdict}, {detail}")


def print_shard(points: list[PointResult], files: list[Path], shard: Shard) -> int:
    """A shard's summary: what it ran; its expectations are judged once merged."""
    runs = sum(len(p.runs) for p in points)
    swept = len(points) > 1 or bool(points[0].values)
    where = files[0].parent.parent if swept else files[0].parent
    print(f"{points[0].experiment.scenario.name}: shard {shard}, {runs} run(s) of "
          f"{len(points)} point(s)")
    print("  expectations are judged on the whole experiment: join the shards with "
          "`iommusim merge SHARD_DIR... --out DIR`")
    print(f"results: {where}")
    return 0
