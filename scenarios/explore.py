"""Schedule exploration: run one small experiment under many schedules, check oracles.

``iommusim explore`` resolves the scenario (its ``explore:`` section or the defaults
of a known catalog race, then ``--set``), turns the configured noise off (interrupts
and jitter: the explorer's choices are then the only nondeterminism), and runs the
scenario's first seed under a ``scenarios.control.Controller``:

1. the FIFO run (stock SimPy order, no preemption, no eviction): run 0. It fixes k, the
   number of choice points, and the step bound;
2. then, by strategy:

   ``dfs``
       every choice list with at most ``bound`` deviations from FIFO, fewest first
       (all lists with one deviation, then with two, ...). The lists with b+1
       deviations extend those with b: a deviation at a choice point after the last
       deviation of a run with b, so every list is run once. Deterministic order;
       ``runs`` caps the total; the space is *exhausted* when every list was run.
   ``random``
       ``runs - 1`` runs, seeded ``(seed, run)``: a uniform pick at every tie, a
       preemption at a boundary with probability ``preemptions / boundaries``.
   ``pct``
       ``runs - 1`` PCT runs of depth ``depth`` (``control.Pct``).

Every run is checked, in this order: ``livelock`` (the step bound was hit),
``unfinished`` (CPUs or devices still busy at ``run.until`` although the FIFO run
finished), ``crash`` (the simulation raised), and the oracles

- ``visibility``: every completed map is translatable by the hardware walker when it
  returns, the driver's syncs included (``cpu.map.invisible == 0``);
- ``use_after_free``: no walker read of a freed table page (``uaf.events == 0``);
- ``stale_after_unmap``: no DMA issued after the unmap (+ IOTLB sync) of its page had
  completed is translated to the old page (``dma.stale_after_unmap == 0``; DMAs in
  flight during an unmap are the legitimate window);
- ``leak``: no table page is left after deinit (``table.leaked_pages == 0``);

then the scenario's ``expect``, by mode: ``hold`` (a run violating an expectation
fails; the default for your own scenarios), ``symptom`` (the expectations describe
the bug, as in the catalog, whose default this is: a run showing one fails) or
``ignore``. A failing run is *shrunk* (its deviations dropped one at a time while the
same first check still fails), run once more with the trace on, and saved as a
replay file (``scenarios.replay``).

Runs are independent, so ``jobs`` processes run them; results are consumed in the
enumeration order, so ``--jobs 2`` runs exactly the choice lists ``--jobs 1`` runs and
stops at the same failure.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import metrics as M
from .control import (
    EVICT,
    PREEMPT,
    TIE,
    Budget,
    Controller,
    Deviation,
    Forced,
    Key,
    Pct,
    RandomWalk,
    Strategy,
)
from .problems import InputError, Problem
from .resolve import Experiment, catalog_dir, load_experiment
from .schema import ExploreSpec
from .system import RunResult, simulate
from .yamldoc import Override, parse_set

STRATEGIES = ("random", "pct", "dfs")
EXPECT_MODES = ("hold", "symptom", "ignore")
ORACLES = ("visibility", "use_after_free", "stale_after_unmap", "leak")
BASELINE_MAX_STEPS = 50_000_000
SHRINK_RUNS = 200  # at most this many runs to shrink one failure

# The catalog scenarios explore knows, with the fix switch each is about and the
# explore defaults for a file without an `explore:` section (a file's own section wins).
# The sets shrink a scenario to a size whose bounded space a test can run in seconds.
# ``race``: the symptom depends on the schedule (FIFO may not show it; a deviation
# does); the others are bugs that show under any schedule (run 0 finds them) and are
# explored to check that their fix holds under every schedule within the bound.
# unmap-overflush is left out: it is a performance scenario (a preemption inside an
# unmap makes its latency "symptom" true with the fix on).
@dataclass(frozen=True)
class CatalogEntry:
    switch: str
    race: bool
    spec: ExploreSpec


def _entry(switch: str, race: bool, sets: list[str], **kw: Any) -> CatalogEntry:
    return CatalogEntry(switch, race, ExploreSpec(strategy="dfs", bound=1, runs=2000,
                                                  sets=sets, **kw))


CATALOG: dict[str, CatalogEntry] = {
    # one round of the two CPUs' race for the new level-0 table
    "shared-level-flush": _entry(
        "flush_done_sw_bit", True,
        ["cpus.0.ops.2.repeat.count=1", "cpus.1.ops.0.repeat.count=1"],
    ),
    # the top-growth race only: without the injected allocation failure, whose leak
    # (fix off) needs no schedule and would stop the search at run 0
    "increase-top-race": _entry("increase_top", True, ["kernel.alloc_faults=null"]),
    # one map/unmap round of the 2M range, DMAs before and after the unmap; only the
    # unmap's table-lifetime transactions are preemption points (the 512 leaf stores
    # would make a thousand of them)
    "free-before-invalidate": _entry(
        "free_after_sync", False,
        ["cpus.0.ops.2.repeat.count=1", "devices.0.stream.start=7900",
         "devices.0.stream.gap=2000", "devices.0.stream.count=7"],
        preempt_in=["unmap"],
        preempt_before=["free_table", "invalidate_range", "invalidate_all",
                        "wait_invalidation", "flush_write_buffer"],
    ),
    "gather-no-gaps": _entry(
        "gather_always_add_range", False,
        ["cpus.0.ops.0.repeat.count=2", "cpus.0.ops.2.repeat.count=2",
         "devices.1.stream.count=2"],
    ),
    "short-gather": _entry("gather_unmapped_length", False, []),
    "no-cache-flush": _entry(
        "cache_flush", False,
        ["cpus.0.ops.0.map_range_random.count=2", "cpus.1.ops.0.map_range_random.count=2"],
    ),
    "table-alloc-failure": _entry(
        "table_alloc_error", False,
        ["cpus.0.ops.0.map_range_random.count=2", "cpus.1.ops.0.map_range_random.count=2",
         "kernel.alloc_faults.probability=0", "kernel.alloc_faults.fail_nth=2"],
    ),
    "dirty-clear-without-flush": _entry(
        "dirty_clear_flush", False,
        ["cpus.0.ops.0.repeat.count=4", "cpus.0.ops.2.repeat.count=3",
         "devices.0.stream.count=20", "devices.0.stream.region.size=16K"],
    ),
    "vtd-3level-on-4level-hw": _entry(
        "vtd_top_level", False,
        ["cpus.0.ops.0.map_range_random.count=2", "cpus.1.ops.0.map_range_random.count=2"],
    ),
}


# --- what one exploration shares, what one run is ----------------------------------
@dataclass(frozen=True)
class Setup:
    """Everything every run of one exploration shares (sent once to each worker)."""

    exp: Experiment
    seed: int  # the simulation seed
    budget: Budget
    max_steps: int
    expect_mode: str
    oracles: tuple[str, ...]
    require_finish: bool = True


@dataclass(frozen=True)
class RunSpec:
    """One run: a strategy and its parameters."""

    strategy: str  # "forced" (fifo, dfs, shrinking, replay), "random" or "pct"
    run: int = 0  # random/pct: the run number (with the strategy seed, the RNG seed)
    deviations: tuple[tuple[int, int], ...] = ()  # forced: (choice index, option)
    strategy_seed: int = 1
    depth: int = 2
    k: int = 1
    p_preempt: float = 0.0
    p_evict: float = 0.0
    expect_choices: tuple[tuple[str, int, int], ...] | None = None  # replay: verify
    keyed: tuple[tuple[Key, int], ...] = ()  # forced: (choice key, option), for shrinking

    def make(self) -> Strategy:
        if self.strategy == "random":
            return RandomWalk(self.strategy_seed, self.run, self.p_preempt, self.p_evict)
        if self.strategy == "pct":
            return Pct(self.strategy_seed, self.run, self.depth, self.k, self.p_evict)
        return Forced(dict(self.deviations), self.expect_choices, dict(self.keyed))


@dataclass(frozen=True)
class Failure:
    """A failed check: which, a sentence, and the cycle of its first evidence."""

    check: str  # livelock, crash, unfinished, an oracle, or expect:<metric>
    message: str
    cycle: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "message": self.message, "cycle": self.cycle}


@dataclass
class Outcome:
    """What one run did: its choice list, deviations and failed checks."""

    spec: RunSpec
    choices: list[tuple[str, int, int]]
    deviations: list[Deviation]
    failures: list[Failure]
    steps: int
    cycles: int
    preempted: int = 0
    evicted: int = 0
    diverged: str | None = None
    index: int = -1  # the run's number in the exploration
    result: RunResult | None = None  # kept when asked (replay files)
    shrunk: Outcome | None = None  # the shrunk, traced run saved for this failure

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def dev_pairs(self) -> tuple[tuple[int, int], ...]:
        return tuple((d.index, d.option) for d in self.deviations)

    @property
    def dev_keys(self) -> tuple[tuple[Key, int], ...]:
        return tuple((d.key, d.option) for d in self.deviations)

    def summary(self) -> dict[str, Any]:
        return {
            "run": self.index,
            "strategy": self.spec.strategy if self.spec.strategy != "forced"
            else "dfs" if self.spec.deviations else "fifo",
            "deviations": [list(p) for p in self.dev_pairs],
            "choice_points": len(self.choices),
            "steps": self.steps,
            "cycles": self.cycles,
            "failures": [f.check for f in self.failures],
        }


# --- one run -------------------------------------------------------------------------------
def run_one(setup: Setup, spec: RunSpec, *, trace: bool = False, keep: bool = False) -> Outcome:
    """Simulate once under ``spec``'s strategy and check everything."""
    strategy = spec.make()
    ctl = Controller(strategy, setup.budget, setup.max_steps)
    crash = None
    result = None
    try:
        result = simulate(setup.exp, setup.seed, trace=trace, explorer=ctl)
    except Exception as exc:  # a schedule that makes the code under test blow up
        crash = Failure(
            "crash",
            f"the simulation raised {type(exc).__name__}: {exc} "
            f"({traceback.extract_tb(exc.__traceback__)[-1].filename.rsplit('/', 1)[-1]}:"
            f"{traceback.extract_tb(exc.__traceback__)[-1].lineno})",
            ctl.env.now,
        )
    failures = [crash] if crash else check(setup, ctl, result)
    return Outcome(
        spec,
        ctl.choices,
        ctl.deviations,
        failures,
        ctl.env.steps,
        ctl.env.now,
        ctl.preempted,
        ctl.evicted,
        getattr(strategy, "diverged", None),
        result=result if keep else None,
    )


def _incident(result: RunResult, kind: str) -> dict[str, Any] | None:
    return next((i for i in result.incidents if i["kind"] == kind), None)


def check(setup: Setup, ctl: Controller, result: RunResult | None) -> list[Failure]:
    """The oracles and the scenario's expectations, in a fixed order."""
    assert result is not None
    m = result.metrics
    out: list[Failure] = []
    if ctl.env.livelocked:
        out.append(Failure(
            "livelock",
            f"no end after {setup.max_steps:,} events (cycle {ctl.env.now:,}): a schedule "
            "that never lets the run finish",
            ctl.env.now,
        ))
    elif setup.require_finish and not m["sim.finished"]:
        out.append(Failure(
            "unfinished",
            f"CPUs or devices still busy at run.until (cycle {ctl.env.now:,}): a deadlock "
            "or a hang",
            ctl.env.now,
        ))
    oracles = setup.oracles
    if "visibility" in oracles and m["cpu.map.invisible"]:
        inc = _incident(result, "invisible_map")
        assert inc is not None
        out.append(Failure(
            "visibility",
            f"{inc['device']}'s map of {inc['iova']:#x} -> {inc['pa']:#x} returned at cycle "
            f"{inc['cycle']:,} while the IOMMU could not translate it "
            f"({m['cpu.map.invisible']:.0f} such map(s))",
            inc["cycle"],
        ))
    if "use_after_free" in oracles and m["uaf.events"]:
        inc = _incident(result, "use_after_free")
        assert inc is not None
        out.append(Failure(
            "use_after_free",
            f"the walker read freed table memory {inc['pa']:#x} for {inc['device']}'s DMA to "
            f"{inc['iova']:#x} at cycle {inc['cycle']:,} ({m['uaf.events']:.0f} read(s))",
            inc["cycle"],
        ))
    late = ctl.stale_after_unmap
    if "stale_after_unmap" in oracles and late:
        issued, inc = late[0]
        out.append(Failure(
            "stale_after_unmap",
            f"{inc.device}'s DMA to {inc.iova:#x}, issued at cycle {issued:,} after the unmap "
            f"of its page had completed, was translated to {inc.pa:#x} (cycle {inc.cycle:,}; "
            f"{len(late)} such DMA(s))",
            inc.cycle,
        ))
    if "leak" in oracles and m["table.leaked_pages"]:
        out.append(Failure(
            "leak",
            f"{m['table.leaked_pages']:.0f} table page(s) still allocated after deinit",
            int(m["sim.cycles"]),
        ))
    if setup.expect_mode != "ignore":
        first_fault = result.faults[0] if result.faults else None
        for name, e in setup.exp.scenario.expect.items():
            holds = M.holds(e.condition, m[name])
            if setup.expect_mode == "symptom" and holds:
                what = f"the symptom {name} {e.condition} shows ({name} = {m[name]:g})"
            elif setup.expect_mode == "hold" and not holds:
                what = f"expect {name} {e.condition} fails ({name} = {m[name]:g})"
            else:
                continue
            cycle = None
            if first_fault is not None:
                f = first_fault
                what += (f"; first fault: {f['device']} {f['access']} {f['iova']:#x} "
                         f"{f['reason']} at cycle {f['cycle']:,}")
                cycle = f["cycle"]
            elif result.incidents:
                i = result.incidents[0]
                what += (f"; first incident: {i['kind']} by {i['device']} at {i['iova']:#x}, "
                         f"cycle {i['cycle']:,}")
                cycle = i["cycle"]
            out.append(Failure(f"expect:{name}", what, cycle))
    return out


# --- workers ---------------------------------------------------------------------------------
_SETUP: Setup | None = None


def _init_worker(setup: Setup) -> None:
    global _SETUP
    _SETUP = setup


def _task(spec: RunSpec) -> Outcome:
    assert _SETUP is not None
    return run_one(_SETUP, spec)


class Runner:
    """Runs specs in order, in ``jobs`` processes; yields outcomes in the given order."""

    def __init__(self, setup: Setup, jobs: int) -> None:
        self.setup = setup
        self.jobs = jobs
        self._pool: Any = None

    def __enter__(self) -> Runner:
        if self.jobs > 1:
            ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            self._pool = ctx.Pool(self.jobs, initializer=_init_worker, initargs=(self.setup,))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()

    def map(self, specs: Iterable[RunSpec]) -> Iterator[Outcome]:
        if self._pool is None:
            for spec in specs:
                yield run_one(self.setup, spec)
        else:
            yield from self._pool.imap(_task, specs, chunksize=2)


# --- the search -------------------------------------------------------------------------------
@dataclass
class Options:
    strategy: str = "dfs"
    bound: int = 1
    depth: int = 2
    runs: int = 1000
    seed: int = 1  # the random/pct strategy seed
    jobs: int = 1
    stop_after: int = 1  # stop after this many failing runs (0: run the whole budget)


@dataclass
class Report:
    """The exploration's outcome, for printing and explore.json."""

    options: Options
    setup: Setup
    baseline: Outcome
    outcomes: list[Outcome] = field(default_factory=list)
    exhausted: bool | None = None  # dfs: every choice list within the bound was run
    stopped: bool = False  # stopped after stop_after failures

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failed]

    @property
    def k(self) -> int:
        return len(self.baseline.choices)

    @property
    def threads(self) -> int:
        s = self.setup.exp.scenario
        return len(s.cpus) + len(s.devices)

    def pct_bound(self) -> float:
        return 1.0 / (self.threads * self.k ** (self.options.depth - 1)) if self.k else 1.0


def baseline_run(setup: Setup) -> Outcome:
    """The FIFO run. Raises InputError if it crashes (nothing to explore then)."""
    out = run_one(setup, RunSpec("forced"))
    out.index = 0
    return out


def explore(setup: Setup, opts: Options,
            progress: Callable[[int, int], None] | None = None) -> Report:
    """Run the exploration; ``setup.max_steps`` must already be set."""
    baseline = baseline_run(setup)
    report = Report(opts, setup, baseline, [baseline])
    failures = int(baseline.failed)
    if opts.stop_after and failures >= opts.stop_after:
        report.stopped = True
        report.exhausted = False if opts.strategy == "dfs" else None
        return report
    budget_left = opts.runs - 1
    with Runner(setup, opts.jobs) as runner:
        if opts.strategy == "dfs":
            frontier = [baseline]
            report.exhausted = True
            for _level in range(opts.bound):
                specs = dfs_children(frontier)
                batch = list(itertools.islice(specs, budget_left))
                more = next(specs, None) is not None
                next_frontier = []
                for out in runner.map(batch):
                    out.index = len(report.outcomes)
                    report.outcomes.append(out)
                    budget_left -= 1
                    next_frontier.append(out)
                    if progress:
                        progress(len(report.outcomes), opts.runs)
                    if out.failed:
                        failures += 1
                        if opts.stop_after and failures >= opts.stop_after:
                            report.stopped = True
                            report.exhausted = False
                            return report
                if more:
                    report.exhausted = False
                    break
                if not batch:
                    break
                frontier = next_frontier
        else:
            p_preempt, p_evict = probabilities(setup, baseline)
            specs = (
                RunSpec(opts.strategy, run=i, strategy_seed=opts.seed, depth=opts.depth,
                        k=max(1, len(baseline.choices)), p_preempt=p_preempt, p_evict=p_evict)
                for i in range(1, opts.runs)
            )
            for out in runner.map(specs):
                out.index = len(report.outcomes)
                report.outcomes.append(out)
                if progress:
                    progress(len(report.outcomes), opts.runs)
                if out.failed:
                    failures += 1
                    if opts.stop_after and failures >= opts.stop_after:
                        report.stopped = True
                        break
    return report


def dfs_children(parents: Sequence[Outcome]) -> Iterator[RunSpec]:
    """The choice lists with one more deviation, after each parent's last one, in
    order: parent, then choice point, then option."""
    for parent in parents:
        devs = parent.dev_pairs
        start = devs[-1][0] + 1 if devs else 0
        for i in range(start, len(parent.choices)):
            n = parent.choices[i][2]
            for option in range(1, n):
                yield RunSpec("forced", deviations=(*devs, (i, option)))


def probabilities(setup: Setup, baseline: Outcome) -> tuple[float, float]:
    """random: preempt / evict at a boundary so that a run spends about its budget."""
    boundaries = sum(1 for c in baseline.choices if c[0] == PREEMPT)
    evictable = sum(1 for c in baseline.choices if c[0] == EVICT)
    b = setup.budget
    p_preempt = min(0.5, b.preemptions / boundaries) if boundaries else 0.0
    p_evict = min(0.5, b.evictions / evictable) if evictable else 0.0
    return p_preempt, p_evict


# --- shrinking ---------------------------------------------------------------------------------
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


# --- resolving an exploration's experiment ---------------------------------------------------
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
    if in_catalog(path) and path.stem in CATALOG:
        return CATALOG[path.stem].spec, "the catalog list (scenarios/explore.py)"
    return ExploreSpec(), "built-in defaults"


def is_explorable(path: Path) -> bool:
    """A scenario with explore defaults: in the catalog list, or declaring an
    ``explore:`` section."""
    if in_catalog(path) and path.stem in CATALOG:
        return True
    try:
        return load_experiment(path).scenario.explore is not None
    except InputError:
        return False


def resolve(path: Path, sets: Sequence[str], *, keep_noise: bool = False) -> Resolved:
    """The experiment to explore: file, explore sets, --set, noise off."""
    first = load_experiment(path, list(sets))
    spec, source = explore_defaults(path, first)

    def labelled(texts: Sequence[str], origin: str) -> list[Override]:
        out = []
        for text in texts:
            ov = parse_set(text)
            out.append(Override(ov.path, ov.value, origin, None, text))
        return out

    overrides = [*labelled(spec.sets, f"explore sets ({source})"), *sets]
    exp = load_experiment(path, overrides) if spec.sets else first
    quiet: list[str] = []
    if not keep_noise:
        quiet = noise_sets(exp)
        overrides += labelled(quiet, "explore (interrupts and jitter off)")
        exp = load_experiment(path, overrides)
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


def describe_choices(choices: Sequence[tuple[str, int, int]]) -> str:
    counts = {k: sum(1 for c in choices if c[0] == k) for k in (PREEMPT, TIE, EVICT)}
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    return f"{len(choices)} ({', '.join(parts)})" if parts else "0"
