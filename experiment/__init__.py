"""One run and many: assembly of a machine from a resolved scenario, workloads, oracles,
metrics, runner and results files."""
