"""``iommusim replay``: re-run a failure saved by explore, exactly (explore.replay).

Exit codes: 0 the saved failure did not happen again, 1 it did, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import check_output_file
from ..experiment.results import write_trace
from ..explore import replay as R
from ..explore.search import Outcome
from .common import (
    add_set,
    check_output_dir,
    starts_with_json_record,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="re-run a failure saved by explore, exactly")
    p.add_argument("file", metavar="FILE", help="a .replay.json written by explore")
    p.add_argument("--plot", action="store_true", help="draw the failure's timeline")
    p.add_argument("--out", metavar="DIR",
                   help="where the trace and figure go (default: beside FILE)")
    add_set(p, "replay the same choices on a changed configuration (e.g. a fix on)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    out_dir = Path(args.out) if args.out else path.parent
    if args.out or args.plot:
        check_outputs(out_dir, path, plot=args.plot)
    doc, out = R.replay(path, args.set)
    saved = doc["failure"]
    x = doc["exploration"]
    print(f"replay {doc['scenario'].get('name', '?')} (seed {doc['seed']}; found by "
          f"{x['strategy']} at run {x['run']}; {len(doc['choices']['deviations'])} deviation(s))")
    for d in doc["choices"]["deviations"]:
        print(f"  choice {d['index']} ({d['kind']}, cycle {d['cycle']:,}): {d['what']}")
    current = R.sha256_of(Path(doc["scenario"]["path"]))
    if current is not None and current != doc["scenario"].get("sha256"):
        print("  note: the scenario file changed since; the saved configuration is replayed")
    diffs = R.compare(doc, out)
    if args.set:
        print(f"  with {' '.join(args.set)}")
    if not diffs:
        f = out.failures[0]
        print(f"reproduced: {f.check} at cycle {f.cycle:,}: {f.message}"
              if f.cycle is not None else f"reproduced: {f.check}: {f.message}")
    else:
        print(f"saved failure: {saved['check']} at cycle {_cycle(saved.get('cycle'))}: "
              f"{saved['message']}")
        for d in diffs:
            print(f"  differs: {d}")
        if out.failures:
            f = out.failures[0]
            print(f"now: {f.check} at cycle {_cycle(f.cycle)}: {f.message}")
        else:
            print("now: no failure")
    if args.out or args.plot:
        trace_path = save_trace(out_dir, path, out)
        print(f"trace: {trace_path}")
    if args.plot:
        print(plot(out_dir, path, doc, out))
    return 1 if out.failures else 0


def check_outputs(out_dir: Path, path: Path, *, plot: bool) -> None:
    """Before replaying: the trace (and figure) may be written into ``out_dir`` -- new
    files, or files an earlier replay of the same file wrote (nothing else replaced)."""
    check_output_dir(out_dir, "--out")
    if not out_dir.is_dir():
        return  # created when the trace is saved
    stem = path.name.removesuffix(".replay.json")
    check_output_file(out_dir / f"{stem}.trace.jsonl", "--out",
                      lambda p: starts_with_json_record(p, {"cycle", "component", "event"}))
    if plot:
        from ..plots.render import is_iommusim_figure  # matplotlib: only when drawing

        check_output_file(out_dir / f"{stem}.timeline.png", "--out", is_iommusim_figure)


def _cycle(cycle: int | None) -> str:
    return f"{cycle:,}" if isinstance(cycle, int) else "?"


def save_trace(out_dir: Path, path: Path, out: Outcome) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = path.name.removesuffix(".replay.json")
    assert out.result is not None
    return write_trace(out_dir / f"{stem}.trace.jsonl", out.result.trace)


def plot(out_dir: Path, path: Path, doc: dict[str, Any], out: Outcome) -> str:
    try:
        from ..plots import save_figure, timeline_figure
    except ImportError:
        return "figure: iommusim.plots has no timeline; the trace above has every event"
    rows = json.loads(json.dumps(R.trace_rows(out), default=str))
    if not rows:
        return "figure: the run traced no events"
    window = None
    has_fault = any(r["component"] == "iommu.walker" and r["event"] == "fault" for r in rows)
    cycle = out.failures[0].cycle if out.failures else None
    if not has_fault and cycle is not None:
        window = (max(0, cycle - 20_000), cycle + 5_000)
    results = {"scenario": doc["config"]["scenario"], "hardware": doc["config"]["hardware"],
               "runs": [{"seed": doc["seed"]}]}
    fig = timeline_figure(rows, results, window=window, seed=int(doc["seed"]))
    stem = path.name.removesuffix(".replay.json")
    figure = save_figure(fig, out_dir / f"{stem}.timeline.png")
    return f"figure: {figure}"
