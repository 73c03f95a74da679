"""Exact look-ahead (issue 8): with it on and off, every catalog scenario gives the same
results and the same event-by-event trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from iommusim.experiment.runner import run_experiment
from iommusim.scenarios.resolve import catalog_dir

CATALOG = sorted(catalog_dir().glob("*.yaml"))


def outcome(path: Path, lookahead: bool) -> list[tuple[dict, list]]:
    sets = [f"run.lookahead={str(lookahead).lower()}"]
    (point,) = run_experiment(path, sets, seeds=[1, 2], jobs=1, trace=True)
    return [(run.to_json(), run.trace) for run in point.runs]


@pytest.mark.parametrize("path", CATALOG, ids=[p.stem for p in CATALOG])
def test_lookahead_changes_nothing(path: Path) -> None:
    on, off = outcome(path, True), outcome(path, False)
    for (result_on, trace_on), (result_off, trace_off) in zip(on, off, strict=True):
        assert result_on == result_off
        assert trace_on == trace_off
        assert trace_on, "the scenario must do something for the comparison to mean anything"
