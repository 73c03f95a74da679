"""The hardware configuration tree: one typed model per block, mirroring the YAML.

The tree is the single source of truth for hardware parameters: hardware presets
(``configs/*.yaml``) are validated against it, every block reads its own node, and
the resolved tree is written beside every result. Models are strict (no silent type
coercion), reject unknown keys and are immutable.

Every latency is in cycles of one global clock (``clock_ghz``). Defaults follow
``shared/reference/hardware.md`` section (a); the source of each is noted there.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..tables.memory import PAGE_SIZE, TABLE_REGION_BASE, TABLE_REGION_SIZE

Cycles = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]


class Node(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class InterruptsConfig(Node):
    """Preemption of a CPU at transaction boundaries (what stretches race windows)."""

    mean_interval: Cycles = 0  # mean cycles between interrupts (exponential); 0 = none
    duration: Cycles = 4000  # cycles a CPU is taken away for
    distribution: Literal["fixed", "exponential"] = "fixed"  # of the duration


WorkCycles = Annotated[float, Field(ge=0.0)]  # may be fractional: see hwmodels.cpu


class WorkConfig(Node):
    """Cycles of each named CPU work cost (``tables.work``); 0 charges nothing.

    The defaults are the calibrated costs, charged on every preset: fitted on
    ``configs/i7-12700.yaml`` by ``experiment/perf_fit.py`` (``iommusim perf
    --calibrate``) to four published minima of the kernel's own map/unmap benchmark and
    to nothing else (docs/fidelity.md "The calibration"). ``level`` is derived, not
    fitted: the 5-cycle L1D load-to-use less the load the table code charges itself
    (``cpu.load_hit``): 1 with the default ``load_hit`` 4, 4 on the i7-12700 preset
    (``load_hit`` 1), which sets it. The other names
    keep the ratios of the instruction counts estimated from the C code (in
    parentheses) and share one cycles-per-instruction scale per group, solved by least
    squares: 1.022 for per-call work, 0.349 for per-item work. Other presets keep these
    cycle counts unscaled (their clocks and ``load_hit`` differ; the work is not
    re-fitted per machine).
    """

    core_call: WorkCycles = 81.75  # fitted: iommu_map / iommu_unmap entry and checks (80)
    op_call: WorkCycles = 102.19  # fitted: the op's entry, map_range / map_pages (100)
    level: WorkCycles = 1.0  # derived: L1D load-to-use 5 minus the default load_hit 4
    item_examine: WorkCycles = 2.09  # fitted: one item's decode in a loop (6)
    item_write: WorkCycles = 1.40  # fitted: one item's encoding (4)
    contig_setup: WorkCycles = 15.33  # fitted: one loop's set-up (15)
    pgsize_split: WorkCycles = 25.55  # fitted: iommu_pgsize / best_pgsize (25)
    gather: WorkCycles = 12.26  # fitted: one gather_range_pages / add_page (12)


class CpuConfig(Node):
    count: Positive = 4
    load_hit: Cycles = 4
    load_miss: Cycles = 250  # DRAM pointer chase, 270-287 measured
    store: Cycles = 4  # retired into the store buffer
    cmpxchg_local: Cycles = 20  # lock cmpxchg, line owned, 18-26 measured
    cmpxchg_remote: Cycles = 125  # line last written by another CPU, 122-132 measured
    clflush_line: Cycles = 260  # first line of clflush_cache_range incl. write-back
    clflushopt_extra_line: Cycles = 25  # each further line, overlapped
    mfence: Cycles = 35  # 26-46 measured
    jitter: Cycles = 0  # +/- cycles added to each transaction, seeded
    interrupts: InterruptsConfig = InterruptsConfig()
    work: WorkConfig = WorkConfig()


class CacheConfig(Node):
    line_bytes: Literal[32, 64, 128] = 64
    eviction: Literal["none", "random", "capacity"] = "none"
    eviction_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # per dirty line per cycle
    capacity_lines: Positive = 32768  # dirty lines kept under "capacity" (LRU beyond)


class DramConfig(Node):
    read: Cycles = 250
    write: Cycles = 250
    channels: Annotated[int, Field(ge=0)] = 0  # 0 = unlimited (no contention modelled)
    occupancy: Cycles = 0  # cycles one access holds a channel


class WriteBufferConfig(Node):
    """VT-d RWBF: written-back lines invisible to the walker until drained."""

    enabled: bool = False
    drain: Cycles = 1500  # cycles until a buffered line reaches DRAM by itself
    flush_cost: Cycles = 1500  # GCMD.WBF write + polling GSTS.WBFS


class IotlbConfig(Node):
    entries: Positive = 64
    ways: Annotated[int, Field(ge=0)] = 0  # 0 = fully associative (ways = entries)
    hit: Cycles = 8
    replacement: Literal["lru", "rr", "random"] = "lru"
    negative_caching: bool = False  # VT-d caching mode / AMD NpCache
    # Largest page one entry holds (log2 bytes). A larger leaf is cached as an entry of
    # this size around the accessed address ("splintering": an IOTLB without large-page
    # entries, a contiguous hint ignored, a nested walk whose other stage uses small
    # pages). None: an entry holds the leaf's own size.
    max_page_lg2: Annotated[int, Field(ge=12, le=63)] | None = None

    @model_validator(mode="after")
    def _geometry(self) -> IotlbConfig:
        if self.ways and self.entries % self.ways:
            raise ValueError(f"entries ({self.entries}) must be a multiple of ways ({self.ways})")
        return self


    @property
    def associativity(self) -> int:
        """Ways per set; ``ways: 0`` means one fully associative set."""
        return self.ways or self.entries


class WalkCacheConfig(Node):
    """Paging-structure caches: non-leaf entries per level (genpt level numbers)."""

    entries: dict[Annotated[int, Field(ge=1, le=5)], Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: {3: 4, 2: 8, 1: 32}
    )
    probe: Cycles = 10


class InvalidationConfig(Node):
    submit: Cycles = 50  # CPU cost to write one descriptor into the queue
    command: Cycles = 300  # queue cost to apply one invalidation descriptor
    wait: Cycles = 2000  # wait descriptor: completion write + the CPU's polling


class IommuConfig(Node):
    coherent_walk: bool = False  # True: the walker snoops CPU caches (ECAP.C / COHACC)
    snoop: Cycles = 120  # walker read served from a dirty CPU line (coherent walk)
    write_buffer: WriteBufferConfig = WriteBufferConfig()
    iotlb: IotlbConfig = IotlbConfig()
    walk_cache: WalkCacheConfig = WalkCacheConfig()
    walker_slots: Positive = 8
    merge_walks: bool = True  # requests for a page being walked wait for that walk
    link: Cycles = 20  # device <-> IOMMU, each way
    access_dirty: bool = True  # the walker sets A/D bits where the format has them
    # Table depths (number of levels) the walker can walk, e.g. [4] for VT-d SAGAW=4-level
    # only; None = any depth the format allows.
    walk_levels: list[Annotated[int, Field(ge=2, le=6)]] | None = None
    invalidation: InvalidationConfig = InvalidationConfig()


class AllocatorConfig(Node):
    """The table-page allocator: the region table pages come from, costs, fault injection.

    hardware.md has no measured allocator cost; ``alloc`` and ``free`` are an
    [assumption] (a per-CPU page-list fast path of a few hundred cycles). Zeroing a new
    page is charged separately, as one ``cpu.store`` per cache line.
    """

    base: Annotated[int, Field(ge=0)] = TABLE_REGION_BASE  # physical address, page aligned
    size: Positive = TABLE_REGION_SIZE  # bytes, whole pages
    alloc: Cycles = 400  # [assumption] page allocator fast path
    free: Cycles = 200  # [assumption]
    fail_nth: Positive | None = None  # the Nth allocation (from 1) fails
    fail_probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # each allocation, seeded

    @model_validator(mode="after")
    def _aligned(self) -> AllocatorConfig:
        if self.base % PAGE_SIZE or self.size % PAGE_SIZE:
            raise ValueError(f"base and size must be multiples of the page size ({PAGE_SIZE})")
        return self


class HardwareConfig(Node):
    clock_ghz: Annotated[float, Field(gt=0.0)] = 2.5
    cpu: CpuConfig = CpuConfig()
    cache: CacheConfig = CacheConfig()
    dram: DramConfig = DramConfig()
    iommu: IommuConfig = IommuConfig()
    allocator: AllocatorConfig = AllocatorConfig()

    def ns(self, cycles: float) -> float:
        """Convert cycles of this machine's clock to nanoseconds."""
        return cycles / self.clock_ghz
