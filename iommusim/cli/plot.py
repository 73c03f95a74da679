"""``iommusim plot``: one figure from results files, a sweep or a trace."""

from __future__ import annotations

import argparse
from typing import Any

from ..experiment.metrics import meaning
from ..plots.kinds import KINDS


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="draw a figure from results, a sweep or a trace")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="a results.json or its directory, a sweep directory or a trace file; "
                   "a second RESULTS for --kind flushes (side by side)")
    p.add_argument("--kind", choices=tuple(KINDS),
                   help="the figure (default: latency, sweep for a sweep, timeline for a trace)")
    p.add_argument("--metric", metavar="M", help="--kind sweep: the metric on the y axis")
    p.add_argument("--x", metavar="PARAM", help="--kind sweep/reach: the swept parameter on x")
    p.add_argument("--share", action=argparse.BooleanOptionalAction, default=None,
                   help="--kind sweep: the percent of seeds showing the symptom (the "
                   "regression guard's, else the expectations'; with --metric, its "
                   "condition) instead of the mean; default: on for a sweep over a fix "
                   "switch or of a guarded scenario, when no --metric is named")
    p.add_argument("--window", metavar="START:END", help="--kind timeline: the cycles to show")
    p.add_argument("--seed", type=int, metavar="S", help="only this seed (default: all; for a "
                   "timeline the first seed that faulted)")
    p.add_argument("-o", "--output", metavar="FILE", help="PNG, SVG or PDF by extension "
                   "(default: <results dir>/<kind>.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..plots import plot_command  # matplotlib: only when drawing

    path = plot_command(args.results, args.kind, metric=args.metric, x=args.x,
                        window=args.window, seed=args.seed, output=args.output,
                        meaning=meaning, share=args.share)
    print(f"figure: {path}")
    return 0
