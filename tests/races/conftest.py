"""The race catalog harness: run a catalog scenario through the real pipeline.

Every test in ``tests/races`` runs its ``scenarios/catalog/<name>.yaml`` with
``experiment.runner.run_experiment`` -- CPU cores, caches, write buffer, walker,
devices -- once with the scenario's fix switch off (as the file has it) and once
with ``--set kernel.fixes.<switch>=true``, and reports the reproduction rate and
the cost of the fix, both on stdout (``pytest -s``) and in the test report
(``record_property``, e.g. in ``--junitxml``).

Tests marked ``slow`` (200 seeds) belong to the deeper tier (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from iommusim.experiment.assembly import RunResult
from iommusim.experiment.runner import ExpectOutcome, run_experiment
from iommusim.scenarios.conditions import holds
from iommusim.scenarios.resolve import catalog_dir

JOBS = 2
SLOW_SEEDS = range(1, 201)


@dataclass
class Outcome:
    """All seeds of one run of a catalog scenario."""

    name: str
    sets: tuple[str, ...]
    runs: list[RunResult]
    expectations: list[ExpectOutcome]

    @property
    def seeds(self) -> int:
        return len(self.runs)

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs]

    def mean(self, metric: str) -> float:
        values = self.values(metric)
        return sum(values) / len(values)

    def holding(self, metric: str, condition: str) -> list[int]:
        """The seeds on which ``metric condition`` holds."""
        return [r.seed for r in self.runs if holds(condition, r.metrics[metric])]

    def symptomatic(self) -> list[int]:
        """Seeds on which any of the scenario's expectations (the symptom) holds."""
        return sorted({s for e in self.expectations for s in e.passed_seeds})


def run(name: str, sets: Sequence[str] = (), seeds: Sequence[int] | None = None) -> Outcome:
    """All seeds of a catalog scenario (by default the seeds the file names)."""
    path = catalog_dir() / f"{name}.yaml"
    chosen = list(seeds) if seeds is not None else None
    (point,) = run_experiment(path, list(sets), seeds=chosen, jobs=JOBS)
    return Outcome(name, tuple(sets), point.runs, point.expectations)


def fix_on(switch: str) -> str:
    return f"kernel.fixes.{switch}=true"


GENPT = "table.implementation=genpt"  # the fix of the io-pgtable code's own races


def assert_symptom(off: Outcome) -> None:
    """Every expectation of the scenario (the symptom with the fix off) holds on at
    least the fraction of seeds it states."""
    for e in off.expectations:
        assert e.ok, (
            f"{off.name}: {e.metric} {e.condition} holds on {len(e.passed_seeds)}/{off.seeds} "
            f"seeds, needs {e.seeds}; fails on {e.failed_seeds}"
        )


def assert_clean(on: Outcome) -> None:
    """No expectation (no symptom) holds on any seed."""
    for e in on.expectations:
        assert e.passed_seeds == [], (
            f"{on.name} with {on.sets}: the symptom {e.metric} {e.condition} shows on "
            f"seeds {e.passed_seeds}"
        )


def report(
    record_property: Callable[[str, object], None],
    switch: str,
    off: Outcome,
    on: Outcome,
    costs: Sequence[tuple[str, str]],
    sides: tuple[str, str] | None = None,
) -> list[str]:
    """Print and record the reproduction rate and the fix's cost.

    ``costs`` are (metric, unit) pairs compared fix on vs off, e.g.
    ("cpu.map.latency.mean", "cycles per map"). ``sides`` names the two runs when the
    fix is not a switch (``("table.implementation=io-pgtable", "...=genpt")``).
    """
    bug, fixed = sides or (f"{switch}=false", f"{switch}=true")
    hit = off.symptomatic()
    lines = [
        f"[{off.name}] {bug}: {e.metric} {e.condition} on {len(e.passed_seeds)}/"
        f"{off.seeds} seeds ({100 * len(e.passed_seeds) / off.seeds:.0f}%, needs {e.seeds})"
        for e in off.expectations
    ]
    lines.append(
        f"[{off.name}] {fixed}: symptom on {len(on.symptomatic())}/{on.seeds} seeds"
    )
    record_property("scenario", off.name)
    record_property("switch", switch)
    record_property("reproduced_seeds", len(hit))
    record_property("seeds_fix_off", off.seeds)
    record_property("reproduction_rate", round(len(hit) / off.seeds, 4))
    for e in off.expectations:
        record_property(f"reproduced_seeds.{e.metric}", len(e.passed_seeds))
    record_property("symptomatic_seeds_fix_on", len(on.symptomatic()))
    record_property("seeds_fix_on", on.seeds)
    for metric, unit in costs:
        a, b = off.mean(metric), on.mean(metric)
        lines.append(
            f"[{off.name}] cost: {metric} {a:,.1f} (off) -> {b:,.1f} (on): {b - a:+,.1f} {unit}"
        )
        record_property(f"cost.{metric}.fix_off", round(a, 3))
        record_property(f"cost.{metric}.fix_on", round(b, 3))
    for line in lines:
        print(line)
    return lines


class Harness:
    """What a race test needs, handed out as the ``races`` fixture."""

    run = staticmethod(run)
    fix_on = staticmethod(fix_on)
    genpt = GENPT
    assert_symptom = staticmethod(assert_symptom)
    assert_clean = staticmethod(assert_clean)
    report = staticmethod(report)


@pytest.fixture
def races() -> type[Harness]:
    return Harness


@pytest.fixture(params=[
    pytest.param(None, id="file-seeds"),
    pytest.param(SLOW_SEEDS, id="200-seeds", marks=pytest.mark.slow),
])
def seeds(request: pytest.FixtureRequest) -> Sequence[int] | None:
    """A race test's seeds: the ones its scenario file names (20), or in the slow tier
    seeds 1-200."""
    return request.param
