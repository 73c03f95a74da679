"""From a scenario file and options to an exploration's ``Setup``: explore defaults
(the scenario's ``explore:`` section, then built-in), ``--set``, noise off, budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..experiment.load import load
from ..experiment.oracles import ORACLES
from ..scenarios.resolve import Experiment, catalog_dir
from ..scenarios.schema import ExploreSpec
from ..scenarios.yamldoc import Override, parse_set
from .control import Budget
from .search import STRATEGIES, Options, Setup, baseline_run

BASELINE_MAX_STEPS = 50_000_000


@dataclass
class Resolved:
    path: Path
    exp: Experiment
    sets: list[str]  # everything applied on top of the file, in order
    spec: ExploreSpec
    source: str  # where the explore defaults came from
    catalog: bool
    noise_off: list[str]


def noise_sets(exp: Experiment) -> list[str]:
    """--set lines that turn interrupts and jitter off (hardware and every CPU)."""
    sets = ["cpu.jitter=0", "cpu.interrupts.mean_interval=0"]
    for i, cpu in enumerate(exp.scenario.cpus):
        if cpu.interrupts is not None:
            sets.append(f"cpus.{i}.interrupts.mean_interval=0")
    return sets


def in_catalog(path: Path) -> bool:
    try:
        return path.resolve().parent == catalog_dir().resolve()
    except OSError:
        return False


def explore_defaults(path: Path, exp: Experiment) -> tuple[ExploreSpec, str]:
    if exp.scenario.explore is not None:
        return exp.scenario.explore, f"{path.name}: explore:"
    return ExploreSpec(), "built-in defaults"


def is_explorable(path: Path) -> bool:
    """A scenario with explore defaults: one declaring an ``explore:`` section."""
    try:
        return load(path).scenario.explore is not None
    except InputError:
        return False


def resolve(path: Path, sets: Sequence[str], *, keep_noise: bool = False) -> Resolved:
    """The experiment to explore: file, explore sets, --set, noise off."""
    first = load(path, list(sets))
    spec, source = explore_defaults(path, first)

    def labelled(texts: Sequence[str], origin: str) -> list[Override]:
        out = []
        for text in texts:
            ov = parse_set(text)
            out.append(Override(ov.path, ov.value, origin, None, text))
        return out

    overrides = [*labelled(spec.sets, f"explore sets ({source})"), *sets]
    exp = load(path, overrides) if spec.sets else first
    quiet: list[str] = []
    if not keep_noise:
        quiet = noise_sets(exp)
        overrides += labelled(quiet, "explore (interrupts and jitter off)")
        exp = load(path, overrides)
    applied = [*spec.sets, *sets, *quiet]
    if exp.scenario.sweep:
        raise InputError([Problem(
            str(path), None, "sweep",
            "explore runs one experiment: pick a sweep point with --set (and remove the "
            "sweep with --set sweep={})",
        )])
    return Resolved(path, exp, applied, spec, source, in_catalog(path), quiet)


def expect_mode(resolved: Resolved, given: str | None) -> str:
    if given is not None:
        return given
    if resolved.spec.expect is not None:
        return resolved.spec.expect
    return "symptom" if resolved.catalog else "hold"


def default_preemptions(strategy: str, bound: int, depth: int) -> int:
    if strategy == "dfs":
        return bound
    if strategy == "pct":
        return max(0, depth - 1)
    return 2


def configure(
    resolved: Resolved,
    *,
    strategy: str | None = None,
    bound: int | None = None,
    depth: int | None = None,
    runs: int | None = None,
    seed: int = 1,
    jobs: int = 1,
    stop_after: int = 1,
    preemptions: int | None = None,
    preempt_cycles: int | None = None,
    evictions: int | None = None,
    preempt_in: Sequence[str] | None = None,
    preempt_before: Sequence[str] | None = None,
    ties: str | None = None,
    max_steps: int | None = None,
    expect: str | None = None,
    no_oracle: Sequence[str] = (),
) -> tuple[Setup, Options]:
    """The setup and options of an exploration: each given value, else the
    scenario's explore defaults, else the built-in ones. Runs the FIFO run once to
    derive the step bound (20 x its events + 100,000 unless ``max_steps``) and
    whether runs must finish (when the FIFO run does)."""
    spec = resolved.spec

    def pick(value: Any, default: Any) -> Any:
        return value if value is not None else default

    strategy = pick(strategy, spec.strategy)
    if strategy not in STRATEGIES:
        raise InputError([Problem("--strategy", None, "", f"{strategy!r}: use "
                                  f"{', '.join(STRATEGIES)}")])
    bound, depth, runs = pick(bound, spec.bound), pick(depth, spec.depth), pick(runs, spec.runs)
    preemptions = pick(preemptions, spec.preemptions)
    if preemptions is None:
        preemptions = default_preemptions(strategy, bound, depth)
    exp = resolved.exp
    cycles = preempt_cycles or spec.preempt_cycles or exp.hardware.cpu.interrupts.duration
    if cycles < 1:
        raise InputError([Problem("--preempt-cycles", None, "",
                                  "cpu.interrupts.duration is 0: give --preempt-cycles")])
    ops = pick(preempt_in, spec.preempt_in)
    kinds = pick(preempt_before, spec.preempt_before)
    budget = Budget(
        preemptions, cycles, pick(evictions, spec.evictions),
        tuple(ops) if ops else None, pick(ties, spec.ties), tuple(kinds) if kinds else None,
    )
    oracles = tuple(o for o in ORACLES if o not in no_oracle)
    setup = Setup(exp, exp.scenario.run.seeds[0], budget, max_steps or BASELINE_MAX_STEPS,
                  expect_mode(resolved, expect), oracles)
    base = baseline_run(setup)
    hangs = any(f.check in ("unfinished", "livelock") for f in base.failures)
    setup = Setup(setup.exp, setup.seed, budget, max_steps or 20 * base.steps + 100_000,
                  setup.expect_mode, oracles, require_finish=not hangs)
    return setup, Options(strategy, bound, depth, runs, seed, jobs, stop_after)
