"""The share of seeds that show a bug's symptom: what a reader of a race sweep wants
("the race reproduces on 78% of the seeds") rather than a mean count of faults.

The symptom comes from the results file itself: the scenario's ``regression:`` guard,
else its ``expect:`` conditions (the catalog states symptoms there). Conditions are the
``expect:`` language ("> 0"); plots read results files only and import nothing of the
scenarios package, so the few lines that evaluate one live here too.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from .data import run_metric

_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge,
    "<": operator.lt, ">": operator.gt,
}
_CONDITION = re.compile(r"\s*(==|!=|<=|>=|<|>)\s*(-?[0-9.]+(?:[eE][-+]?\d+)?)\s*")


def holds(condition: str, value: float) -> bool:
    """``holds("> 0", 3)``; a condition that does not parse never holds."""
    m = _CONDITION.fullmatch(condition)
    return bool(m) and _OPS[m[1]](float(value), float(m[2]))


def _conditions(results: dict[str, Any]) -> dict[str, str]:
    """The symptom as written: the guard's, else the expectations'."""
    scenario = results.get("scenario") or {}
    guard = scenario.get("regression") or {}
    if guard.get("symptom"):
        return dict(guard["symptom"])
    expect = scenario.get("expect") or {}
    return {m: (e["condition"] if isinstance(e, dict) else str(e)) for m, e in expect.items()}


def symptom(results: dict[str, Any], metric: str | None = None) -> dict[str, str]:
    """metric -> condition of the symptom; with ``metric``, that metric alone (its own
    condition, or ``> 0`` when neither the guard nor the expectations name it)."""
    conditions = _conditions(results)
    if metric is not None:
        return {metric: conditions.get(metric, "> 0")}
    return conditions


def is_race_sweep(sweep: dict[str, Any]) -> bool:
    """A sweep over a fix switch, or of a scenario that declares a regression guard."""
    first = sweep["points"][0]["results"]
    swept_fix = any(p.startswith("kernel.fixes.") for p in sweep.get("parameters", []))
    guarded = bool((first.get("scenario") or {}).get("regression"))
    return (swept_fix or guarded) and bool(_conditions(first))


def share(results: dict[str, Any], conditions: dict[str, str]) -> float | None:
    """Percent of the seeds on which any of the conditions holds (None: a metric is
    missing from the results)."""
    runs = results.get("runs") or []
    hits = 0
    for run in runs:
        values = {m: run_metric(run, m) for m in conditions}
        if any(v is None for v in values.values()):
            return None
        hits += any(holds(c, values[m]) for m, c in conditions.items())  # type: ignore[arg-type]
    return 100.0 * hits / len(runs) if runs else None


def describe_symptom(conditions: dict[str, str]) -> str:
    return " or ".join(f"{m} {c}" for m, c in conditions.items())
