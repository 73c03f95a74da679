"""Small hand-written results, sweeps and traces for the plot tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


def run(seed: int, *, dma: dict | None = None, cpu: dict | None = None,
        flush: dict | None = None, metrics: dict | None = None,
        faults: list | None = None) -> dict[str, Any]:
    """One run of a results file; histograms as JSON writes them (string keys)."""
    def strkeys(d: dict) -> dict:
        return {g: {str(k): n for k, n in h.items()} for g, h in d.items()}

    return {
        "seed": seed,
        "metrics": {"dma.faults": 0, "dma.latency.mean": 100.0, "iotlb.hits": 5,
                    "iotlb.lookups": 10, **(metrics or {})},
        "faults": faults or [],
        "incidents": [],
        "distributions": {
            "dma.latency": strkeys(dma or {}),
            "cpu.latency": strkeys(cpu or {}),
            "cpu.flush_lines": strkeys(flush or {}),
        },
    }


def results(runs: list[dict], *, name: str = "demo", fix: bool = False,
            sweep: dict | None = None, entries: int = 64) -> dict[str, Any]:
    return {
        "schema": "iommusim.results/1",
        "version": "0.1.0",
        "created": "2025-01-01T00:00:00+00:00",
        "source": f"{name}.yaml",
        "scenario": {
            "name": name,
            "hardware": "vtd-incoherent",
            "kernel": {"fixes": {"flush_done_sw_bit": fix, "increase_top": True}},
            "run": {"seeds": [r["seed"] for r in runs]},
            "expect": {"dma.faults": {"condition": "> 0", "seeds": "any"}},
        },
        "hardware": {"clock_ghz": 2.0, "iommu": {"iotlb": {"entries": entries}}},
        "sweep": sweep or {},
        "runs": runs,
        "aggregate": {},
        "expect": [],
    }


# DMA latency: seed 1 and seed 2 differ so pooling and --seed can be told apart.
DMA_1 = {"iotlb": {100: 3, 120: 1}, "walk": {800: 2}, "fault": {300: 1}}
DMA_2 = {"iotlb": {100: 2}, "walk_cache": {500: 4}}
CPU_1 = {"map 4K": {5000: 2, 6000: 1}, "map 2M": {9000: 1}, "unmap 4K": {3000: 2}}
CPU_2 = {"map 4K": {5500: 1}}
# lines per op -> number of ops: 4 maps and 2 unmaps per seed
FLUSH = {
    "map.table_start": {0: 3, 64: 1},
    "map.install": {0: 2, 1: 2},
    "map.leaf": {1: 3, 2: 1},
    "map.helper": {0: 4},
    "unmap.unmap": {1: 2},
    "unmap.leaf": {0: 2},
}
FLUSH_FIXED = {**FLUSH, "map.helper": {0: 2, 1: 2}}


@pytest.fixture
def demo() -> dict[str, Any]:
    return results([
        run(1, dma=DMA_1, cpu=CPU_1, flush=FLUSH, metrics={"dma.faults": 1}),
        run(2, dma=DMA_2, cpu=CPU_2, flush=FLUSH),
    ])


@pytest.fixture
def demo_fixed() -> dict[str, Any]:
    return results([run(1, dma=DMA_2, cpu=CPU_2, flush=FLUSH_FIXED)], fix=True)


def sweep_doc(sizes=("64K", "128K", "256K"), entries=(64, 128)) -> dict[str, Any]:
    """A loaded sweep over a stream's region size and the IOTLB size, 2 seeds a point.
    Latency = size_in_K + entries (seed 1) or + 2 * entries (seed 2)."""
    points = []
    param = "devices.0.stream.region.size"
    for size in sizes:
        kib = int(size[:-1])
        for n in entries:
            runs = [
                run(seed, metrics={"dma.latency.mean": kib + seed * n,
                                   "iotlb.hits": seed, "iotlb.lookups": 4})
                for seed in (1, 2)
            ]
            values = {param: size, "iommu.iotlb.entries": n}
            res = results(runs, sweep=values, entries=n, name="reach")
            for r in res["runs"]:
                r["distributions"]["cpu.flush_lines"] = {"map.leaf": {"1": 2}}
            points.append({"values": values, "results": res})
    return {"parameters": [param, "iommu.iotlb.entries"], "points": points, "_path": "sweep"}


@pytest.fixture
def sweep() -> dict[str, Any]:
    return sweep_doc()


# --- a trace of the shared-level-flush race -------------------------------------------
P = 0x4000_0021E8  # the table slot both CPUs install into
TABLE_A, TABLE_B = 0x4000_003000, 0x4000_004000


def race_trace(*, fault: bool = True) -> list[dict[str, Any]]:
    """cpu1 installs a table pointer at P and is interrupted before flushing it; cpu0
    loses the cmpxchg, maps under it and returns; nic0's DMA reads P from DRAM: stale
    (fault=True), or cpu1 flushed in time (fault=False)."""
    recs = [
        {"cycle": 0, "component": "cpu0", "event": "op_start", "op": "map"},
        {"cycle": 0, "component": "cpu1", "event": "op_start", "op": "map"},
        {"cycle": 0, "component": "cpu1", "event": "load", "op": "map", "cost": 20,
         "result": 0, "pa": P},
        {"cycle": 10, "component": "cpu0", "event": "alloc_table", "op": "map", "cost": 400,
         "result": TABLE_B, "size_lg2": 12},
        {"cycle": 20, "component": "cpu1", "event": "alloc_table", "op": "map", "cost": 400,
         "result": TABLE_A, "size_lg2": 12},
        {"cycle": 420, "component": "cpu1", "event": "cmpxchg", "op": "map", "cost": 120,
         "result": 0, "pa": P, "expected": 0, "new": TABLE_A | 3},
        {"cycle": 540, "component": "cpu1", "event": "interrupt", "duration": 4000},
        {"cycle": 600, "component": "cpu0", "event": "cmpxchg", "op": "map", "cost": 130,
         "result": TABLE_A | 3, "pa": P, "expected": 0, "new": TABLE_B | 3},
        {"cycle": 730, "component": "cpu0", "event": "free_table", "op": "map", "cost": 200,
         "result": None, "pa": TABLE_B},
        {"cycle": 930, "component": "cpu0", "event": "store", "op": "map", "cost": 4,
         "result": None, "pa": TABLE_A + 8, "value": 0x1003},
        {"cycle": 934, "component": "cpu0", "event": "flush", "op": "map", "cost": 300,
         "result": None, "pa": TABLE_A + 8, "nbytes": 8, "cause": "leaf"},
        {"cycle": 1234, "component": "iommu.invalidation", "event": "submit",
         "kind": "flush_write_buffer", "source": "cpu0", "depth": 1},
        {"cycle": 1234, "component": "cpu0", "event": "flush_write_buffer", "op": "map",
         "cost": 50, "result": None},
        {"cycle": 2734, "component": "iommu.invalidation", "event": "done",
         "kind": "flush_write_buffer", "source": "cpu0", "args": [], "removed": 0},
        {"cycle": 2734, "component": "cpu0", "event": "op_end", "op": "map", "result": 0},
        {"cycle": 2734, "component": "nic0", "event": "request", "index": 0, "iova": 0x1000,
         "size": 64, "is_write": True},
    ]
    if fault:
        recs += [
            {"cycle": 2780, "component": "iommu.port", "event": "read", "pa": P, "value": 0,
             "stale": True, "freed": False},
            {"cycle": 3030, "component": "iommu.walker", "event": "fault", "device": "nic0",
             "domain": 1, "iova": 0x1000, "access": "write", "reason": "not_present",
             "level": 1},
            {"cycle": 3050, "component": "nic0", "event": "complete", "index": 0,
             "outcome": "fault", "pa": None, "path": "walk", "reason": "not_present",
             "level": 1, "latency": 316},
        ]
    else:
        recs += [
            {"cycle": 2780, "component": "iommu.port", "event": "read", "pa": P,
             "value": TABLE_A | 3, "stale": False, "freed": False},
            {"cycle": 3030, "component": "iommu.port", "event": "read", "pa": TABLE_A + 8,
             "value": 0x1003, "stale": False, "freed": False},
            {"cycle": 3300, "component": "nic0", "event": "complete", "index": 0,
             "outcome": "ok", "pa": 0x1000, "path": "walk", "reason": None, "level": None,
             "latency": 566},
        ]
    recs += [
        {"cycle": 4540, "component": "cpu1", "event": "flush", "op": "map", "cost": 300,
         "result": None, "pa": P, "nbytes": 8, "cause": "install"},
        {"cycle": 4840, "component": "cpu1", "event": "op_end", "op": "map", "result": 0},
    ]
    return sorted(recs, key=lambda r: r["cycle"])


def write_results_dir(folder: Path, doc: dict[str, Any], trace: list | None = None,
                      seed: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = copy.deepcopy(doc)
    doc.pop("_path", None)
    (folder / "results.json").write_text(json.dumps(doc))
    if trace is not None:
        (folder / f"trace-{seed}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in trace))
    return folder


def write_sweep_dir(folder: Path, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    index = {"schema": "iommusim.sweep/1", "parameters": doc["parameters"], "points": []}
    for i, point in enumerate(doc["points"]):
        name = f"point-{i:03d}"
        write_results_dir(folder / name, point["results"])
        index["points"].append({"values": point["values"], "results": f"{name}/results.json"})
    (folder / "index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture
def kit() -> SimpleNamespace:
    """The builders above, for tests that need their own data."""
    return SimpleNamespace(
        run=run, results=results, sweep_doc=sweep_doc, race_trace=race_trace,
        write_results_dir=write_results_dir, write_sweep_dir=write_sweep_dir, P=P,
        DMA_1=DMA_1, DMA_2=DMA_2, CPU_1=CPU_1, FLUSH=FLUSH, FLUSH_FIXED=FLUSH_FIXED,
    )
