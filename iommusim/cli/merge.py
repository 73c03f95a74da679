"""``iommusim merge``: join the shard directories of ``iommusim run --shard K/N``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..experiment.outdir import check_destination
from ..experiment.results import write_results
from ..experiment.shards import merge
from .run import print_summary, unfinished_fails


def add_parser(sub: Any) -> None:
    p = sub.add_parser("merge", help="join shard directories (run --shard K/N) into one",
                       description="Join the results directories of `iommusim run --shard "
                       "K/N` (all N of them) into the results directory the whole run "
                       "would have written, then print its summary and verdict.")
    p.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="the shard directories")
    p.add_argument("--out", required=True, metavar="DIR", help="the merged results directory "
                   "(an existing one is replaced only if iommusim wrote it)")
    p.add_argument("--force", action="store_true",
                   help="replace an iommusim results directory even if it holds other files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_destination(out, force=args.force)  # before reading the shards (outdir.py)
    points, formats = merge([Path(d) for d in args.shards])
    files = write_results(out, points, trace=formats, force=args.force)
    print_summary(points, files)
    return 0 if all(p.ok for p in points) and not unfinished_fails(points) else 1
