"""Same seed, same run: event order and statistics, in one process and across two."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

WORKLOAD = Path(__file__).with_name("determinism_workload.py")


def test_same_seed_same_run_in_one_process_and_across_processes():
    run = runpy.run_path(str(WORKLOAD))["run"]
    first = run(11)
    assert run(11) == first
    for hashseed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, str(WORKLOAD), "11"],
            env={**os.environ, "PYTHONHASHSEED": hashseed},
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        assert out == first


def test_the_workload_exercises_the_random_choices_and_seeds_matter():
    run = runpy.run_path(str(WORKLOAD))["run"]
    data = json.loads(run(11))
    stats = dict(data["stats"])
    assert stats["cache.written_back_by_eviction"] > 0
    assert stats["iommu.iotlb.evictions"] > 0
    assert stats["allocator.failures"] > 0
    assert stats["cpu0.interrupts"] > 0 and stats["cpu1.lock_waits"] + stats["cpu0.lock_waits"] > 0
    assert stats["dram.channel_waits"] > 0
    assert stats["iommu.port.stale_reads"] > 0
    assert stats["dev0.requests"] == 40
    assert [op[0] for op in data["ops"]] == ["cpu0", "cpu1"]  # both mappers finished
    assert run(12) != run(11)
