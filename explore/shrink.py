"""Shrinking a failing run: fewer deviations from FIFO, the same failure."""

from __future__ import annotations

from .search import Outcome, Setup, run_one
from .strategies import RunSpec

SHRINK_RUNS = 200  # at most this many runs to shrink one failure


def same_failure(out: Outcome, check_name: str) -> bool:
    return any(f.check == check_name for f in out.failures)


def shrink(setup: Setup, failing: Outcome, *, max_runs: int = SHRINK_RUNS) -> tuple[Outcome, int]:
    """Drop deviations one at a time while the failure's first check still fails.

    A candidate keeps the other deviations by key ("cpu0's 12th boundary", "the 3rd
    tie between nic0 and cpu1"), not by position, since dropping one deviation can
    add or remove choice points before the others; it is accepted with the
    deviations its run actually took. Returns the shrunk run (as a forced run) and
    the number of runs spent."""
    target = failing.failures[0].check
    current = run_one(setup, RunSpec("forced", deviations=failing.dev_pairs))
    runs = 1
    if not same_failure(current, target):
        current = failing  # cannot happen for a deterministic simulation
    changed = True
    while changed and runs < max_runs:
        changed = False
        devs = list(current.dev_keys)
        for i in range(len(devs)):
            if runs >= max_runs:
                break
            candidate = tuple(devs[:i] + devs[i + 1 :])
            out = run_one(setup, RunSpec("forced", keyed=candidate))
            runs += 1
            if same_failure(out, target):
                current = out
                changed = True
                break
    return current, runs
