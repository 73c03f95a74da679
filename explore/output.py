"""What an exploration leaves behind: shrunk replay files of its failures, explore.json
(options and verdict) and explored.jsonl (one line per run)."""

from __future__ import annotations

import json
from pathlib import Path

from . import replay as R
from .search import Report, run_one
from .setup import Resolved
from .shrink import shrink
from .strategies import RunSpec

EXPLORE_JSON = "iommusim.explore/1"


def save_failures(resolved: Resolved, report: Report, out_dir: Path) -> dict[int, Path]:
    """Shrink and save the first failing run of every distinct first check."""
    saved: dict[int, Path] = {}
    seen: set[str] = set()
    setup, opts = report.setup, report.options
    exploration = {
        "strategy": opts.strategy,
        "strategy_seed": opts.seed,
        "bound": opts.bound,
        "depth": opts.depth,
    }
    for out in report.failures:
        check = out.failures[0].check
        if check in seen:
            continue
        seen.add(check)
        shrunk, _ = shrink(setup, out)
        final = run_one(setup, RunSpec("forced", deviations=shrunk.dev_pairs), trace=True,
                        keep=True)
        if not final.failed:  # cannot happen: the simulation is deterministic
            continue
        doc = R.document(resolved, setup, exploration, out, final)
        path = out_dir / R.file_name(setup.exp.scenario.name, check)
        saved[out.index] = R.write(path, doc)
        out.shrunk = final
    return saved


def write_listing(out_dir: Path, resolved: Resolved, report: Report,
                  saved: dict[int, Path]) -> None:
    """explore.json (options and verdict) and explored.jsonl (one line per run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    opts, setup = report.options, report.setup
    summary = {
        "schema": EXPLORE_JSON,
        "scenario": str(resolved.path),
        "sets": resolved.sets,
        "seed": setup.seed,
        "options": vars(opts),
        "budget": vars(setup.budget),
        "max_steps": setup.max_steps,
        "expect_mode": setup.expect_mode,
        "oracles": list(setup.oracles),
        "choice_points": len(report.baseline.choices),
        "runs": len(report.outcomes),
        "failures": len(report.failures),
        "exhausted": report.exhausted,
        "stopped": report.stopped,
        "pct_bound": report.pct_bound() if opts.strategy == "pct" else None,
        "replays": [str(p) for p in saved.values()],
    }
    (out_dir / "explore.json").write_text(json.dumps(summary, indent=1) + "\n")
    with (out_dir / "explored.jsonl").open("w") as f:
        for out in report.outcomes:
            f.write(json.dumps(out.summary()) + "\n")
