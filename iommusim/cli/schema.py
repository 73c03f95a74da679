"""``iommusim schema``: the JSON Schema of scenario or hardware files, for editors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..hwmodels.config import HardwareConfig
from ..scenarios.schema import Scenario


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
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
