"""Throughput benchmarks for the hot paths (``python -m benchmarks``; not run by tests).

Each entry reports its rate next to a raw SimPy timeout loop measured in the same
process, so the ratio -- not the machine-dependent absolute rate -- is the figure to
quote and compare.
"""
