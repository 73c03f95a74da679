"""Shrinking on its own: a failing run with three deviations, of which one matters."""

from __future__ import annotations

import itertools

import pytest

from iommusim.explore.control import PREEMPT, TIE
from iommusim.explore.search import Outcome, Setup, run_one
from iommusim.explore.setup import configure, resolve
from iommusim.explore.shrink import shrink
from iommusim.explore.strategies import RunSpec
from iommusim.scenarios.resolve import find_scenario


@pytest.fixture(scope="module")
def race() -> tuple[Setup, Outcome]:
    """shared-level-flush as explored: its FIFO run is clean, and one preemption (the
    winner's, before its flush) makes the visibility oracle fail."""
    setup, _ = configure(resolve(find_scenario("shared-level-flush"), []))
    baseline = run_one(setup, RunSpec("forced"))
    assert not baseline.failed
    for i, (kind, _, _) in enumerate(baseline.choices):
        if kind == PREEMPT:
            out = run_one(setup, RunSpec("forced", deviations=((i, 1),)))
            if out.failed:
                return setup, out
    raise AssertionError("no single preemption shows the race")


def noisy(setup: Setup, needed: Outcome) -> Outcome:
    """The needed deviation plus two tie deviations that do not matter: the first pair
    of ties whose run takes all three and still fails the same way."""
    (point, option), = needed.dev_pairs
    base = run_one(setup, RunSpec("forced"))
    ties = [i for i, c in enumerate(base.choices) if c[0] == TIE and i != point]
    for a, b in itertools.combinations(ties, 2):
        devs = tuple(sorted([(a, 1), (b, 1), (point, option)]))
        out = run_one(setup, RunSpec("forced", deviations=devs))
        if len(out.deviations) == 3 and out.failed and \
                out.failures[0].check == needed.failures[0].check:
            return out
    raise AssertionError("no pair of ties that keeps the failure")


def test_shrinking_keeps_only_the_deviation_that_matters(race) -> None:
    setup, needed = race
    failing = noisy(setup, needed)
    assert len(failing.deviations) == 3
    shrunk, runs = shrink(setup, failing)
    assert shrunk.failures[0].check == needed.failures[0].check
    assert shrunk.dev_keys == needed.dev_keys  # the preemption, and nothing else
    assert [d.kind for d in shrunk.deviations] == [PREEMPT]
    assert runs >= 3  # at least: the re-run, then one try per dropped tie
    # and the one left is needed: without it the run passes
    assert not run_one(setup, RunSpec("forced", keyed=())).failed


def test_shrinking_stops_at_the_run_budget(race) -> None:
    setup, needed = race
    failing = noisy(setup, needed)
    shrunk, runs = shrink(setup, failing, max_runs=1)
    assert runs == 1 and len(shrunk.deviations) == 3
