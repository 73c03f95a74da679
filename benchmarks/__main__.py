"""Print each benchmark's rate and its ratio to a raw SimPy timeout loop measured in the
same run (the ratio is the figure to quote: it does not depend on the machine's speed).

``python -m benchmarks`` runs everything; ``--quick`` skips the 1M-page scale run;
``--only NAME`` runs one entry.
"""

from __future__ import annotations

import argparse

from iommusim.tables.compiled import active

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="skip the 1M-page scale run")
    parser.add_argument("--only", choices=[*RATES, "scale"])
    args = parser.parse_args()
    print(f"page-table code: {active()}")  # make fast compiles it (README, Performance)
    raw = best_rate(raw_simpy)
    print(f"{'benchmark':<28}{'rate':>14}  {'unit':<11}{'x raw SimPy':>12}")
    print(f"{'raw SimPy timeouts':<28}{raw:>14,.0f}  {'timeouts/s':<11}{1:>12.2f}")
    for key, (name, unit, prepare) in RATES.items():
        if args.only in (None, key):
            rate = best_rate(prepare)
            print(f"{name:<28}{rate:>14,.0f}  {unit:<11}{rate / raw:>12.2f}", flush=True)
    if args.only in (None, "scale") and not args.quick:
        result = scale()
        print(
            "scale: 1,000,000 4K pages mapped in {map_seconds:.1f} s, 1,000,000 DMAs in "
            "{dma_seconds:.1f} s, total {total_seconds:.1f} s, peak RSS {peak_rss_mib:,.0f} MiB"
            .format(**result)
        )


main()
