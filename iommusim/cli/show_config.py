"""``iommusim show-config``: the resolved configuration of a preset, hardware file or
scenario (presets, overrides and ``--set`` applied)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..experiment.load import load
from ..scenarios.resolve import find_hardware, find_scenario, is_hardware_file, load_hardware
from ..scenarios.yamldoc import parse_set
from .common import add_set, dump_yaml


def add_parser(sub: Any) -> None:
    p = sub.add_parser("show-config", help="print the resolved configuration")
    p.add_argument("target", metavar="PRESET|FILE")
    add_set(p, None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = args.target
    sets = list(args.set)
    hw_path = find_hardware(target, Path.cwd())
    if hw_path.exists() and is_hardware_file(hw_path):
        hardware, _ = load_hardware(hw_path, [parse_set(s) for s in sets])
        print(dump_yaml(hardware.model_dump(mode="python")), end="")
        return 0
    exp = load(find_scenario(target), sets)
    print(dump_yaml(exp.resolved(mode="python")), end="")
    return 0
