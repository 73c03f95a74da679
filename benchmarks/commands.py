"""Benchmarks through the command line (issue 17): what a user waits for.

``iommusim run`` of a bundled benchmark scenario and ``iommusim explore`` of a catalog
scenario run in this process (``--jobs 1``: no worker processes), timed from the
command's start to its end -- scenario loading, the CPU's set-up maps, the run,
metrics and results files included. The miss stream is timed twice, with two counts,
and its rate is the difference: the 64 MiB of 4K maps before it would otherwise
dominate. The scale scenario runs in a child process, so that its peak RSS is its own.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from tempfile import TemporaryDirectory

from iommusim.cli import main

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
HITS = 2_000_000  # DMAs of dma-hits-4.yaml
MISSES = (2_000, 12_000)  # the two counts of dma-misses-8.yaml


def command_seconds(argv: list[str]) -> float:
    """Wall seconds of one ``iommusim`` command in this process (output discarded)."""
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        code = main(argv)
        seconds = time.perf_counter() - start
    if code not in (0, 1):  # 1: a failed expectation or found bug, still a full run
        raise RuntimeError(f"iommusim {' '.join(argv)} exited with {code}")
    return seconds


def run_seconds(name: str, sets: list[str] = []) -> float:  # noqa: B006 (read only)
    with TemporaryDirectory() as tmp:
        return command_seconds(["run", str(SCENARIOS / f"{name}.yaml"), "--jobs", "1",
                                "--quiet", "--out", f"{tmp}/out",
                                *[a for s in sets for a in ("--set", s)]])


def dma_hits_rate() -> float:
    """DMAs/s of ``iommusim run benchmarks/scenarios/dma-hits-4.yaml``, best of two."""
    return max(HITS / run_seconds("dma-hits-4") for _ in range(2))


def dma_misses_rate() -> float:
    """DMAs/s of the miss stream (``dma-misses-8.yaml``): the extra DMAs over the extra
    seconds of a run with more of them, best of two."""
    small, large = MISSES
    best = 0.0
    for _ in range(2):
        t_small = run_seconds("dma-misses-8", [f"devices.0.stream.count={small}"])
        t_large = run_seconds("dma-misses-8", [f"devices.0.stream.count={large}"])
        best = max(best, (large - small) / max(t_large - t_small, 1e-9))
    return best


def explore_rate() -> float:
    """Runs/s of ``iommusim explore shared-level-flush --strategy dfs --bound 2``."""
    best = 0.0
    for _ in range(2):
        with TemporaryDirectory() as tmp:
            seconds = command_seconds(["explore", "shared-level-flush", "--strategy", "dfs",
                                       "--bound", "2", "--jobs", "1", "--quiet",
                                       "--out", f"{tmp}/out"])
            runs = json.loads(Path(tmp, "out", "explore.json").read_text())["runs"]
        best = max(best, runs / seconds)
    return best


def scale_run() -> dict[str, float]:
    """``iommusim run benchmarks/scenarios/scale.yaml`` in a child process: 1,000,000
    separate 4K maps, then 1,000,000 DMAs with 8 in flight; seconds and peak RSS."""
    with TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "iommusim", "run", str(SCENARIOS / "scale.yaml"),
                        "--jobs", "1", "--quiet", "--out", f"{tmp}/out"],
                       check=True, capture_output=True)
        seconds = time.perf_counter() - start
        metrics = json.loads(Path(tmp, "out", "results.json").read_text())["runs"][0]["metrics"]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024,
            "maps": metrics["cpu.map.count"], "dmas": metrics["dma.requests"],
            "walks": metrics["walker.walks"]}
