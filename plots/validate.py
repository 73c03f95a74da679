"""The shape of the results files the figures read, checked before drawing.

A results.json or index.json handed to ``iommusim plot`` may be from another version,
edited by hand, or not iommusim's at all. The figures read it with plain dict access,
so a wrong type deep inside (a metric that is a string, a histogram bucket that is not
a number, runs that are not a list) would end in a traceback halfway through drawing.
These models name what the figures read, with strict JSON types; other keys are
allowed (a newer writer may add some). Every mismatch is reported as
``file:line: key.path: message`` (``errors.json_line``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..errors import InputError, Problem, format_path, json_line

RESULTS_SCHEMA = "iommusim.results/1"
SWEEP_SCHEMA = "iommusim.sweep/1"


class _Open(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


def _number_key(value: Any) -> Any:
    """A histogram bucket: a JSON object key that reads as a number ("1200", "3.0")."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number (a histogram bucket)") from None
    return value


Bucket = Annotated[str, BeforeValidator(_number_key)]
Count = Annotated[int, Field(ge=0)]


class _Run(_Open):
    seed: int
    metrics: dict[str, float]
    faults: list[dict[str, Any]] = []
    incidents: list[dict[str, Any]] = []
    distributions: dict[str, dict[str, dict[Bucket, Count]]] = {}
    stats: dict[str, dict[str, Any]] = {}


class _Expectation(_Open):
    condition: str
    seeds: str = "all"


class _Regression(_Open):
    symptom: dict[str, str] = {}


class _Kernel(_Open):
    fixes: dict[str, bool] = {}


class _Scenario(_Open):
    name: str = ""
    hardware: str = ""
    kernel: _Kernel = _Kernel()
    expect: dict[str, _Expectation | str] = {}
    regression: _Regression | None = None


class _Iotlb(_Open):
    entries: int | None = None


class _Iommu(_Open):
    iotlb: _Iotlb = _Iotlb()


class _Hardware(_Open):
    clock_ghz: float | None = None
    iommu: _Iommu = _Iommu()


class ResultsFile(_Open):
    schema_: Literal[RESULTS_SCHEMA] = Field(alias="schema")  # type: ignore[valid-type]
    scenario: _Scenario = _Scenario()
    hardware: _Hardware = _Hardware()
    sweep: dict[str, Any] | None = None
    runs: Annotated[list[_Run], Field(min_length=1)]
    expect: list[dict[str, Any]] = []


class _Point(_Open):
    values: dict[str, Any] = {}
    results: str


class SweepIndex(_Open):
    schema_: Literal[SWEEP_SCHEMA] = Field(alias="schema")  # type: ignore[valid-type]
    parameters: list[str] = []
    points: Annotated[list[_Point], Field(min_length=1)]


def check(model: type[BaseModel], source: str, text: str) -> None:
    """InputError listing every mismatch of ``text`` (a JSON document) with ``model``."""
    try:
        model.model_validate_json(text)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False)[:20]:
            loc = tuple(err["loc"])
            if err["type"] == "missing":
                message = f"missing required key {loc[-1]!r}"
            else:
                message = f"{err['msg'][0].lower()}{err['msg'][1:]}".removeprefix(
                    "value error, ")
                if "input" in err and not isinstance(err["input"], dict | list):
                    message += f" (got {err['input']!r})"
            problems.append(Problem(source, json_line(text, loc), format_path(loc), message))
        raise InputError(problems) from None
