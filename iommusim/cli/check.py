"""``iommusim check``: verify the regression guards of scenarios, for CI.

Each scenario with a ``regression:`` block runs twice: with the bug (the symptom must
show on at least ``min_rate`` of the seeds, or the scenario no longer reproduces what
it guards) and with the fix (the symptom must show on no seed). One line per scenario;
exit 0 only if every guard holds, 1 if one does not, 2 for bad input -- including
nothing to check: a scenario without a guard is reported as such, never passed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, Problem
from ..experiment.regression import GuardCheck, check_scenarios
from ..scenarios.resolve import catalog_dir, find_scenario
from .common import add_set, positive_int


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "check", help="check scenarios' regression guards (bug: symptom; fix: none)",
        description="Run every scenario that declares a regression: guard with the bug "
        "and with the fix; exit 0 only if the symptom shows on at least min_rate of the "
        "seeds with the bug and on none with the fix.")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="scenario files, directories of them (searched recursively), or "
                   "catalog names")
    p.add_argument("--catalog", action="store_true", help="check every catalog scenario")
    p.add_argument("--seeds", type=positive_int, metavar="N",
                   help="seeds 1..N on each side instead of each scenario's run.seeds")
    p.add_argument("--jobs", type=positive_int, metavar="J",
                   help="parallel processes (default: the CPU count)")
    add_set(p, "override a key of every scenario before the guard's switch (repeatable)")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    p.set_defaults(func=run)


def scenario_files(args: argparse.Namespace) -> list[Path]:
    """The files named, the scenario files under named directories, the catalog."""
    if not args.paths and not args.catalog:
        raise InputError([Problem("iommusim check", None, "",
                                  "name scenario files or directories, or give --catalog")])
    files: list[Path] = []
    if args.catalog:
        files += sorted(catalog_dir().glob("*.yaml"))
    for name in args.paths:
        path = Path(name)
        files += in_directory(path) if path.is_dir() else [find_scenario(name)]
    return list(dict.fromkeys(files))


def in_directory(folder: Path) -> list[Path]:
    """Scenario files under ``folder``: YAML mappings with a ``table:`` or ``regression:``
    key (hardware files and other YAML beside them are left alone)."""
    found = []
    for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            found.append(path)  # reported, with its line, when it is loaded
            continue
        if isinstance(data, dict) and ("table" in data or "regression" in data):
            found.append(path)
    return found


def run(args: argparse.Namespace) -> int:
    files = scenario_files(args)
    if args.junit is not None:
        _check_writable(Path(args.junit))
    seeds = list(range(1, args.seeds + 1)) if args.seeds else None

    def report(result: GuardCheck) -> None:
        print(result.line(), flush=True)

    results = check_scenarios(files, args.set, seeds=seeds, jobs=args.jobs, report=report)
    checked = [r for r in results if r.checked]
    if not checked:
        raise InputError([Problem(str(r.path), None, "", "no regression: block, so "
                                  "nothing to check (see docs/checks.md: Regression checks)")
                          for r in results])
    failed = [r for r in checked if not r.ok]
    unguarded = len(results) - len(checked)
    print(f"check: {len(checked) - len(failed)} ok, {len(failed)} failed"
          + (f", {unguarded} without a guard (not checked)" if unguarded else "")
          + (f"; failed: {', '.join(r.name for r in failed)}" if failed else ""))
    if args.junit is not None:
        write_junit(Path(args.junit), results)
        print(f"junit: {args.junit}")
    return 1 if failed else 0


def _check_writable(path: Path) -> None:
    """Refuse a report path that cannot be written before anything runs."""
    if path.is_dir() or not path.parent.is_dir():
        what = "is a directory" if path.is_dir() else f"no such directory: {path.parent}"
        raise InputError([Problem(str(path), None, "--junit", what)])


def write_junit(path: Path, results: Sequence[GuardCheck]) -> None:
    """The report CI systems read: a testcase per scenario, a failure per broken
    guard, skipped for a scenario without one; the rates as properties."""
    failures = sum(1 for r in results if r.checked and not r.ok)
    skipped = sum(1 for r in results if not r.checked)
    total = sum(r.seconds for r in results)
    suites = ET.Element("testsuites", name="iommusim check", tests=str(len(results)),
                        failures=str(failures), errors="0", skipped=str(skipped),
                        time=f"{total:.3f}")
    suite = ET.SubElement(
        suites, "testsuite", name="iommusim check", tests=str(len(results)),
        failures=str(failures), errors="0", skipped=str(skipped), time=f"{total:.3f}",
        timestamp=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        hostname=socket.gethostname())
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="iommusim.check", name=r.name,
                             file=str(r.path), time=f"{r.seconds:.3f}")
        if r.checked:
            props = ET.SubElement(case, "properties")
            for name, value in _properties(r):
                ET.SubElement(props, "property", name=name, value=str(value))
        if not r.checked:
            ET.SubElement(case, "skipped", message="no regression guard (no regression: "
                          "block); not checked")
        elif not r.ok:
            failure = ET.SubElement(case, "failure", message="; ".join(r.failures()),
                                    type="GuardFailed")
            failure.text = r.line()
        ET.SubElement(case, "system-out").text = r.line()
    ET.indent(suites)
    tmp = path.with_name(f".{path.name}.tmp")
    ET.ElementTree(suites).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)


def _properties(r: GuardCheck) -> list[tuple[str, object]]:
    assert r.guard is not None
    off, on = r.sides["off"], r.sides["on"]
    return [("switch", r.switch()), ("symptom", r.symptom()), ("min_rate", r.guard.min_rate),
            ("bug.runs", off.runs), ("bug.symptomatic", off.count),
            ("bug.rate", round(off.rate, 4)), ("fix.runs", on.runs),
            ("fix.symptomatic", on.count)]
