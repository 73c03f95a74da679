"""Print each benchmark's rate and its ratio to a raw SimPy timeout loop measured in the
same run (the ratio is the figure to quote: it does not depend on the machine's speed).

``python -m benchmarks`` runs everything; ``--quick`` skips the two scale runs;
``--only NAME`` runs one entry. The raw SimPy rate is measured again after the slow
entries and the best of its measurements is the reference (on a shared machine the
load changes while the benchmarks run).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from iommusim.tables.compiled import active

from .commands import dma_hits_rate, dma_misses_rate, explore_rate, scale_run
from .common import best_rate, raw_simpy
from .entries import direct, dma_hits, dma_misses, four_cpus, iotlb_lookups, one_cpu, scale

RATES = {
    "one_cpu": ("CPU transactions, 1 CPU", "tx/s", one_cpu),
    "direct": ("page-table code alone", "tx/s", direct),
    "four_cpus": ("CPU transactions, 4 CPUs", "tx/s", four_cpus),
    "dma_hits": ("DMA, IOTLB hits", "DMAs/s", dma_hits),
    "dma_misses": ("DMA, IOTLB misses", "DMAs/s", dma_misses),
    "iotlb": ("IOTLB lookups", "lookups/s", iotlb_lookups),
}
COMMANDS: dict[str, tuple[str, str, Callable[[], float]]] = {
    "run_hits": ("run: hits, 4 in flight", "DMAs/s", dma_hits_rate),
    "run_misses": ("run: misses, 8 in flight", "DMAs/s", dma_misses_rate),
    "explore": ("explore dfs bound 2", "runs/s", explore_rate),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="skip the two scale runs")
    parser.add_argument("--only", choices=[*RATES, *COMMANDS, "scale", "scale_run"])
    args = parser.parse_args()
    print(f"page-table code: {active()}")  # make fast compiles it (docs/performance.md)
    raw = best_rate(raw_simpy)
    rows: list[tuple[str, float, str]] = []
    print(f"{'benchmark':<28}{'rate':>14}  {'unit':<11}{'x raw SimPy':>12}")
    for key, (name, unit, prepare) in RATES.items():
        if args.only in (None, key):
            rows.append((name, best_rate(prepare), unit))
    for key, (name, unit, rate) in COMMANDS.items():
        if args.only in (None, key):
            rows.append((name, rate(), unit))
    raw = max(raw, best_rate(raw_simpy))
    print(f"{'raw SimPy timeouts':<28}{raw:>14,.0f}  {'timeouts/s':<11}{1:>12.2f}")
    for name, rate_, unit in rows:
        print(f"{name:<28}{rate_:>14,.0f}  {unit:<11}{rate_ / raw:>12.3f}", flush=True)
    if args.only in (None, "scale") and not args.quick:
        result = scale()
        print(
            "scale (one map op): 1,000,000 4K pages mapped in {map_seconds:.1f} s, 1,000,000 "
            "DMAs in {dma_seconds:.1f} s, total {total_seconds:.1f} s, peak RSS "
            "{peak_rss_mib:,.0f} MiB".format(**result), flush=True
        )
    if args.only in (None, "scale_run") and not args.quick:
        result = scale_run()
        print(
            "scale (iommusim run scale.yaml): {maps:,.0f} separate 4K maps, then {dmas:,.0f} "
            "DMAs with 8 in flight ({walks:,.0f} walks): {seconds:.1f} s ({cpu_seconds:.1f} s "
            "of CPU), peak RSS {peak_rss_mib:,.0f} MiB".format(**result)
        )


main()
