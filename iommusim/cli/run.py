"""``iommusim run``: every seed (and sweep point) of a scenario into a results directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..experiment.metrics import meaning
from ..experiment.results import write_results
from ..experiment.runner import PointResult, run_experiment
from ..scenarios.resolve import find_scenario
from .common import add_set, nonneg_int, positive_int, progress_printer

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
    which.add_argument("--seeds", type=positive_int, metavar="N", help="run seeds 1..N")
    which.add_argument("--seed", type=nonneg_int, metavar="S", help="run this one seed")
    p.add_argument("--jobs", type=positive_int, metavar="J",
                   help="parallel processes (default: the CPU count)")
    add_set(p)
    p.add_argument("--out", metavar="DIR", help="results directory (default: results/<name>)")
    p.add_argument("--trace", action="store_true", help="also write the event trace per seed")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--plot", action="store_true",
                   help="also write the standard figures next to results.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = find_scenario(args.scenario or DEFAULT_SCENARIO)
    seeds = None
    if args.seed is not None:
        seeds = [args.seed]
    elif args.seeds is not None:
        seeds = list(range(1, args.seeds + 1))
    points = run_experiment(
        path, args.set, seeds=seeds, jobs=args.jobs, trace=args.trace,
        progress=progress_printer(args.quiet),
    )
    out = Path(args.out) if args.out else Path("results") / points[0].experiment.scenario.name
    files = write_results(out, points, trace=args.trace)
    print_summary(points, files)
    if args.plot:
        from ..plots import standard_figures

        figures = standard_figures(out, meaning=meaning)
        print(f"figures: {len(figures)} written ({', '.join(sorted({f.name for f in figures}))})")
    return 0 if all(p.ok for p in points) else 1


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
