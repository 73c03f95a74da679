"""Strategies: what to pick at each choice point of one run (see ``explore.control``),
chosen by name from ``RUN_STRATEGIES`` through a ``RunSpec``."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .control import HARDWARE, PREEMPT, TIE, ChoicePoint, Key

if TYPE_CHECKING:
    from .control import Controller


class Strategy:
    """Picks an option at each choice point. Subclasses override ``choose``."""

    name = "fifo"

    def begin(self, controller: Controller) -> None:
        """Called once the run's CPUs and devices are known, before the first step."""

    def choose(self, point: ChoicePoint) -> int:
        return 0

    def spin(self, owner: str) -> None:
        """Hint: ``owner`` ran many transactions at one cycle (a retry loop that costs
        nothing); a strategy that favours it could starve the others."""


Fifo = Strategy


class Forced(Strategy):
    """The options of given choice points, default elsewhere (dfs, shrinking, replay).

    Points are named by position in the choice list (``deviations``) or by key
    (``keyed``: kind, who, and how many such points came before -- "cpu0's 12th
    boundary", which survives a change earlier in the run that adds or removes other
    points; shrinking uses it). With ``expect`` (a full choice list) every point must
    match it in kind and number of options; the first mismatch is kept in ``diverged``."""

    name = "replay"

    def __init__(
        self,
        deviations: Mapping[int, int],
        expect: Sequence[tuple[str, int, int]] | None = None,
        keyed: Mapping[Key, int] | None = None,
    ) -> None:
        self.deviations = dict(deviations)
        self.keyed = dict(keyed or {})
        self.expect = expect
        self.clamped: list[int] = []  # forced options that this run did not offer
        self.diverged: str | None = None

    def choose(self, point: ChoicePoint) -> int:
        if self.expect is not None and self.diverged is None:
            if point.index >= len(self.expect):
                self.diverged = f"choice point {point.index} ({point.kind}) is not in the list"
            else:
                kind, _, n = self.expect[point.index]
                if (kind, n) != (point.kind, point.n):
                    self.diverged = (
                        f"choice point {point.index} at cycle {point.cycle}: the list has a "
                        f"{kind} with {n} options, the run a {point.kind} with {point.n}"
                    )
        option = self.deviations.get(point.index, 0) or self.keyed.get(point.key, 0)
        if option >= point.n:
            self.clamped.append(point.index)
            return 0
        return option


class RandomWalk(Strategy):
    """Uniform among tie candidates; preempts a CPU at a boundary with probability
    ``p_preempt``, evicts with probability ``p_evict`` (a uniformly chosen dirty line)."""

    name = "random"

    def __init__(self, seed: int, run: int, p_preempt: float, p_evict: float) -> None:
        self.rng = random.Random(f"random:{seed}:{run}")
        self.p_preempt = p_preempt
        self.p_evict = p_evict

    def choose(self, point: ChoicePoint) -> int:
        rng = self.rng
        if point.kind == TIE:
            return rng.randrange(point.n)
        if point.kind == PREEMPT:
            return int(rng.random() < self.p_preempt)
        return rng.randrange(1, point.n) if rng.random() < self.p_evict else 0


class Pct(Strategy):
    """Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010), mapped onto a
    timed model.

    Threads are the scenario's CPUs and devices (n of them); the events of the
    hardware itself (invalidation queue, write buffer, ...) belong to no thread. At the
    start each thread gets a distinct random priority in d..d+n-1, and d-1 distinct
    *change points* are drawn uniformly from the steps 1..k, where a step is a choice
    point (k: how many the FIFO run of the same experiment offered).

    - At a tie the candidate of the highest-priority thread runs (hardware events
      first, then FIFO among equals): who wins a same-cycle race follows the
      priorities, as PCT's scheduler runs the highest-priority enabled thread.
    - At the i-th change point the thread that is about to run gets priority i (below
      every initial one). At a tie, that thread's candidate is demoted and the choice
      is made again; at a CPU boundary the CPU is also preempted (option 1) -- in a
      timed model a thread cannot stop while time runs on, so "lower priority" is a
      bounded stall of ``preempt_cycles``, which is what opens the window between,
      say, a cmpxchg and its flush. Boundaries that are not change points never
      preempt: the preemption budget is d-1.
    - Evictions are not part of PCT: at an eviction point it behaves like ``random``.
    - Spin hint: a CPU that runs many transactions at one cycle gets the lowest
      priority, so that a priority order never starves the CPU it waits for.

    With these mappings a bug that needs a given order of d events among the
    choice points is found by one run with probability at least 1/(n * k^(d-1)).
    """

    name = "pct"

    def __init__(self, seed: int, run: int, depth: int, k: int, p_evict: float) -> None:
        self.rng = random.Random(f"pct:{seed}:{run}")
        self.depth = depth
        self.k = max(1, k)
        self.p_evict = p_evict
        self.priority: dict[str | None, float] = {HARDWARE: float("inf")}
        self.change: dict[int, int] = {}
        self._lowest = 0.0

    def begin(self, controller: Controller) -> None:
        threads = list(controller.threads)
        prios = list(range(self.depth, self.depth + len(threads)))
        self.rng.shuffle(prios)
        self.priority.update(zip(threads, prios, strict=True))
        steps = self.rng.sample(range(1, self.k + 1), min(self.depth - 1, self.k))
        self.change = {step: i for i, step in enumerate(sorted(steps), 1)}

    def _prio(self, owner: str | None) -> float:
        return self.priority.get(owner, 0.0)

    def _best(self, who: Sequence[str | None]) -> int:
        best = 0
        for i in range(1, len(who)):
            if self._prio(who[i]) > self._prio(who[best]):
                best = i
        return best

    def choose(self, point: ChoicePoint) -> int:
        step = point.index + 1
        demote = self.change.get(step)
        if point.kind == TIE:
            best = self._best(point.who)
            if demote is not None and point.who[best] is not HARDWARE:
                self.priority[point.who[best]] = demote
                best = self._best(point.who)
            return best
        if point.kind == PREEMPT:
            if demote is None:
                return 0
            self.priority[point.who[0]] = demote
            return 1
        return self.rng.randrange(1, point.n) if self.rng.random() < self.p_evict else 0

    def spin(self, owner: str) -> None:
        self._lowest -= 1.0
        self.priority[owner] = self._lowest


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
        return RUN_STRATEGIES[self.strategy](self)


RUN_STRATEGIES: dict[str, Callable[[RunSpec], Strategy]] = {
    "forced": lambda s: Forced(dict(s.deviations), s.expect_choices, dict(s.keyed)),
    "random": lambda s: RandomWalk(s.strategy_seed, s.run, s.p_preempt, s.p_evict),
    "pct": lambda s: Pct(s.strategy_seed, s.run, s.depth, s.k, s.p_evict),
}
