"""Parts chosen by name: every name a config or option accepts has its part, and the
part chosen is the one named."""

from __future__ import annotations

import random
import typing

import pytest

from iommusim.experiment.metrics import GROUPS, METRICS
from iommusim.experiment.table import TABLE_IMPLEMENTATIONS
from iommusim.explore.search import STRATEGIES
from iommusim.explore.strategies import RUN_STRATEGIES, Forced, Pct, RandomWalk, RunSpec
from iommusim.hwmodels.assoc import REPLACEMENTS, AssocArray
from iommusim.hwmodels.config import CacheConfig, IotlbConfig
from iommusim.hwmodels.memsys import EVICTIONS, CapacityEviction, NoEviction, RandomEviction
from iommusim.plots import render
from iommusim.plots.kinds import KINDS, accepting
from iommusim.scenarios.schema import ExploreSpec, TableSpec


def literal(model: type, field: str) -> set[str]:
    return set(typing.get_args(model.model_fields[field].annotation))


def test_config_names_are_the_registries() -> None:
    assert literal(IotlbConfig, "replacement") == set(REPLACEMENTS)
    assert literal(CacheConfig, "eviction") == set(EVICTIONS)
    assert literal(ExploreSpec, "strategy") == set(STRATEGIES)
    assert literal(TableSpec, "implementation") == set(TABLE_IMPLEMENTATIONS)


@pytest.mark.parametrize("name,victims", [("lru", [1, 2, 0]), ("rr", [0, 1, 2])])
def test_replacement_by_name_picks_its_victim(name: str, victims: list[int]) -> None:
    arr = AssocArray(1, 3, name)
    for key in (0, 1, 2):
        arr.put(0, key, key)
    arr.get(0, 0)  # a use: lru now evicts 1 first, rr ignores it
    evicted = [arr.put(0, 10 + i, i) for i in range(3)]
    assert evicted == victims


def test_random_replacement_is_seeded() -> None:
    def run(seed: int) -> list[object]:
        arr = AssocArray(1, 4, "random", random.Random(seed))
        return [arr.put(0, k, k) for k in range(12)]

    assert run(1) == run(1) and run(1) != run(2)


def test_eviction_by_name() -> None:
    class Mem:
        cfg = CacheConfig(eviction="random", eviction_rate=0.5)
        env = None
        name = "cache"

    assert type(EVICTIONS["none"](Mem, 1)) is NoEviction  # type: ignore[arg-type]
    assert type(EVICTIONS["capacity"](Mem, 1)) is CapacityEviction  # type: ignore[arg-type]
    Mem.cfg = CacheConfig(eviction="random", eviction_rate=0.0)
    assert type(EVICTIONS["random"](Mem, 1)) is NoEviction  # type: ignore[arg-type]
    assert issubclass(RandomEviction, NoEviction)


def test_run_strategies_by_name() -> None:
    assert isinstance(RUN_STRATEGIES["forced"](RunSpec("forced")), Forced)
    assert isinstance(RunSpec("random", p_preempt=0.5).make(), RandomWalk)
    assert isinstance(RunSpec("pct", depth=3, k=10).make(), Pct)


def test_plot_kinds_have_their_drawers() -> None:
    for kind in KINDS.values():
        assert callable(getattr(render, kind.drawer))
    assert accepting("x") == ["sweep", "reach"]
    assert accepting("window") == ["timeline"]


def test_metric_groups_name_every_metric_once() -> None:
    names = [n for g in GROUPS for n in g.names]
    assert len(names) == len(set(names)) == len(METRICS)
