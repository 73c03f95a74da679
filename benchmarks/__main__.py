"""Print each benchmark's rate and its ratio to a raw SimPy timeout loop."""

from __future__ import annotations

from .common import best_rate, raw_simpy
from .entries import cpu_transactions, iotlb_lookups


def main() -> None:
    raw = best_rate(raw_simpy)
    rows = [
        ("raw SimPy timeouts", "timeouts/s", raw),
        ("CPU transactions", "tx/s", best_rate(cpu_transactions)),
        ("IOTLB lookups", "lookups/s", best_rate(iotlb_lookups)),
    ]
    print(f"{'benchmark':<22}{'rate':>14}  {'unit':<11}{'x raw SimPy':>12}")
    for name, unit, rate in rows:
        print(f"{name:<22}{rate:>14,.0f}  {unit:<11}{rate / raw:>12.2f}")


main()
