"""``iommusim perf``: the kernel's own map/unmap benchmark (kunit_iommu_perf.h), in
model time, old against new -- or genpt with a fix switch off against on."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..experiment.perf import FORMATS, WALKERS, check_args, run_perf
from ..experiment.perf_fit import fit, report
from ..experiment.perf_report import report_text, write_outputs
from ..hwmodels.config import HardwareConfig
from ..scenarios.resolve import find_hardware, load_hardware

DEFAULT_PRESET = "i7-12700"
DEFAULT_LOOPS = 20  # all four pairs well under a minute; the kernel uses 10000
DEFAULT_OUT = Path("results") / "perf"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "perf", help="the kernel's map/unmap benchmark (old vs new) in model time",
        description="Run kunit_iommu_perf.h's benchmark on a hardware preset: per format, "
        "a single IOPTE of every page size and 256 IOPTEs of 4K/2M/1G, map then unmap, "
        "new (generic page table) against old (io-pgtable), or with --compare-fix genpt "
        "with a fix switch off (old) against on (new).")
    p.add_argument("--preset", default=DEFAULT_PRESET, metavar="NAME",
                   help=f"hardware preset or YAML file (default: {DEFAULT_PRESET})")
    p.add_argument("--format", action="append", dest="formats", metavar="FMT",
                   help=f"a pair by its genpt format, repeatable (default: all of "
                   f"{', '.join(FORMATS)})")
    p.add_argument("--walker", default="coherent", metavar="KIND",
                   help=f"{' or '.join(WALKERS)} (incoherent: genpt with DMA_INCOHERENT, the "
                   "old code with its own cache maintenance)")
    p.add_argument("--loops", type=int, default=DEFAULT_LOOPS, metavar="N",
                   help=f"timed iterations per case (default: {DEFAULT_LOOPS})")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="noise seed (default: 0)")
    p.add_argument("--compare-fix", metavar="SWITCH",
                   help="genpt with this fix switch off (old) against on (new)")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT),
                   help=f"where perf.json, perf.csv and perf.png go (default: {DEFAULT_OUT})")
    p.add_argument("--calibrate", action="store_true",
                   help="print the fit of cpu.work on the published points and stop")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def _preset(name: str) -> HardwareConfig:
    return load_hardware(find_hardware(name, Path.cwd()))[0]


def _writable(out: str) -> Path:
    """The output directory, created if needed; bad input if it cannot be written."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = Problem(out, None, "--out", f"cannot create it: {exc.strerror}")
        raise InputError([problem]) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError([Problem(out, None, "--out", "not writable")])
    return path


def run(args: argparse.Namespace) -> int:
    formats = args.formats or list(FORMATS)
    problems = check_args(formats, args.walker, args.loops, args.compare_fix)
    if problems:
        raise InputError([Problem("perf", None, "", message) for message in problems])
    hw = _preset(args.preset)
    if args.calibrate:
        print(report(fit(hw), hw.cpu.work))
        return 0
    out = _writable(args.out)

    def progress(what: str) -> None:
        if not args.quiet and sys.stderr.isatty():
            print(f"\r{what:<40s}", end="", file=sys.stderr, flush=True)

    rows = run_perf(hw, formats, args.walker, args.loops, args.seed,
                    compare_fix=args.compare_fix, progress=progress)
    if not args.quiet and sys.stderr.isatty():
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    print(report_text(rows), end="")
    what = f"--compare-fix {args.compare_fix}" if args.compare_fix else "old vs new"
    title = f"{args.preset}, {args.walker} walker, {args.loops} loops: {what}"
    files = write_outputs(rows, out, title)
    print(f"\nwrote {', '.join(str(f) for f in files)}")
    return 0
