"""Regression guards (``regression:``): run a scenario with its bug and with its fix,
and say whether the symptom shows as declared -- on at least ``min_rate`` of the seeds
with the bug, on none with the fix.

``iommusim check`` and the pytest plugin both call ``check_scenarios``; all scenarios
(and both sides of each guard) are loaded and validated before the first seed runs,
so a mistake in any file costs no simulation time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..scenarios.conditions import holds
from ..scenarios.resolve import Experiment
from ..scenarios.schema import Regression
from ..scenarios.yamldoc import Override, YamlDoc
from .load import load
from .runner import PointResult, prepare, run_experiment

Progress = Callable[[int, int], None]
SIDES = ("off", "on")


@dataclass
class Side:
    """One side of a guard over every (sweep point, seed): the runs on which each
    symptom condition holds, and those on which any does."""

    runs: int
    hits: dict[str, list[tuple[dict[str, Any], int]]]  # metric -> [(sweep values, seed)]

    @property
    def symptomatic(self) -> list[tuple[dict[str, Any], int]]:
        seen = {(repr(v), s): (v, s) for hits in self.hits.values() for v, s in hits}
        return sorted(seen.values(), key=lambda vs: (repr(vs[0]), vs[1]))

    @property
    def count(self) -> int:
        return len(self.symptomatic)

    @property
    def rate(self) -> float:
        return self.count / self.runs if self.runs else 0.0

    def seeds(self) -> str:
        """The symptomatic seeds, for a message (with the point when there is a sweep)."""
        runs = self.symptomatic
        shown = [f"{seed} at {values}" if values else str(seed) for values, seed in runs[:20]]
        return ", ".join(shown) + (", ..." if len(runs) > 20 else "")


@dataclass
class GuardCheck:
    """The verdict of ``iommusim check`` on one scenario. With the bug, every symptom
    condition must hold on at least ``min_rate`` of the runs (each is something the bug
    causes, so each must still be reproduced); with the fix, none on any run."""

    name: str
    path: Path
    guard: Regression | None
    sides: dict[str, Side] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def checked(self) -> bool:
        return self.guard is not None

    def needed(self) -> int:
        """Symptomatic runs the bug side needs per condition (at least one)."""
        assert self.guard is not None
        return max(1, math.ceil(self.sides["off"].runs * self.guard.rate() - 1e-9))

    def failures(self) -> list[str]:
        """Why the guard does not hold ([] when it does)."""
        if self.guard is None:
            return []
        off, on = self.sides["off"], self.sides["on"]
        out = [f"with the bug {m} {self.guard.symptom[m]} holds on {len(hits)}/{off.runs} "
               f"seeds, fewer than {self.guard.min_rate} ({self.needed()})"
               for m, hits in off.hits.items() if len(hits) < self.needed()]
        if on.count:
            out.append(f"with the fix the symptom shows on {on.count}/{on.runs} seeds: "
                       f"{on.seeds()}")
        return out

    @property
    def ok(self) -> bool:
        return self.checked and not self.failures()

    @property
    def verdict(self) -> str:
        return "no guard" if not self.checked else ("ok" if self.ok else "FAILED")

    def switch(self) -> str:
        """The guard's switch as written: ``fix flush_done_sw_bit`` or the set keys."""
        assert self.guard is not None
        if self.guard.fix is not None:
            return f"fix {self.guard.fix}"
        return ", ".join(f"{k}: {v[0]} -> {v[1]}" for k, v in self.guard.set.items())

    def symptom(self) -> str:
        assert self.guard is not None
        return " or ".join(f"{m} {c}" for m, c in self.guard.symptom.items())

    def line(self) -> str:
        """The one line ``iommusim check`` prints for this scenario."""
        if self.guard is None:
            return (f"{self.name}: no guard -- the scenario has no regression: block, "
                    "nothing was checked")
        off, on = self.sides["off"], self.sides["on"]
        bug = ", ".join(
            f"{m} {self.guard.symptom[m]} on {len(h)}/{off.runs} seeds "
            f"({100 * len(h) / max(1, off.runs):.0f}%)" for m, h in off.hits.items())
        text = (f"{self.name}: {self.verdict} ({self.switch()}) bug: {bug}, needs "
                f"{self.guard.min_rate}; fix: symptom on {on.count}/{on.runs}")
        failures = self.failures()
        return text + (f" -- {'; '.join(failures)}" if failures else "")


@dataclass
class Plan:
    """A scenario ready to check: its guard and the overrides of each side."""

    path: Path
    name: str
    guard: Regression | None
    sides: dict[str, list[Override]]


def side_overrides(path: Path, guard: Regression) -> dict[str, list[Override]]:
    """Each side's key values as overrides that name the guard's line in the file, so a
    bad value (a ``set:`` value the key does not accept) is reported there."""
    doc = YamlDoc.read(path)
    out: dict[str, list[Override]] = {}
    for side, values in guard.sides().items():
        ovs = []
        for key, value in values.items():
            loc = ("regression", "fix") if guard.fix else ("regression", "set", key)
            shown = "regression.fix" if guard.fix else f"regression.set.{key}"
            ovs.append(Override(key, value, doc.source, doc.key_line(loc), shown))
        out[side] = ovs
    return out


def swept_switches(path: Path, exp: Experiment) -> list[Problem]:
    """A guard whose switch is also swept cannot be checked: each sweep point's value
    would override the side being run (``run`` and ``validate`` accept it)."""
    guard = exp.scenario.regression
    if guard is None:
        return []
    doc = YamlDoc.read(path)
    out = []
    for key in guard.sides()["off"]:
        if key in exp.scenario.sweep:
            loc = ("regression", "fix") if guard.fix else ("regression", "set", key)
            out.append(Problem(doc.source, doc.key_line(loc), ".".join(map(str, loc)),
                               f"{key} is also swept; a guard's switch cannot be a sweep key"))
    return out


def plan(paths: Sequence[Path], sets: Sequence[str | Override] = (), *,
         for_check: bool = True) -> list[Plan]:
    """Load every scenario and both sides of its guard; InputError lists every problem.
    ``for_check``: also refuse what only ``check`` cannot run (a swept switch)."""
    plans: list[Plan] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            exp = load(path, sets)
            guard = exp.scenario.regression
            sides = side_overrides(path, guard) if guard is not None else {}
            for ovs in sides.values():
                prepare(path, [*sets, *ovs])  # both sides, every sweep point
        except InputError as exc:
            problems += exc.problems
            continue
        swept = swept_switches(path, exp) if for_check else []
        if swept:
            problems += swept
            continue
        plans.append(Plan(path, exp.scenario.name, guard, sides))
    if problems:
        raise InputError(problems)
    return plans


def symptomatic(guard: Regression, points: Sequence[PointResult]) -> Side:
    """The runs on which each of the guard's symptom conditions holds."""
    hits = {m: [(p.values, r.seed) for p in points for r in p.runs if holds(c, r.metrics[m])]
            for m, c in guard.symptom.items()}
    return Side(sum(len(p.runs) for p in points), hits)


def check_one(p: Plan, sets: Sequence[str | Override] = (), *, seeds: Sequence[int] | None
              = None, jobs: int | None = 1, progress: Progress | None = None) -> GuardCheck:
    """Run both sides of one planned scenario (nothing when it has no guard)."""
    result = GuardCheck(p.name, p.path, p.guard)
    if p.guard is None:
        return result
    start = time.perf_counter()
    for side in SIDES:
        points = run_experiment(p.path, [*sets, *p.sides[side]], seeds=seeds, jobs=jobs,
                                progress=progress)
        result.sides[side] = symptomatic(p.guard, points)
    result.seconds = time.perf_counter() - start
    return result


def check_scenarios(paths: Sequence[Path], sets: Sequence[str | Override] = (), *,
                    seeds: Sequence[int] | None = None, jobs: int | None = 1,
                    report: Callable[[GuardCheck], None] | None = None) -> list[GuardCheck]:
    """Check every scenario's guard (all loaded first); ``report`` sees each verdict as
    it is reached."""
    results = []
    for p in plan(paths, sets):
        result = check_one(p, sets, seeds=seeds, jobs=jobs)
        if report is not None:
            report(result)
        results.append(result)
    return results
