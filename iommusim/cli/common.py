"""What the commands share: argument types, YAML output, the one progress printer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import yaml

Progress = Callable[[int, int], None]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


SET_HELP = "override a hardware or scenario key (repeatable)"


def add_set(p: argparse.ArgumentParser, text: str | None = SET_HELP) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=text)


def dump_yaml(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def progress_printer(quiet: bool, *, bar: bool = True, lines: bool = True) -> Progress | None:
    """Progress of ``done``/``total`` runs on stderr: a bar (or a counter without
    ``bar``) on a terminal; elsewhere a line per tenth of the work, or nothing without
    ``lines`` (the explorer's runs are too many to log)."""
    if quiet:
        return None
    tty = sys.stderr.isatty()
    if not tty and not lines:
        return None

    def show(done: int, total: int) -> None:
        if tty and bar:
            filled = 30 * done // total
            end = "\n" if done == total else ""
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} runs", end=end,
                  file=sys.stderr, flush=True)
        elif tty:
            print(f"\r{done}/{total} runs", end="", file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"{done}/{total} runs", file=sys.stderr, flush=True)

    return show
