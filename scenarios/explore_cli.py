"""``iommusim explore`` and ``iommusim replay``: the commands over scenarios.explore.

Exit codes as for ``run``: 0 no failure, 1 a failure was found (explore) or the saved
failure happened again (replay), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ..tables.transactions import ALL_KINDS
from . import replay as R
from .explore import (
    EXPECT_MODES,
    ORACLES,
    STRATEGIES,
    Options,
    Outcome,
    Report,
    Resolved,
    RunSpec,
    Setup,
    configure,
    describe_choices,
    explore,
    resolve,
    run_one,
    shrink,
)
from .metrics import CPU_OPS
from .problems import InputError, Problem
from .resolve import find_scenario

EXPLORE_JSON = "iommusim.explore/1"


def _nonneg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _pos(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_commands(sub: Any) -> None:
    """Add ``explore`` and ``replay`` to the ``iommusim`` subcommands."""
    p = sub.add_parser(
        "explore",
        help="search the schedules of a small scenario for races (oracles + expect)",
        description="Run the scenario's first seed under many schedules: same-cycle event "
        "orders, preemptions at CPU transaction boundaries, optional cache-line evictions. "
        "Defaults come from the scenario's explore: section (or the catalog race list).",
    )
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario file or catalog name")
    p.add_argument("--strategy", choices=STRATEGIES, help="search strategy (default: dfs)")
    p.add_argument("--bound", type=_nonneg, metavar="B",
                   help="dfs: at most B deviations from FIFO per run (default 1)")
    p.add_argument("--depth", type=_pos, metavar="D",
                   help="pct: bug depth d, d-1 priority change points (default 2)")
    p.add_argument("--runs", type=_pos, metavar="N",
                   help="at most N runs, the FIFO run included (default 1000)")
    p.add_argument("--seed", type=_nonneg, default=1, metavar="S",
                   help="seed of the random and pct strategies (default 1); the simulation "
                   "seed is the scenario's first (--set run.seeds=[S] to change it)")
    p.add_argument("--preemptions", type=_nonneg, metavar="P",
                   help="preemptions per run (default: dfs B, pct d-1, random 2)")
    p.add_argument("--preempt-cycles", type=_pos, metavar="C",
                   help="cycles a preemption takes a CPU away (default: cpu.interrupts.duration)")
    p.add_argument("--evictions", type=_nonneg, metavar="E",
                   help="dirty-line evictions the explorer may choose per run (default 0)")
    p.add_argument("--preempt-in", metavar="OPS",
                   help="only boundaries inside these CPU operations are choice points "
                   "(comma-separated: map, unmap, read_and_clear_dirty; default all)")
    p.add_argument("--preempt-before", metavar="KINDS",
                   help="only boundaries before these transaction kinds are choice points "
                   "(comma-separated, e.g. cmpxchg,flush,free_table; default all)")
    p.add_argument("--ties", choices=("threads", "all"),
                   help="threads: a tie is a choice between the CPUs/devices whose events "
                   "are due (default); all: between every due event")
    p.add_argument("--max-steps", type=_pos, metavar="N",
                   help="events per run before it counts as a livelock "
                   "(default: 20 x the FIFO run's + 100,000)")
    p.add_argument("--stop-after", type=_nonneg, default=1, metavar="K",
                   help="stop after K failing runs; 0 runs the whole budget (default 1)")
    p.add_argument("--expect", choices=EXPECT_MODES, dest="expect_mode",
                   help="what the scenario's expect: means: hold (a run violating it "
                   "fails), symptom (a run showing it fails; default for the catalog), ignore")
    p.add_argument("--no-oracle", action="append", default=[], choices=ORACLES,
                   metavar="NAME", help=f"turn an oracle off ({', '.join(ORACLES)})")
    p.add_argument("--keep-noise", action="store_true",
                   help="keep the configured interrupts and jitter (default: off)")
    p.add_argument("--jobs", type=_pos, default=1, metavar="J", help="parallel processes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hardware or scenario key (repeatable)")
    p.add_argument("--out", metavar="DIR",
                   help="where replay files and the run list go (default: results/explore/<name>)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("replay", help="re-run a failure saved by explore, exactly")
    p.add_argument("file", metavar="FILE", help="a .replay.json written by explore")
    p.add_argument("--plot", action="store_true", help="draw the failure's timeline")
    p.add_argument("--out", metavar="DIR",
                   help="where the trace and figure go (default: beside FILE)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="replay the same choices on a changed configuration (e.g. a fix on)")
    p.set_defaults(func=cmd_replay)


# --- explore ------------------------------------------------------------------------------------
def _progress(quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        print(f"\r{done}/{total} runs", end="", file=sys.stderr, flush=True)

    return show


def _csv(text: str | None, allowed: Any, flag: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or any(t not in allowed for t in items):
        use = ", ".join(sorted(allowed))
        raise InputError([Problem(flag, None, "", f"{text!r}: use {use}")])
    return items


def build(args: argparse.Namespace) -> tuple[Resolved, Setup, Options]:
    path = find_scenario(args.scenario)
    resolved = resolve(path, args.set, keep_noise=args.keep_noise)
    setup, opts = configure(
        resolved,
        strategy=args.strategy, bound=args.bound, depth=args.depth, runs=args.runs,
        seed=args.seed, jobs=args.jobs, stop_after=args.stop_after,
        preemptions=args.preemptions, preempt_cycles=args.preempt_cycles,
        evictions=args.evictions, preempt_in=_csv(args.preempt_in, CPU_OPS, "--preempt-in"),
        preempt_before=_csv(args.preempt_before, ALL_KINDS, "--preempt-before"),
        ties=args.ties, max_steps=args.max_steps, expect=args.expect_mode,
        no_oracle=args.no_oracle,
    )
    return resolved, setup, opts


def cmd_explore(args: argparse.Namespace) -> int:
    resolved, setup, opts = build(args)
    exp = setup.exp
    out_dir = Path(args.out) if args.out else Path("results") / "explore" / exp.scenario.name
    print(header(resolved, setup, opts))
    report = explore(setup, opts, _progress(args.quiet))
    if _progress(args.quiet):
        print(file=sys.stderr)
    print(body(report))
    saved = save_failures(resolved, report, out_dir)
    write_listing(out_dir, resolved, report, saved)
    for line in failure_lines(report, saved):
        print(line)
    return 1 if report.failures else 0


def header(resolved: Resolved, setup: Setup, opts: Options) -> str:
    s = setup.exp.scenario
    off = [k for k, v in s.kernel.fixes.model_dump().items() if not v]
    what = {
        "dfs": f"dfs, at most {opts.bound} deviation(s) per run",
        "random": f"random, strategy seed {opts.seed}",
        "pct": f"pct, depth {opts.depth}, strategy seed {opts.seed}",
    }[opts.strategy]
    b = setup.budget
    fixes = f"fixes off: {', '.join(off)}" if off else "all fixes on"
    lines = [
        f"explore {s.name} (seed {setup.seed}; {fixes})",
        f"  strategy: {what}; at most {opts.runs} runs; jobs {opts.jobs}",
        f"  per run: {b.preemptions} preemption(s) of {b.preempt_cycles:,} cycles, "
        f"{b.evictions} eviction(s), step bound {setup.max_steps:,}",
        f"  choice points: CPU boundaries in {', '.join(b.ops) if b.ops else 'every operation'}"
        f"{' before ' + ', '.join(b.kinds) if b.kinds else ''}; "
        f"ties between {'events' if b.ties == 'all' else 'CPUs/devices'}",
        f"  explore defaults from {resolved.source}",
    ]
    if resolved.sets:
        lines.append(f"  sets: {' '.join(resolved.sets)}")
    lines.append(f"  checks: {', '.join(setup.oracles) or 'no oracle'}; expect: "
                 f"{setup.expect_mode}" + {
                     "symptom": " (a run showing the scenario's expect fails)",
                     "hold": " (a run violating the scenario's expect fails)",
                     "ignore": "",
                 }[setup.expect_mode])
    return "\n".join(lines)


def body(report: Report) -> str:
    opts = report.options
    lines = [
        f"  choice points in the FIFO run: {describe_choices(report.baseline.choices)}",
        f"runs explored: {len(report.outcomes)}",
        f"failures found: {len(report.failures)}"
        + (" (stopped at the first)" if report.stopped and opts.stop_after == 1 else
           f" (stopped after {opts.stop_after})" if report.stopped else ""),
    ]
    if opts.strategy == "dfs":
        if report.exhausted:
            verdict = f"yes: every choice list with at most {opts.bound} deviation(s) was run"
        elif report.stopped:
            verdict = "no (stopped at a failure)"
        else:
            verdict = f"no (run limit {opts.runs} reached)"
        lines.append(f"bounded space exhausted: {verdict}")
    if opts.strategy == "pct":
        p = report.pct_bound()
        n, k, d = report.threads, report.k, opts.depth
        lines.append(
            f"pct bound: a depth-{d} bug is found by one run with probability >= "
            f"1/(n*k^(d-1)) = 1/({n}*{k}^{d - 1}) = {p:.3g}"
        )
        if not report.failures:
            runs = len(report.outcomes) - 1
            miss = (1 - p) ** runs
            lines.append(f"  0 failures in {runs} pct runs: a depth-{d} bug would have been "
                         f"missed with probability <= {miss:.3g}")
    return "\n".join(lines)


def save_failures(resolved: Resolved, report: Report, out_dir: Path) -> dict[int, Path]:
    """Shrink and save the first failing run of every distinct first check."""
    saved: dict[int, Path] = {}
    seen: set[str] = set()
    setup, opts = report.setup, report.options
    exploration = {
        "strategy": opts.strategy,
        "strategy_seed": opts.seed,
        "bound": opts.bound,
        "depth": opts.depth,
    }
    for out in report.failures:
        check = out.failures[0].check
        if check in seen:
            continue
        seen.add(check)
        shrunk, _ = shrink(setup, out)
        final = run_one(setup, RunSpec("forced", deviations=shrunk.dev_pairs), trace=True,
                        keep=True)
        if not final.failed:  # cannot happen: the simulation is deterministic
            continue
        doc = R.document(resolved, setup, exploration, out, final)
        path = out_dir / R.file_name(setup.exp.scenario.name, check)
        saved[out.index] = R.write(path, doc)
        out.shrunk = final
    return saved


def failure_lines(report: Report, saved: dict[int, Path]) -> list[str]:
    lines = []
    for out in report.failures:
        if out.index not in saved:
            continue
        final = out.shrunk
        assert final is not None
        f = final.failures[0]
        lines.append(f"failure at run {out.index}: {f.check}: {f.message}")
        if not out.deviations:
            lines.append("  no deviation: the FIFO schedule itself fails")
        else:
            lines.append(f"  {len(out.deviations)} deviation(s) as found, "
                         f"{len(final.deviations)} after shrinking:")
        for d in final.deviations:
            lines.append(f"    choice {d.index} ({d.kind}, cycle {d.cycle:,}): {d.what}")
        lines.append(f"  replay: iommusim replay {shlex.quote(str(saved[out.index]))}")
    return lines


def write_listing(out_dir: Path, resolved: Resolved, report: Report,
                  saved: dict[int, Path]) -> None:
    """explore.json (options and verdict) and explored.jsonl (one line per run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    opts, setup = report.options, report.setup
    summary = {
        "schema": EXPLORE_JSON,
        "scenario": str(resolved.path),
        "sets": resolved.sets,
        "seed": setup.seed,
        "options": vars(opts),
        "budget": vars(setup.budget),
        "max_steps": setup.max_steps,
        "expect_mode": setup.expect_mode,
        "oracles": list(setup.oracles),
        "choice_points": len(report.baseline.choices),
        "runs": len(report.outcomes),
        "failures": len(report.failures),
        "exhausted": report.exhausted,
        "stopped": report.stopped,
        "pct_bound": report.pct_bound() if opts.strategy == "pct" else None,
        "replays": [str(p) for p in saved.values()],
    }
    (out_dir / "explore.json").write_text(json.dumps(summary, indent=1) + "\n")
    with (out_dir / "explored.jsonl").open("w") as f:
        for out in report.outcomes:
            f.write(json.dumps(out.summary()) + "\n")


# --- replay --------------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    path = Path(args.file)
    doc, out = R.replay(path, args.set)
    saved = doc["failure"]
    x = doc["exploration"]
    print(f"replay {doc['scenario'].get('name', '?')} (seed {doc['seed']}; found by "
          f"{x['strategy']} at run {x['run']}; {len(doc['choices']['deviations'])} deviation(s))")
    for d in doc["choices"]["deviations"]:
        print(f"  choice {d['index']} ({d['kind']}, cycle {d['cycle']:,}): {d['what']}")
    current = R.sha256_of(Path(doc["scenario"]["path"]))
    if current is not None and current != doc["scenario"].get("sha256"):
        print("  note: the scenario file changed since; the saved configuration is replayed")
    diffs = R.compare(doc, out)
    if args.set:
        print(f"  with {' '.join(args.set)}")
    if not diffs:
        f = out.failures[0]
        print(f"reproduced: {f.check} at cycle {f.cycle:,}: {f.message}"
              if f.cycle is not None else f"reproduced: {f.check}: {f.message}")
    else:
        print(f"saved failure: {saved['check']} at cycle {_cycle(saved.get('cycle'))}: "
              f"{saved['message']}")
        for d in diffs:
            print(f"  differs: {d}")
        if out.failures:
            f = out.failures[0]
            print(f"now: {f.check} at cycle {_cycle(f.cycle)}: {f.message}")
        else:
            print("now: no failure")
    out_dir = Path(args.out) if args.out else path.parent
    if args.out or args.plot:
        trace_path = write_trace(out_dir, path, out)
        print(f"trace: {trace_path}")
    if args.plot:
        print(plot(out_dir, path, doc, out))
    return 1 if out.failures else 0


def _cycle(cycle: int | None) -> str:
    return f"{cycle:,}" if isinstance(cycle, int) else "?"


def write_trace(out_dir: Path, path: Path, out: Outcome) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = path.name.removesuffix(".replay.json")
    trace_path = out_dir / f"{stem}.trace.jsonl"
    with trace_path.open("w") as f:
        for row in R.trace_rows(out):
            f.write(json.dumps(row, default=str) + "\n")
    return trace_path


def plot(out_dir: Path, path: Path, doc: dict[str, Any], out: Outcome) -> str:
    try:
        from ..plots import save_figure, timeline_figure
    except ImportError:
        return "figure: iommusim.plots has no timeline; the trace above has every event"
    rows = json.loads(json.dumps(R.trace_rows(out), default=str))
    if not rows:
        return "figure: the run traced no events"
    window = None
    has_fault = any(r["component"] == "iommu.walker" and r["event"] == "fault" for r in rows)
    cycle = out.failures[0].cycle if out.failures else None
    if not has_fault and cycle is not None:
        window = (max(0, cycle - 20_000), cycle + 5_000)
    results = {"scenario": doc["config"]["scenario"], "hardware": doc["config"]["hardware"],
               "runs": [{"seed": doc["seed"]}]}
    fig = timeline_figure(rows, results, window=window, seed=int(doc["seed"]))
    stem = path.name.removesuffix(".replay.json")
    figure = save_figure(fig, out_dir / f"{stem}.timeline.png")
    return f"figure: {figure}"
