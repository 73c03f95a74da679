"""``iommusim list``: the catalog scenarios and hardware presets, one line each."""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..scenarios.resolve import catalog_dir, preset_dir, preset_names
from ..scenarios.yamldoc import YamlDoc


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list catalog scenarios and hardware presets")
    p.set_defaults(func=run)


def first_sentence(text: str) -> str:
    """The description's first sentence: up to a full stop followed by a capital (not
    "e.g. the" or "5815d930. "), and never a bare label such as "Performance." -- a
    first sentence of fewer than four words takes the next one with it."""
    words = " ".join(text.split())
    sentences = re.split(r"(?<=[.!?]) (?=[A-Z])", words)
    out = sentences[0]
    for more in sentences[1:]:
        if len(out.split()) >= 4:
            break
        out += " " + more
    return out


def run(args: argparse.Namespace) -> int:
    print("scenarios (scenarios/catalog):")
    for path in sorted(catalog_dir().glob("*.yaml")):
        doc = YamlDoc.read(path)
        summary = first_sentence(str(doc.data.get("description", "")))
        print(f"  {path.stem:28} {summary}")
    print("hardware presets (configs):")
    for name in preset_names():
        first = (preset_dir() / f"{name}.yaml").read_text().split("\n")[0].lstrip("# ")
        summary = re.split(r": |\. ", first)[0]
        print(f"  {name:28} {summary}")
    return 0
