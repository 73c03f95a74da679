"""The ``iommusim`` command.

Exit codes: 0 success, 1 an ``expect`` failed (or a failure was found), 2 bad input.
Bad input never produces a traceback or partial output files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from ..hwmodels.config import HardwareConfig
from . import explore_cli
from .problems import InputError
from .resolve import (
    HARDWARE_SECTIONS,
    catalog_dir,
    find_hardware,
    find_scenario,
    load_experiment,
    load_hardware,
    preset_dir,
    preset_names,
)
from .results import write_results
from .runner import PointResult, prepare, run_experiment
from .schema import Scenario
from .yamldoc import YamlDoc, parse_set

DEFAULT_SCENARIO = "shared-level-flush"


def dump_yaml(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# --- commands -------------------------------------------------------------------------
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


def progress_printer(quiet: bool) -> Callable[[int, int], None] | None:
    """A progress bar on a terminal; a line per tenth of the work otherwise."""
    if quiet:
        return None
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if tty:
            filled = 30 * done // total
            end = "\n" if done == total else ""
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} runs", end=end,
                  file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"{done}/{total} runs", file=sys.stderr, flush=True)

    return show


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
    for point in points:
        where = f" at {point.values}" if point.values else ""
        for e in point.expectations:
            verdict = "ok" if e.ok else "FAILED"
            detail = f"holds on {len(e.passed_seeds)}/{len(point.runs)} seeds (needs {e.seeds})"
            if e.failed_seeds and not e.ok:
                detail += f"; fails on seeds {', '.join(map(str, e.failed_seeds[:20]))}"
            print(f"  expect {e.metric} {e.condition}{where}: {verdict}, {detail}")
    swept = len(points) > 1 or bool(points[0].values)  # the layout write_results chose
    print(f"results: {files[0].parent.parent if swept else files[0].parent}")


def cmd_run(args: argparse.Namespace) -> int:
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

        figures = standard_figures(out)
        print(f"figures: {len(figures)} written ({', '.join(sorted({f.name for f in figures}))})")
    return 0 if all(p.ok for p in points) else 1


def cmd_plot(args: argparse.Namespace) -> int:
    from ..plots import plot_command

    path = plot_command(args.results, args.kind, metric=args.metric, x=args.x,
                        window=args.window, seed=args.seed, output=args.output)
    print(f"figure: {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    problems = []
    for name in args.files:
        path = Path(name)
        try:
            if _is_hardware_file(path):
                load_hardware(path)
                kind = "hardware"
            else:
                prepare(path, [])  # the scenario and every point of its sweep
                kind = "scenario"
        except InputError as exc:
            problems += exc.problems
        else:
            print(f"{path}: valid {kind} file")
    if problems:
        raise InputError(problems)
    return 0


def _is_hardware_file(path: Path) -> bool:
    """More hardware sections than scenario keys at the top (so that a hardware file
    with a misspelt section is still checked, and reported, as a hardware file)."""
    keys = set(YamlDoc.read(path).data)
    return len(keys & HARDWARE_SECTIONS) > len(keys & set(Scenario.model_fields))


def cmd_list(args: argparse.Namespace) -> int:
    print("scenarios (scenarios/catalog):")
    for path in sorted(catalog_dir().glob("*.yaml")):
        doc = YamlDoc.read(path)
        text = " ".join(str(doc.data.get("description", "")).split())
        summary = re.split(r"(?<=\.) ", text)[0]
        print(f"  {path.stem:28} {summary}")
    print("hardware presets (configs):")
    for name in preset_names():
        first = (preset_dir() / f"{name}.yaml").read_text().split("\n")[0].lstrip("# ")
        summary = re.split(r": |\. ", first)[0]
        print(f"  {name:28} {summary}")
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    """The resolved configuration of a preset, a hardware file or a scenario."""
    target = args.target
    sets = list(args.set)
    hw_path = find_hardware(target, Path.cwd())
    if hw_path.exists() and _is_hardware_file(hw_path):
        hardware, _ = load_hardware(hw_path, [parse_set(s) for s in sets])
        print(dump_yaml(hardware.model_dump(mode="python")), end="")
        return 0
    exp = load_experiment(find_scenario(target), sets)
    print(dump_yaml(exp.resolved(mode="python")), end="")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    model = Scenario if args.kind == "scenario" else HardwareConfig
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    text = json.dumps(schema, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# --- argument parsing -----------------------------------------------------------------
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iommusim",
        description="Cycle-level simulator of IOMMU page walkers and the Linux generic page table.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a scenario and write a results directory")
    p.add_argument("scenario", nargs="?", metavar="SCENARIO",
                   help=f"a scenario file or catalog name (default: {DEFAULT_SCENARIO})")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=positive_int, metavar="N", help="run seeds 1..N")
    which.add_argument("--seed", type=seed_int, metavar="S", help="run this one seed")
    p.add_argument("--jobs", type=positive_int, metavar="J",
                   help="parallel processes (default: the CPU count)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hardware or scenario key (repeatable)")
    p.add_argument("--out", metavar="DIR", help="results directory (default: results/<name>)")
    p.add_argument("--trace", action="store_true", help="also write the event trace per seed")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--plot", action="store_true",
                   help="also write the standard figures next to results.json")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plot", help="draw a figure from results, a sweep or a trace")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="a results.json or its directory, a sweep directory or a trace file; "
                   "a second RESULTS for --kind flushes (side by side)")
    p.add_argument("--kind", choices=("latency", "ops", "flushes", "timeline", "sweep", "reach"),
                   help="the figure (default: latency, sweep for a sweep, timeline for a trace)")
    p.add_argument("--metric", metavar="M", help="--kind sweep: the metric on the y axis")
    p.add_argument("--x", metavar="PARAM", help="--kind sweep/reach: the swept parameter on x")
    p.add_argument("--window", metavar="START:END", help="--kind timeline: the cycles to show")
    p.add_argument("--seed", type=int, metavar="S", help="only this seed (default: all; for a "
                   "timeline the first seed that faulted)")
    p.add_argument("-o", "--output", metavar="FILE", help="PNG or SVG by extension "
                   "(default: <results dir>/<kind>.png)")
    p.set_defaults(func=cmd_plot)

    explore_cli.add_commands(sub)  # explore, replay (scenarios/explore_cli.py)

    p = sub.add_parser("validate", help="check scenario and hardware files without running")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list catalog scenarios and hardware presets")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show-config", help="print the resolved configuration")
    p.add_argument("target", metavar="PRESET|FILE")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_show_config)

    p = sub.add_parser("schema", help="print the JSON Schema of scenario or hardware files")
    p.add_argument("kind", nargs="?", choices=("scenario", "hardware"), default="scenario")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"iommusim: {len(exc.problems)} problem(s) in the input:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `iommusim list | head`): stop quietly.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("iommusim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
