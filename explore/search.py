"""Schedule exploration: run one small experiment under many schedules, check oracles.

``iommusim explore`` resolves the scenario (its ``explore:`` section or the defaults
of a known catalog race, then ``--set``), turns the configured noise off (interrupts
and jitter: the explorer's choices are then the only nondeterminism), and runs the
scenario's first seed under an ``explore.control.Controller``:

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
replay file (``explore.replay``).

Runs are independent, so ``jobs`` processes run them; results are consumed in the
enumeration order, so ``--jobs 2`` runs exactly the choice lists ``--jobs 1`` runs and
stops at the same failure.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..experiment.assembly import RunResult, simulate
from ..experiment.oracles import Failure, judge
from ..experiment.pool import WorkerPool
from ..scenarios.resolve import Experiment
from .control import EVICT, PREEMPT, TIE, Budget, Controller, Deviation, Key
from .strategies import RunSpec

Progress = Callable[[int, int], None]


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


def check(setup: Setup, ctl: Controller, result: RunResult | None) -> list[Failure]:
    """The run's own checks (livelock, unfinished), then the oracles and the
    scenario's expectations (``experiment.oracles.judge``), in a fixed order."""
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
    return out + judge(m, result.faults, result.incidents, result.stale_after_unmap,
                       oracles=setup.oracles, scenario=setup.exp.scenario,
                       expect_mode=setup.expect_mode)


# --- workers ---------------------------------------------------------------------------------
_SETUP: Setup | None = None


def _init_worker(setup: Setup) -> None:
    global _SETUP
    _SETUP = setup


def _task(spec: RunSpec) -> Outcome:
    assert _SETUP is not None
    return run_one(_SETUP, spec)


def run_all(setup: Setup, jobs: int) -> WorkerPool:
    """A pool whose ``imap(_task, specs)`` runs specs of ``setup`` in order."""
    return WorkerPool(jobs, _init_worker, (setup,))


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


def explore(setup: Setup, opts: Options, progress: Progress | None = None) -> Report:
    """Run the exploration; ``setup.max_steps`` must already be set."""
    baseline = baseline_run(setup)
    report = Report(opts, setup, baseline, [baseline])
    if opts.stop_after and int(baseline.failed) >= opts.stop_after:
        report.stopped = True
        report.exhausted = False if opts.strategy == "dfs" else None
        return report
    with run_all(setup, opts.jobs) as pool:
        STRATEGIES[opts.strategy](report, pool, progress)
    return report


def _record(report: Report, out: Outcome, progress: Progress | None) -> bool:
    """Add a run to the report; True when it was the failure to stop at."""
    out.index = len(report.outcomes)
    report.outcomes.append(out)
    if progress:
        progress(len(report.outcomes), report.options.runs)
    stop = report.options.stop_after
    if out.failed and stop and len(report.failures) >= stop:
        report.stopped = True
    return report.stopped


def search_dfs(report: Report, pool: WorkerPool, progress: Progress | None) -> None:
    """Every choice list with at most ``bound`` deviations, fewest first."""
    opts = report.options
    budget_left = opts.runs - 1
    frontier = [report.baseline]
    report.exhausted = True
    for _level in range(opts.bound):
        specs = dfs_children(frontier)
        batch = list(itertools.islice(specs, budget_left))
        more = next(specs, None) is not None
        frontier = []
        for out in pool.imap(_task, batch, chunksize=2):
            budget_left -= 1
            frontier.append(out)
            if _record(report, out, progress):
                report.exhausted = False
                return
        if more:
            report.exhausted = False
            return
        if not batch:
            return


def search_sampled(report: Report, pool: WorkerPool, progress: Progress | None) -> None:
    """``runs - 1`` runs of the random or pct run strategy, seeded by run number."""
    opts, baseline = report.options, report.baseline
    p_preempt, p_evict = probabilities(report.setup, baseline)
    specs = (
        RunSpec(opts.strategy, run=i, strategy_seed=opts.seed, depth=opts.depth,
                k=max(1, len(baseline.choices)), p_preempt=p_preempt, p_evict=p_evict)
        for i in range(1, opts.runs)
    )
    for out in pool.imap(_task, specs, chunksize=2):
        if _record(report, out, progress):
            return


# The explorer's strategies, by name: each runs its part of the search into the report.
STRATEGIES: dict[str, Callable[[Report, WorkerPool, Progress | None], None]] = {
    "random": search_sampled,
    "pct": search_sampled,
    "dfs": search_dfs,
}


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


def describe_choices(choices: Sequence[tuple[str, int, int]]) -> str:
    counts = {k: sum(1 for c in choices if c[0] == k) for k in (PREEMPT, TIE, EVICT)}
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    return f"{len(choices)} ({', '.join(parts)})" if parts else "0"
