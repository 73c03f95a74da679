"""The condition language of ``expect:`` ("> 0", "<= 1.5e3"): parsing and evaluating."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

CONDITIONS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
CONDITION_RE = re.compile(r"\s*(==|!=|<=|>=|<|>)\s*(-?[0-9.]+(?:[eE][-+]?\d+)?)\s*")


def parse_condition(text: str) -> tuple[str, float]:
    """"> 0" -> (">", 0.0); ValueError with the accepted syntax otherwise."""
    m = CONDITION_RE.fullmatch(text)
    if not m:
        raise ValueError(
            f"{text!r} is not a condition; write an operator and a number, e.g. \"> 0\" "
            f"(operators: {' '.join(CONDITIONS)})"
        )
    return m[1], float(m[2])


def holds(condition: str, value: float) -> bool:
    op, bound = parse_condition(condition)
    return CONDITIONS[op](value, bound)
