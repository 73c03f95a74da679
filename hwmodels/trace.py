"""The event trace: what happened, when and where, for race timelines.

Components hold a ``Tracer`` or ``None`` and call ``emit`` only when they hold one, so
a run without tracing pays one ``is not None`` test per traced point and builds no
records. Each record is ``(cycle, component, event, fields)``; ``fields`` is a flat
dict of plain values (ints, strings, bools, None), ready to be written as JSON lines.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import simpy


class TraceRecord(NamedTuple):
    cycle: int
    component: str
    event: str
    fields: dict[str, Any]


class Tracer:
    """Collects trace records in the order they happen (simulation order)."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.records: list[TraceRecord] = []

    def emit(self, component: str, event: str, **fields: Any) -> None:
        self.records.append(TraceRecord(self.env.now, component, event, fields))
