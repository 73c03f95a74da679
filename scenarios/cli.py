"""The ``iommusim`` command.

Exit codes: 0 success, 1 an ``expect`` failed (or a failure was found), 2 bad input.
Bad input never produces a traceback or partial output files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..hwmodels.config import HardwareConfig
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
from .schema import Scenario
from .yamldoc import YamlDoc, parse_set

DEFAULT_SCENARIO = "shared-level-flush"


def dump_yaml(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# --- commands -------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    problems = []
    for name in args.files:
        path = Path(name)
        try:
            if _is_hardware_file(path):
                load_hardware(path)
                kind = "hardware"
            else:
                load_experiment(path)
                kind = "scenario"
        except InputError as exc:
            problems += exc.problems
        else:
            print(f"{path}: valid {kind} file")
    if problems:
        raise InputError(problems)
    return 0


def _is_hardware_file(path: Path) -> bool:
    doc = YamlDoc.read(path)
    return set(doc.data) <= HARDWARE_SECTIONS


def cmd_list(args: argparse.Namespace) -> int:
    print("scenarios (scenarios/catalog):")
    for path in sorted(catalog_dir().glob("*.yaml")):
        doc = YamlDoc.read(path)
        summary = str(doc.data.get("description", "")).strip().split("\n")[0]
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
        print(dump_yaml(hardware.model_dump(mode="json")), end="")
        return 0
    exp = load_experiment(find_scenario(target), sets)
    print(dump_yaml(exp.resolved()), end="")
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
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iommusim",
        description="Cycle-level simulator of IOMMU page walkers and the Linux generic page table.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    except KeyboardInterrupt:
        print("iommusim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
