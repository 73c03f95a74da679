"""Every catalog race under bounded exhaustive search (issue 9, "Must hold").

For each scenario of the catalog folder that explore knows (a file with an
``explore:`` section): ``dfs`` with its small
bound finds a failure with the scenario's fix switches as the file has them (off),
and exhausts the bounded space without a failure with them on. A catalog file that
is neither explorable nor listed in NOT_EXPLORED fails, so a new race cannot be
added without deciding how to explore it.

The io-pgtable code's own races (issue 14) run the old code
(``table.implementation: io-pgtable``); their fix is genpt, so each is also explored
with ``table.implementation=genpt`` (and, where a switch of the old code is off, with
that switch on as well).
"""

from __future__ import annotations

import pytest

from iommusim.experiment.load import load
from iommusim.explore.setup import is_explorable
from iommusim.scenarios.resolve import catalog_dir
from iommusim.scenarios.schema import ExploreSpec

NOT_EXPLORED = {
    "unmap-overflush": "a performance scenario: its expect is a cost, not a failure",
}
FILES = sorted(catalog_dir().glob("*.yaml"))
JOBS = 2


def fixes_off(name: str) -> list[str]:
    exp = load(catalog_dir() / f"{name}.yaml")
    return [k for k, on in exp.scenario.kernel.fixes.model_dump().items() if not on]


def old_code(name: str) -> bool:
    """The scenario runs the io-pgtable code genpt replaced."""
    return load(catalog_dir() / f"{name}.yaml").scenario.table.implementation == "io-pgtable"


def fixed_sides(name: str) -> list[list[str]]:
    """The --set lists that fix the scenario's bug: its switches on; for the old code
    also genpt (which has none of the old code's switches to turn on)."""
    sides = []
    off = fixes_off(name)
    if off:
        sides.append([f"kernel.fixes.{switch}=true" for switch in off])
    if old_code(name):
        sides.append(["table.implementation=genpt"])
    return sides


def explore_spec(name: str) -> ExploreSpec | None:
    return load(catalog_dir() / f"{name}.yaml").scenario.explore


def explorable(path) -> bool:
    return is_explorable(path)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_catalog_scenario_is_classified(path) -> None:
    assert explorable(path) or path.stem in NOT_EXPLORED, (
        f"{path.stem}: give it an explore: section (fix, race, sets), or add it to "
        "NOT_EXPLORED with a reason"
    )
    spec = explore_spec(path.stem)
    if spec is not None and path.parent == catalog_dir():
        if spec.fix is None:  # the fix is the implementation: no switch of its own
            assert old_code(path.stem) and fixes_off(path.stem) == []
        else:
            assert fixes_off(path.stem) == [spec.fix]


EXPLORED = [p.stem for p in FILES if p.stem not in NOT_EXPLORED and explorable(p)]


@pytest.mark.parametrize("name", EXPLORED)
def test_dfs_finds_the_failure_with_the_fix_off(name: str, run_explore) -> None:
    report = run_explore(name, jobs=JOBS)
    assert report.options.strategy == "dfs"
    assert report.failures, f"{name}: no failure in {len(report.outcomes)} runs"
    first = report.failures[0]
    print(f"[{name}] fix off: first failure at run {first.index} "
          f"({first.failures[0].check}), bound {report.options.bound}")
    spec = explore_spec(name)
    if spec is not None and spec.race:
        # A schedule race: the FIFO run is clean, a deviation shows it.
        assert not report.baseline.failed, report.baseline.failures
        assert first.index > 0 and first.deviations


FIXED = [(name, sets) for name in EXPLORED for sets in fixed_sides(name)]


@pytest.mark.parametrize(("name", "sets"), FIXED, ids=[f"{n}:{s[0]}" for n, s in FIXED])
def test_dfs_exhausts_the_bound_cleanly_with_the_fix_on(name: str, sets, run_explore) -> None:
    report = run_explore(name, sets, jobs=JOBS, stop_after=0)
    print(f"[{name}] fix on ({' '.join(sets)}): {len(report.outcomes)} runs, exhausted "
          f"{report.exhausted}, bound {report.options.bound}, "
          f"{len(report.baseline.choices)} choice points")
    assert not report.failures, [
        (o.index, [f.message for f in o.failures]) for o in report.failures[:3]
    ]
    assert report.exhausted, f"{name}: the run limit {report.options.runs} cut the search"
    assert len(report.outcomes) > 1  # there was something to explore
