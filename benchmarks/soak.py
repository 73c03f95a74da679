"""The soak tier (``make soak``; not part of ``make test``).

Four CPUs map and unmap 4K, 2M and 1G pages at random on one shared table, with
interrupts and jitter, while eight DMA engines hit what is mapped and what was just
unmapped; every DMA is judged against a shadow model (benchmarks/soak_model.py), and
every oracle is on:

- ``wrong_pa`` / ``fault_on_mapped``: a DMA to a stably mapped page went elsewhere or
  faulted; ``stale_after_unmap``: a DMA issued after an unmap completed still
  translated (the soak's probes and the explorer's oracle, experiment.oracles);
- ``invisible_map``: a map returned while the hardware could not translate it;
- ``use_after_free`` / ``non_table_read``: the walker read a freed page, or memory that
  was never a table;
- ``views_disagree``: the CPU view and the hardware (DRAM) view of a stable mapping or
  of an unmapped range differ (sampled while running, and at the end of every epoch);
- ``leak`` / ``bad_free``: table pages left after teardown, frees of non-table memory;
- ``missed_dirty``: device writes a dirty scan should have reported;
- ``overflush``: an unmap of one leaf flushed more than one cache line;
- ``op_error``: a map of a free range failed other than by an injected -ENOMEM, an
  unmap removed other than what was mapped.

The work is split over segments (machines) so that every fix switch matters in one of
them; ``--fix-off NAME`` runs with a switch off, ``--detect`` runs once per switch
(stopping at the first violation) and prints the detection table. Prints ops/s,
DMAs/s and peak RSS; exits 1 if anything was violated.

    python -m benchmarks.soak [--quick] [--seed S] [--fix-off NAME]... [--detect]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from iommusim.experiment.assembly import Assembly, build
from iommusim.experiment.oracles import dirty_log
from iommusim.hwmodels.sim import RunLimit, run_bounded
from iommusim.scenarios.resolve import Experiment, load_hardware, preset_dir
from iommusim.scenarios.schema import Scenario, TableSpec
from iommusim.scenarios.yamldoc import Override
from iommusim.tables.fixes import GENPT_FIXES, IOPGTABLE_FIXES

from .soak_model import G1, K4, Plan, Soak, Violations, Zone

CPUS, DEVICES = 4, 8
IRQ = {"mean_interval": 20_000, "duration": 2_000, "distribution": "exponential"}


@dataclass(frozen=True)
class Segment:
    """A machine and table, the share of the work it gets, over how many fresh tables
    (epochs), and the fix switches it is there to exercise."""

    name: str
    hardware: str
    overrides: dict[str, Any]
    table: dict[str, Any]
    share: float
    epochs: int
    exercises: tuple[str, ...]
    alloc_fail: float = 0.0
    cpu_irqs: tuple[dict[str, Any] | None, ...] = (None,) * CPUS
    zone_bases: tuple[int, ...] = tuple((c + 1) << 36 for c in range(CPUS))
    rendezvous: int | None = None  # base of the fresh windows of the rendezvous rounds
    round_every: int = 25  # a CPU's operations between two rendezvous rounds
    dirty: int | None = None  # base of the dirty zone
    large: bool = True


SEGMENTS = [
    Segment("vtd-incoherent", "vtd-incoherent",
            {"iommu.walk_levels": [4], "iommu.iotlb.max_page_lg2": 12, "cpu.jitter": 20,
             # as the catalog's shared-level-flush: interrupts stretch the window between
             # a round's winning cmpxchg and its flush
             "cpu.interrupts": {"mean_interval": 1000, "duration": 4000}},
            {"format": "vtdss", "vasz_lg2": 39, "top_level": 3, "features": ["dma_incoherent"]},
            0.55, 4,
            ("flush_done_sw_bit", "cache_flush", "table_alloc_error", "gather_unmapped_length",
             "free_after_sync", "vtd_top_level", "unmap_flush_changed_only"),
            alloc_fail=0.002, rendezvous=5 << 36, round_every=4),
    Segment("vtd-coherent", "vtd-coherent",
            {"iommu.iotlb.max_page_lg2": 12, "cpu.jitter": 20, "cpu.interrupts": IRQ},
            {"format": "vtdss", "vasz_lg2": 48, "top_level": 3},
            0.25, 2, ("dirty_clear_flush", "free_after_sync", "gather_unmapped_length"),
            rendezvous=5 << 36, dirty=6 << 36),
    Segment("amd-v1", "amd-v1",
            {"iommu.iotlb.negative_caching": True, "cpu.jitter": 20, "cpu.interrupts": IRQ},
            {"format": "amdv1", "top_level": 2,
             "features": ["dynamic_top", "amdv1_encrypt_tables", "amdv1_force_coherence",
                          "flush_range_no_gaps"]},
            0.12, 24, ("increase_top", "gather_always_add_range"), alloc_fail=0.01,
            zone_bases=(1 << 32, 1 << 41, 1 << 50, 1 << 58)),
    Segment("amd-v1-io-pgtable", "amd-v1", {"cpu.jitter": 0},
            {"format": "amdv1", "implementation": "io-pgtable", "top_level": 1,
             "features": ["dynamic_top", "amdv1_encrypt_tables", "amdv1_force_coherence"]},
            0.08, 24, ("amdv1_seqcount",),
            cpu_irqs=({"mean_interval": 0}, {"mean_interval": 1, "duration": 4000,
                                             "distribution": "exponential"}, None, None),
            zone_bases=(1 << 58, 1 << 31, 1 << 32, 1 << 33)),
]
FIXES = GENPT_FIXES + IOPGTABLE_FIXES


def available(seg: Segment) -> bool:
    """A segment needs its table implementation to exist in this tree."""
    return "implementation" not in seg.table or "implementation" in TableSpec.model_fields


# --- one epoch ---------------------------------------------------------------------------------
def experiment(seg: Segment, fixes_off: tuple[str, ...]) -> Experiment:
    hw_path = preset_dir() / f"{seg.hardware}.yaml"
    ovs = [Override(k, v, "soak", None, k) for k, v in seg.overrides.items()]
    hardware, hw_data = load_hardware(hw_path, ovs)
    cpus = [{"name": f"cpu{c}", **({"interrupts": irq} if irq else {})}
            for c, irq in enumerate(seg.cpu_irqs)]
    data = {
        "name": f"soak-{seg.name}", "hardware": seg.hardware, "table": seg.table,
        "kernel": {"fixes": dict.fromkeys(fixes_off, False),
                   "alloc_faults": {"probability": seg.alloc_fail} if seg.alloc_fail else None},
        "cpus": cpus, "run": {"until": 1 << 62},
    }
    return Experiment(Scenario.model_validate(data), hardware, data, hw_data, "soak",
                      str(hw_path))


def plan(seg: Segment, ops_per_cpu: int, dmas: int) -> Plan:
    zones = [{"4k": Zone(b, 64 << 20), "2m": Zone(b + G1, 8 * G1), "1g": Zone(b + 16 * G1,
                                                                             32 * G1)}
             for b in seg.zone_bases]
    return Plan(ops_per_cpu, dmas, zones,
                rendezvous=Zone(seg.rendezvous, 32 * G1) if seg.rendezvous else None,
                round_every=seg.round_every,
                dirty=Zone(seg.dirty, 32 * K4) if seg.dirty else None, large=seg.large,
                ops_stop=ops_per_cpu * CPUS)


@dataclass
class Tally:
    ops: int = 0
    dmas: int = 0
    seconds: float = 0.0
    epochs: int = 0
    v: Violations = field(default_factory=Violations)


def run_epoch(seg: Segment, p: Plan, seed: int, fixes_off: tuple[str, ...],
              stop_early: bool) -> Soak:
    exp = experiment(seg, fixes_off)
    run = build(exp, seed)
    soak = Soak(run, p, seed, stop_early, exp.scenario.table.domain)
    env = run.env
    rng = random.Random(seed ^ 0x5EED)
    procs = [env.process(soak.cpu(i, r)) for i, r in enumerate(run.runners)]
    procs += [env.process(soak.device(f"dev{j}", p.dmas // DEVICES, random.Random(
        rng.getrandbits(64)), dirty=p.dirty is not None and j < p.dirty_writers))
        for j in range(DEVICES)]
    procs.append(env.process(soak.auditor(every=50_000)))
    limit = RunLimit(env, max_events=2_000 * (p.ops_stop + p.dmas) + 1_000_000)
    run_bounded(env, env.all_of(procs), limit)
    if limit.reason is not None and not soak.stopped:
        soak.v.add("hang", f"the epoch did not end: {limit.reason}")
    finish(soak, run)
    return soak


def finish(soak: Soak, run: Assembly) -> None:
    """The end-of-epoch oracles: the run's own, the views, then teardown."""
    v = soak.v
    v.add("invisible_map", f"{run.oracles.invisible_maps} map(s) returned while the hardware "
          "could not translate them", run.oracles.invisible_maps)
    late = run.oracles.stale_after_unmap()
    if late:
        issued, inc = late[0]
        v.add("stale_after_unmap", f"{inc.device}'s DMA to {inc.iova:#x} issued at cycle "
              f"{issued:,} after its unmap completed translated to {inc.pa:#x}", len(late))
    stats = run.iommu.stats()  # (those ``stopped`` saw are counted already)
    v.add("use_after_free", f"{stats['uaf_events']:.0f} walker read(s) of freed tables",
          int(stats["uaf_events"]) - v.counts["use_after_free"])
    v.add("non_table_read", f"{stats['non_table_reads']:.0f} walker read(s) of non-table "
          "memory", int(stats["non_table_reads"]) - v.counts["non_table_read"])
    missed = dirty_log([SimpleNamespace(records=soak.writes)], soak.scans)["dirty.missed_writes"]
    v.add("missed_dirty", f"{missed:.0f} device write(s) no dirty scan reported", int(missed))
    soak.audit(everything=True)
    run.pt.deinit()
    allocator = run.pt.executor.allocator
    v.add("leak", f"{run.pt.live_table_pages} table page(s) left after teardown",
          run.pt.live_table_pages)
    v.add("bad_free", f"{len(allocator.bad_frees)} free(s) of non-table memory",
          len(allocator.bad_frees))


def run_segment(seg: Segment, ops: int, dmas: int, seed: int, fixes_off: tuple[str, ...],
                stop_early: bool) -> Tally:
    tally = Tally()
    per_epoch_ops = max(4, ops // seg.epochs // CPUS)
    for e in range(seg.epochs):
        start = time.perf_counter()
        soak = run_epoch(seg, plan(seg, per_epoch_ops, dmas // seg.epochs),
                         seed * 1000 + e, fixes_off, stop_early)
        tally.seconds += time.perf_counter() - start
        tally.ops += soak.ops
        tally.dmas += soak.dmas
        tally.epochs += 1
        for kind, n in soak.v.counts.items():
            tally.v.add(kind, f"epoch {e}: {soak.v.first[kind]}", n)
        if stop_early and tally.v.total:
            break
    return tally


# --- the command ---------------------------------------------------------------------------------
def soak(ops: int, dmas: int, seed: int, fixes_off: tuple[str, ...] = (),
         stop_early: bool = False, first: tuple[str, ...] = ()) -> dict[str, Tally]:
    """Every available segment (those exercising ``first`` before the others)."""
    segments = sorted((s for s in SEGMENTS if available(s)),
                      key=lambda s: not set(first) & set(s.exercises))
    out: dict[str, Tally] = {}
    for seg in segments:
        out[seg.name] = run_segment(seg, int(ops * seg.share), int(dmas * seg.share), seed,
                                    fixes_off, stop_early)
        if stop_early and out[seg.name].v.total:
            break
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(tallies: dict[str, Tally], fixes_off: tuple[str, ...], seed: int) -> int:
    print(f"soak: {CPUS} CPUs, {DEVICES} DMA engines, seed {seed}, "
          f"fixes off: {', '.join(fixes_off) or 'none (every fix on)'}")
    print(f"  {'segment':20}{'epochs':>7}{'ops':>10}{'DMAs':>12}{'seconds':>9}{'ops/s':>8}"
          f"{'DMAs/s':>9}{'violations':>11}")
    total = Tally()
    for name, t in tallies.items():
        print(f"  {name:20}{t.epochs:>7}{t.ops:>10,}{t.dmas:>12,}{t.seconds:>9.1f}"
              f"{t.ops / t.seconds:>8,.0f}{t.dmas / t.seconds:>9,.0f}{t.v.total:>11,}")
        total.ops, total.dmas, total.seconds = (total.ops + t.ops, total.dmas + t.dmas,
                                                total.seconds + t.seconds)
        for kind, n in t.v.counts.items():
            total.v.add(kind, f"{name}: {t.v.first[kind]}", n)
    print(f"  {'total':20}{'':>7}{total.ops:>10,}{total.dmas:>12,}{total.seconds:>9.1f}"
          f"{total.ops / total.seconds:>8,.0f}{total.dmas / total.seconds:>9,.0f}"
          f"{total.v.total:>11,}")
    print(f"peak RSS: {peak_rss_mib():,.0f} MiB")
    if not total.v.total:
        print("violations: none")
        return 0
    for kind, n in sorted(total.v.counts.items()):
        print(f"violation {kind}: {n:,}; first: {total.v.first[kind]}")
    return 1


def detect(ops: int, dmas: int, seed: int) -> int:
    """Each fix off in turn, stopping at the first violation: the detection table."""
    print(f"{'fix off':26}{'detected by':46}{'after ops':>10}{'DMAs':>11}{'seconds':>9}")
    missed = 0
    for fix in FIXES:
        tallies = soak(ops, dmas, seed, (fix,), stop_early=True, first=(fix,))
        v = Violations()
        for t in tallies.values():
            for kind, n in t.v.counts.items():
                v.add(kind, t.v.first[kind], n)
        by = ", ".join(f"{k} ({n:,})" for k, n in sorted(v.counts.items())) or "NOT DETECTED"
        missed += not v.total
        print(f"{fix:26}{by:46}{sum(t.ops for t in tallies.values()):>10,}"
              f"{sum(t.dmas for t in tallies.values()):>11,}"
              f"{sum(t.seconds for t in tallies.values()):>9.1f}", flush=True)
    print(f"peak RSS: {peak_rss_mib():,.0f} MiB")
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2,000 operations and 20,000 DMAs (default 100,000 and 1,200,000)")
    p.add_argument("--ops", type=int, help="CPU operations in all")
    p.add_argument("--dmas", type=int, help="DMAs in all")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fix-off", action="append", default=[], choices=FIXES, metavar="NAME",
                   help="run with this fix switch off (repeatable)")
    p.add_argument("--stop-early", action="store_true", help="stop at the first violation")
    p.add_argument("--detect", action="store_true",
                   help="each fix off in turn, stopping at the first violation")
    args = p.parse_args(argv)
    ops = args.ops or (2_000 if args.quick else 100_000)
    dmas = args.dmas or (20_000 if args.quick else 1_200_000)
    if args.detect:
        return detect(ops, dmas, args.seed)
    fixes_off = tuple(args.fix_off)
    tallies = soak(ops, dmas, args.seed, fixes_off, args.stop_early, fixes_off)
    return report(tallies, fixes_off, args.seed)


if __name__ == "__main__":
    sys.exit(main())
