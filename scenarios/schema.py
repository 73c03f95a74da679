"""The scenario file schema: strict pydantic models whose tree mirrors the YAML.

Structure and types are checked here (every error in one pass, each with its key
path); checks that need the table format or the hardware (alignment, page sizes,
events nobody signals) live in ``scenarios.checks``.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
    model_validator,
)

from .. import units
from ..hwmodels.config import InterruptsConfig
from ..tables.fixes import Fixes
from ..tables.formats import FORMATS
from ..tables.transactions import ALL_KINDS
from .conditions import parse_condition


def parse_size(value: Any) -> Any:
    """Accept 4096, "4K", "2M", "1G" (binary units); leave other types to the schema."""
    return units.parse_size(value) if isinstance(value, str) else value


def size_json_schema(minimum: dict[str, int]) -> WithJsonSchema:
    return WithJsonSchema(
        {"anyOf": [{"type": "integer", **minimum},
                   {"type": "string", "pattern": units.SIZE_PATTERN}]}
    )


Size = Annotated[
    int, BeforeValidator(parse_size), Field(gt=0), size_json_schema({"exclusiveMinimum": 0})
]
Address = Annotated[int, Field(ge=0, lt=1 << 64)]
Cycles = Annotated[int, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]
PROT_LETTERS = {"r": "read", "w": "write"}
PROT_FLAGS = ("read", "write", "cache", "noexec", "mmio")


def check_prot(value: str) -> str:
    """"r", "w", "rw", or IOMMU prot flag names joined by "|" ("read|write|cache")."""
    words = value.split("|") if "|" in value or value in PROT_FLAGS else list(value)
    names = [PROT_LETTERS.get(w, w) for w in words]
    bad = [w for w in names if w not in PROT_FLAGS]
    if bad or not value:
        raise ValueError(f"{value!r} is not a protection; use r, w, rw or read|write|cache...")
    return value


Prot = Annotated[str, AfterValidator(check_prot)]


def prot_bits(value: str) -> int:
    """The IOMMU_* bits of a validated protection string."""
    words = value.split("|") if "|" in value or value in PROT_FLAGS else list(value)
    return sum(1 << PROT_FLAGS.index(PROT_LETTERS.get(w, w)) for w in set(words))

# Every format of tables/formats, so a new format needs no edit here.
FORMAT_NAMES = Literal[tuple(FORMATS)]  # type: ignore[valid-type]
# Which code builds the table: genpt (tables/), or the io-pgtable driver genpt replaced
# for the format (tables/iopgtable/: vtdss -> vtd, amdv1 -> amd-v1, x86_64 -> amd-v2,
# armv8 -> arm-lpae). experiment.table registers a builder under each name.
IMPLEMENTATION_NAMES = ("genpt", "io-pgtable")


class Node(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Region(Node):
    base: Address
    size: Size


# --- the table and the kernel ---------------------------------------------------------
class TableSpec(Node):
    format: FORMAT_NAMES
    implementation: Literal[IMPLEMENTATION_NAMES] = "genpt"  # type: ignore[valid-type]
    vasz_lg2: Annotated[int, Field(ge=1, le=64)] | None = None
    oasz_lg2: Annotated[int, Field(ge=1, le=64)] | None = None
    top_level: Annotated[int, Field(ge=0, le=5)] | None = None
    features: list[str] = []
    domain: Annotated[int, Field(ge=1)] = 1


# One boolean per fix switch of tables.fixes.Fixes, all on unless set.
FixSwitches = create_model(
    "FixSwitches",
    __base__=Node,
    __doc__="Fix switches (kernel.fixes): true = fixed, false = the historical bug.",
    **{f.name: (bool, True) for f in fields(Fixes)},
)


class AllocFaults(Node):
    """Table-allocation fault injection (kernel.alloc_faults): the Nth allocation of the
    workload, or each with a probability (seeded). Armed once the table exists, so the
    domain's own set-up never fails."""

    fail_nth: Annotated[int, Field(ge=1)] | None = None
    probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


class DriverSpec(Node):
    """Override what the driver does after a map (default: derived from the hardware)."""

    flush_write_buffer_on_map: bool | None = None
    invalidate_on_map: bool | None = None


class KernelSpec(Node):
    fixes: FixSwitches = FixSwitches()
    alloc_faults: AllocFaults | None = None
    debug: bool = False  # CONFIG_DEBUG_GENERIC_PT
    driver: DriverSpec = DriverSpec()


# --- CPU workloads --------------------------------------------------------------------
class MapSpec(Node):
    iova: Address
    pa: Address
    size: Size
    prot: Prot = "rw"


class UnmapSpec(Node):
    iova: Address
    size: Size


class MapRandomSpec(Node):
    """Map ``count`` ranges at random free places of ``region``, sizes drawn from ``sizes``."""

    count: Annotated[int, Field(ge=1)]
    sizes: Annotated[list[Size], Field(min_length=1)]
    region: Region
    pa_base: Address = 0x1_0000_0000
    prot: Prot = "rw"


class DirtySpec(Node):
    iova: Address
    size: Size
    no_clear: bool = False


class RepeatSpec(Node):
    """Run ``ops`` ``count`` times; iteration k shifts every IOVA and PA by k * stride
    (``stride: 0`` repeats the same addresses every round)."""

    count: Annotated[int, Field(ge=1)]
    stride: Annotated[
        int, BeforeValidator(parse_size), Field(ge=0), size_json_schema({"minimum": 0})
    ]
    ops: Annotated[list[Op], Field(min_length=1)]


OP_KINDS = (
    "map",
    "unmap",
    "signal",
    "wait",
    "delay",
    "map_range_random",
    "unmap_all",
    "read_and_clear_dirty",
    "repeat",
    "barrier",
)


def _op_json_schema(schema: dict[str, Any]) -> None:
    """For editors: an op is a mapping with a key, or the bare word ``unmap_all``."""
    mapping = dict(schema, minProperties=1)
    schema.clear()
    schema.update(
        title=mapping.pop("title", "Op"),
        description=mapping.pop("description", ""),
        anyOf=[mapping, {"const": "unmap_all"}],
    )


class Op(Node):
    """One CPU operation: a mapping with exactly one of the OP_KINDS keys."""

    model_config = ConfigDict(json_schema_extra=_op_json_schema)

    map: MapSpec | None = None
    unmap: UnmapSpec | None = None
    signal: Name | None = None
    wait: Name | None = None
    delay: Cycles | None = None
    map_range_random: MapRandomSpec | None = None
    unmap_all: Literal[True] | None = None
    read_and_clear_dirty: DirtySpec | None = None
    repeat: RepeatSpec | None = None
    barrier: Name | None = None  # wait until every CPU using this barrier reached it

    @model_validator(mode="before")
    @classmethod
    def _bare_words(cls, value: Any) -> Any:
        if value == "unmap_all":
            return {"unmap_all": True}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Op:
        given = [k for k in OP_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an operation needs exactly one of: {', '.join(OP_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in OP_KINDS if getattr(self, k) is not None)

    @property
    def body(self) -> Any:
        return getattr(self, self.kind)


class StartSpec(Node):
    """When something starts: at a cycle, or after a named event."""

    start: Cycles = 0
    after: Name | None = None


RepeatSpec.model_rebuild()


class CpuSpec(StartSpec):
    name: Name
    ops: list[Op] = []
    # This CPU's own interrupt load (default: the hardware's cpu.interrupts).
    interrupts: InterruptsConfig | None = None


# --- devices --------------------------------------------------------------------------
class DmaSpec(Node):
    iova: Address
    size: Size = 64
    access: Literal["read", "write"] = "read"
    at: Cycles | None = None
    after: Name | None = None


# Requests a stream keeps in flight at most: PCIe 6.0's 14-bit tags (a device's
# outstanding non-posted requests); each is a worker kept for the whole run.
MAX_OUTSTANDING = 1 << 14


class StreamSpec(StartSpec):
    pattern: Literal["sequential", "random"] = "sequential"
    region: Region
    count: Annotated[int, Field(ge=1)]
    size: Size = 64
    access: Literal["read", "write"] = "read"
    outstanding: Annotated[int, Field(ge=1, le=MAX_OUTSTANDING)] = 1
    gap: Cycles = 0


class FollowSpec(Node):
    """DMA to every range a CPU maps, the moment its map returns."""

    cpu: Name
    size: Size = 64
    access: Literal["read", "write"] = "write"
    offset: Annotated[int, Field(ge=0)] = 0  # from the start of each mapped range


class DeviceSpec(StartSpec):
    name: Name
    dma: list[DmaSpec] = []
    stream: StreamSpec | None = None
    follow: FollowSpec | None = None


# --- running --------------------------------------------------------------------------
MAX_SEEDS = 10_000
"""Seeds per sweep point (``run.seeds``, ``--seeds``): far beyond what a statistic needs
(the catalog uses 20, its slow tier 200), and a list that fits in memory."""
MAX_SEED = (1 << 63) - 1  # a seed value: a signed 64-bit integer, exact in results.json
MAX_EVENTS = 10_000_000
"""Default of ``run.max_events``: the events, skipped waits and CPU transactions one run
may take before it is stopped as a run that would not end (a minute or two of
simulation; every catalog scenario needs less than a tenth of it)."""


def seed_count(value: Any) -> Any:
    """``seeds: N`` means seeds 1..N; a list names the seeds (at most MAX_SEEDS)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"seeds must be at least 1, got {value}")
        if value > MAX_SEEDS:
            raise ValueError(f"at most {MAX_SEEDS:,} seeds per run, got {value:,}")
        return list(range(1, value + 1))
    if isinstance(value, list) and len(value) > MAX_SEEDS:
        raise ValueError(f"at most {MAX_SEEDS:,} seeds per run, got a list of {len(value):,}")
    return value


class RunSpec(Node):
    seeds: Annotated[
        list[Annotated[int, Field(ge=0, le=MAX_SEED)]],
        BeforeValidator(seed_count, json_schema_input_type=int | list[int]),
        Field(min_length=1),
    ] = [1]
    until: Annotated[int, Field(ge=1)] = 10_000_000
    # Events and CPU operations a run may take before it is stopped (hwmodels.sim.RunLimit).
    max_events: Annotated[int, Field(ge=1)] = MAX_EVENTS
    # Exact look-ahead (hwmodels.sim): same results, faster. Off only to check that.
    lookahead: bool = True


SEEDS_RE = re.compile(r"^(all|any|\d+(?:\.\d+)?%)$")


def expect_form(value: Any) -> Any:
    """``metric: "> 0"`` is shorthand for ``{condition: "> 0", seeds: all}``."""
    return {"condition": value} if isinstance(value, str) else value


def check_seeds(value: Any) -> Any:
    """all, any, or a percentage of the seeds from 0% to 100%."""
    if isinstance(value, str):
        m = SEEDS_RE.fullmatch(value)
        if not m or (value.endswith("%") and float(value[:-1]) > 100):
            raise ValueError(
                f"{value!r} is not a number of seeds; use all, any or a percentage such as 50%"
            )
    return value


class Expectation(Node):
    """A metric condition that must hold on ``seeds``: all, any, or at least N% of them."""

    condition: str
    seeds: Annotated[str, BeforeValidator(check_seeds), Field(pattern=SEEDS_RE.pattern)] = "all"

    def required(self, n: int) -> int:
        """How many of ``n`` seeds must satisfy the condition."""
        if self.seeds == "all":
            return n
        if self.seeds == "any":
            return 1
        return math.ceil(n * float(self.seeds[:-1]) / 100)


def check_set(value: str) -> str:
    key, sep, _ = value.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{value!r} is not KEY=VALUE (the --set syntax)")
    return value


def check_tx_kind(value: str) -> str:
    if value not in ALL_KINDS:
        raise ValueError(f"{value!r} is not a transaction kind; use {', '.join(sorted(ALL_KINDS))}")
    return value


class ExploreSpec(Node):
    """Defaults for ``iommusim explore`` on this scenario; command-line options win.

    ``sets`` shrink the scenario to a size worth exploring exhaustively (``--set``
    syntax, applied before the command line's). ``expect`` says what the scenario's
    ``expect:`` means to the explorer: ``hold`` (a run violating one fails), ``symptom``
    (they describe the bug, as in the catalog: a run showing one fails) or ``ignore``."""

    strategy: Literal["random", "pct", "dfs"] = "dfs"
    bound: Annotated[int, Field(ge=0)] = 1
    depth: Annotated[int, Field(ge=1)] = 2
    runs: Annotated[int, Field(ge=1)] = 1000
    preemptions: Annotated[int, Field(ge=0)] | None = None
    preempt_cycles: Annotated[int, Field(ge=1)] | None = None
    evictions: Annotated[int, Field(ge=0)] = 0
    # CPU operations inside which transaction boundaries are choice points (default all)
    preempt_in: list[Literal["map", "unmap", "read_and_clear_dirty"]] | None = None
    # transaction kinds before which boundaries are choice points (default all)
    preempt_before: list[Annotated[str, AfterValidator(check_tx_kind)]] | None = None
    ties: Literal["threads", "all"] = "threads"  # which same-cycle ties are choice points
    sets: list[Annotated[str, AfterValidator(check_set)]] = []
    expect: Literal["hold", "symptom", "ignore"] | None = None
    # The fix switch this scenario is about (its file turns it off), and whether the
    # symptom depends on the schedule (a race: the FIFO run may not show it, a
    # deviation does) rather than showing under any schedule.
    fix: Literal[tuple(f.name for f in fields(Fixes))] | None = None  # type: ignore[valid-type]
    race: bool = False


FIX_NAMES = tuple(f.name for f in fields(Fixes))
RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)%$")


def check_condition(value: str) -> str:
    """An ``expect:`` condition ("> 0"), checked where it is written."""
    parse_condition(value)
    return value


def check_rate(value: Any) -> Any:
    """A share of the seeds, ``N%`` with 0 < N <= 100: a guard that asks for 0% of the
    seeds would pass on a scenario that no longer reproduces anything."""
    if isinstance(value, str):
        m = RATE_RE.fullmatch(value.strip())
        if not m:
            raise ValueError(f"{value!r} is not a rate; write a percentage such as 50%")
        if not 0 < float(m[1]) <= 100:
            raise ValueError(f"{value!r} is out of range; a rate is above 0% and at most 100%")
        return value.strip()
    return value


class Regression(Node):
    """What the scenario guards, for ``iommusim check``: with the bug (``fix`` false, or
    the first value of each ``set`` key) the ``symptom`` shows on at least ``min_rate``
    of the seeds; with the fix (``fix`` true, or the second values) on none.

    ``fix`` names a kernel.fixes switch; ``set`` names any keys with their
    ``[bug, fixed]`` values (``table.implementation: [io-pgtable, genpt]``). A seed
    shows the symptom when any of its conditions holds."""

    fix: Literal[FIX_NAMES] | None = None  # type: ignore[valid-type]
    set: dict[str, Annotated[list[Any], Field(min_length=2, max_length=2)]] = {}
    symptom: Annotated[
        dict[str, Annotated[str, AfterValidator(check_condition)]], Field(min_length=1)
    ]
    min_rate: Annotated[
        str, BeforeValidator(check_rate), Field(pattern=RATE_RE.pattern)
    ] = "50%"

    @model_validator(mode="after")
    def _one_switch(self) -> Regression:
        if (self.fix is None) == (not self.set):
            raise ValueError("a regression guard needs exactly one of fix (a kernel.fixes "
                             "switch) or set (keys with [bug, fixed] values)")
        return self

    def sides(self) -> dict[str, dict[str, Any]]:
        """The key values of each side: ``{"off": {key: bug value}, "on": {...}}``."""
        if self.fix is not None:
            key = f"kernel.fixes.{self.fix}"
            return {"off": {key: False}, "on": {key: True}}
        return {side: {k: v[i] for k, v in self.set.items()}
                for i, side in enumerate(("off", "on"))}

    def rate(self) -> float:
        """``min_rate`` as a fraction of the seeds."""
        return float(self.min_rate[:-1]) / 100


class Scenario(Node):
    name: Name
    description: str = ""
    hardware: str = "vtd-incoherent"
    overrides: dict[str, Any] = {}
    table: TableSpec
    kernel: KernelSpec = KernelSpec()
    cpus: list[CpuSpec] = []
    devices: list[DeviceSpec] = []
    run: RunSpec = RunSpec()
    expect: dict[
        str,
        Annotated[
            Expectation, BeforeValidator(expect_form, json_schema_input_type=str | Expectation)
        ],
    ] = {}
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    explore: ExploreSpec | None = None  # defaults for `iommusim explore`
    regression: Regression | None = None  # what `iommusim check` verifies
