"""``iommusim validate``: check scenario and hardware files without running them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..experiment.regression import plan
from ..experiment.runner import prepare
from ..scenarios.resolve import is_hardware_file, load_hardware


def add_parser(sub: Any) -> None:
    p = sub.add_parser("validate", help="check scenario and hardware files without running")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    problems = []
    for name in args.files:
        path = Path(name)
        try:
            if is_hardware_file(path):
                load_hardware(path)
                kind = "hardware"
            else:
                prepare(path, [])  # the scenario and every point of its sweep
                plan([path], for_check=False)  # both sides of its guard, if any
                kind = "scenario"
        except InputError as exc:
            problems += exc.problems
        else:
            print(f"{path}: valid {kind} file")
    if problems:
        raise InputError(problems)
    return 0
