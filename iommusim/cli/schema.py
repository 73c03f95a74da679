"""``iommusim schema``: the JSON Schema of scenario or hardware files, for editors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, check_output_file, read_text
from ..hwmodels.config import HardwareConfig
from ..scenarios.schema import Scenario
from .common import write_text_atomic


def add_parser(sub: Any) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of scenario or hardware files")
    p.add_argument("kind", nargs="?", choices=("scenario", "hardware"), default="scenario")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = Scenario if args.kind == "scenario" else HardwareConfig
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    text = json.dumps(schema, indent=2) + "\n"
    if args.output:
        path = Path(args.output)
        check_output_file(path, "-o", _is_schema_file)
        write_text_atomic(path, text)
    else:
        sys.stdout.write(text)
    return 0


def _is_schema_file(path: Path) -> bool:
    """A JSON Schema ``iommusim schema -o`` wrote (an earlier version, or the other
    kind): a JSON object naming a draft and titled after one of the two models."""
    try:
        data = json.loads(read_text(path))
    except (InputError, ValueError):
        return False
    return (isinstance(data, dict) and "$schema" in data
            and data.get("title") in ("Scenario", "HardwareConfig"))
