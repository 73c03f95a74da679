"""The ``iommusim`` command: one module per subcommand, each with ``add_parser(sub)``.

Exit codes: 0 success, 1 an ``expect`` failed (or a failure was found), 2 bad input.
Bad input never produces a traceback or partial output files.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import InputError
from .common import pipe_safe_stdout
from .run import DEFAULT_SCENARIO, SUMMARY_METRICS
from .signals import report_interrupt, sigterm_as_interrupt

# In the order ``iommusim --help`` lists them (module names: "-" becomes "_").
COMMANDS = (
    "run", "check", "merge", "perf", "plot", "explore", "replay", "validate", "list", "show-config",
    "schema", "trace",
)

__all__ = ["COMMANDS", "DEFAULT_SCENARIO", "SUMMARY_METRICS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iommusim",
        description="Cycle-level simulator of IOMMU page walkers and the Linux generic page table.",
    )
    parser.add_argument("--version", action="version", version=f"iommusim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name.replace('-', '_')}", __name__).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with pipe_safe_stdout(), sigterm_as_interrupt():  # a closed stdout keeps the verdict
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
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (signals.Terminated)
        return report_interrupt(exc)


if __name__ == "__main__":
    sys.exit(main())
