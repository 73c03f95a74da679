"""``iommusim explore``: search the schedules of a small scenario (explore.search).

Exit codes as for ``run``: 0 no failure, 1 a failure was found, 2 bad input.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..experiment.metrics import CPU_OPS
from ..experiment.oracles import EXPECT_MODES, ORACLES
from ..experiment.outdir import check_destination, staged
from ..explore.output import save_failures, write_listing
from ..explore.search import STRATEGIES, Options, Report, Setup, describe_choices, explore
from ..explore.setup import Resolved, configure, resolve
from ..scenarios.resolve import find_scenario
from ..tables.transactions import ALL_KINDS
from .common import add_set, nonneg_int, positive_int, progress_printer


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "explore",
        help="search the schedules of a small scenario for races (oracles + expect)",
        description="Run the scenario's first seed under many schedules: same-cycle event "
        "orders, preemptions at CPU transaction boundaries, optional cache-line evictions. "
        "Defaults come from the scenario's explore: section (or the catalog race list).",
    )
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario file or catalog name")
    p.add_argument("--strategy", choices=STRATEGIES, help="search strategy (default: dfs)")
    p.add_argument("--bound", type=nonneg_int, metavar="B",
                   help="dfs: at most B deviations from FIFO per run (default 1)")
    p.add_argument("--depth", type=positive_int, metavar="D",
                   help="pct: bug depth d, d-1 priority change points (default 2)")
    p.add_argument("--runs", type=positive_int, metavar="N",
                   help="at most N runs, the FIFO run included (default 1000)")
    p.add_argument("--seed", type=nonneg_int, default=1, metavar="S",
                   help="seed of the random and pct strategies (default 1); the simulation "
                   "seed is the scenario's first (--set run.seeds=[S] to change it)")
    p.add_argument("--preemptions", type=nonneg_int, metavar="P",
                   help="preemptions per run (default: dfs B, pct d-1, random 2)")
    p.add_argument("--preempt-cycles", type=positive_int, metavar="C",
                   help="cycles a preemption takes a CPU away (default: cpu.interrupts.duration)")
    p.add_argument("--evictions", type=nonneg_int, metavar="E",
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
    p.add_argument("--max-steps", type=positive_int, metavar="N",
                   help="events per run before it counts as a livelock "
                   "(default: 20 x the FIFO run's + 100,000)")
    p.add_argument("--stop-after", type=nonneg_int, default=1, metavar="K",
                   help="stop after K failing runs; 0 runs the whole budget (default 1)")
    p.add_argument("--expect", choices=EXPECT_MODES, dest="expect_mode",
                   help="what the scenario's expect: means: hold (a run violating it "
                   "fails), symptom (a run showing it fails; default for the catalog), ignore")
    p.add_argument("--no-oracle", action="append", default=[], choices=ORACLES,
                   metavar="NAME", help=f"turn an oracle off ({', '.join(ORACLES)})")
    p.add_argument("--keep-noise", action="store_true",
                   help="keep the configured interrupts and jitter (default: off)")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="J", help="parallel processes")
    add_set(p)
    p.add_argument("--out", metavar="DIR",
                   help="where replay files and the run list go (default: results/explore/<name>); "
                   "an existing one is replaced only if iommusim wrote it")
    p.add_argument("--force", action="store_true",
                   help="replace an iommusim directory even if it holds other files")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    resolved, setup, opts = build(args)
    exp = setup.exp
    out_dir = Path(args.out) if args.out else Path("results") / "explore" / exp.scenario.name
    check_destination(out_dir, force=args.force)  # before exploring (experiment.outdir)
    print(header(resolved, setup, opts))
    progress = progress_printer(args.quiet, bar=False, lines=False)
    report = explore(setup, opts, progress)
    if progress:
        print(file=sys.stderr)
    print(body(report))
    # Written whole beside out_dir, then swapped in: no replay file of an earlier
    # exploration is left next to this one's.
    with staged(out_dir, force=args.force) as tmp:
        saved = {i: out_dir / p.name for i, p in save_failures(resolved, report, tmp).items()}
        write_listing(tmp, resolved, report, saved)
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
