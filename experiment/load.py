"""Loading a scenario for running: the input language's checks plus the two only this
layer can make (the table can be created; the ``expect:`` metrics exist)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..scenarios.checks import RunChecks
from ..scenarios.resolve import Experiment, load_experiment
from ..scenarios.yamldoc import Override
from . import metrics
from .table import make_table

RUN_CHECKS = RunChecks(
    make_table=lambda s, hw: make_table(s, hw),
    metric_known=metrics.is_known,
    metric_names=metrics.concrete_names,
)


def load(path: Path, sets: Sequence[str | Override] = ()) -> Experiment:
    """``scenarios.resolve.load_experiment`` with every check."""
    return load_experiment(path, sets, RUN_CHECKS)
