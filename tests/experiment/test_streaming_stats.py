"""Streaming statistics (issue 17): a run's metrics, block statistics, distributions and
oracles, kept as operations end, equal the definitions over one record per CPU operation
and per DMA -- to the last bit, key order included.

Each scenario runs with records kept beside the streaming figures; the figures are then
recomputed from the records with the definitions the records-based code used (numpy's
mean and percentile, Counters in completion order, the oracles over whole lists).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iommusim.experiment import metrics
from iommusim.experiment.assembly import Assembly, build, distributions
from iommusim.experiment.opstats import errno_of
from iommusim.experiment.oracles import dirty_log, stale_after_unmap
from iommusim.experiment.runner import prepare
from iommusim.hwmodels.dma import FAULT, OK
from iommusim.scenarios.resolve import catalog_dir
from iommusim.tables.transactions import FLUSH_CAUSES
from iommusim.units import format_size

HERE = Path(__file__).resolve().parent
SCENARIOS = [*sorted(catalog_dir().glob("*.yaml")),
             HERE.parent / "hwmodels" / "scenarios" / "pipeline-mix.yaml"]


def run_with_records(path: Path, seed: int) -> tuple[Assembly, dict[str, Any]]:
    """One seed run to its end with records kept; what the old lists were."""
    [(_, exp)] = prepare(path, [])
    run = build(exp, seed, keep_records=True)
    seen: dict[str, Any] = {"stale": [], "unmaps": [], "scans": [], "sizes": []}
    run.iommu.stale_listeners.append(lambda issued, inc: seen["stale"].append((issued, inc)))
    for runner in run.runners:
        env = runner.core.env
        runner.unmap_listeners.append(
            lambda iova, size, start, env=env: seen["unmaps"].append((start, env.now, iova, size)))
        runner.scan_listeners.append(seen["scans"].append)
        runner.core.op_listeners.append(
            lambda rec, runner=runner: seen["sizes"].append((rec, runner.op_size)))
    env = run.env
    everything = env.all_of([p for _, p in run.processes])
    env.run(until=env.any_of([everything, env.timeout(exp.scenario.run.until)]))
    run.finished = everything.triggered
    run.live_pages = run.pt.live_table_pages
    run.pt.deinit()
    run.late = run.oracles.stale_after_unmap()
    return run, seen


def _np_stats(prefix: str, values: list[int], out: dict[str, float]) -> None:
    if not values:
        out.update({f"{prefix}.{s}": 0 for s in metrics.STATS})
        return
    arr = np.asarray(values, dtype=float)
    out[f"{prefix}.mean"] = float(arr.mean())
    out[f"{prefix}.p50"] = float(np.percentile(arr, 50))
    out[f"{prefix}.p99"] = float(np.percentile(arr, 99))
    out[f"{prefix}.max"] = float(arr.max())


def record_metrics(run: Assembly, seen: dict[str, Any]) -> dict[str, float]:
    """The DMA and CPU metrics as computed from records before issue 17."""
    records = [r for d in run.devices for r in d.records]
    m: dict[str, float] = {"dma.requests": len(records), "dma.completed": len(records)}
    faults = [r for r in records if r.translation.outcome == FAULT]
    m["dma.faults"] = len(faults)
    reasons = Counter(r.translation.reason for r in faults)
    m.update({f"dma.faults.{r}": reasons.get(r, 0) for r in metrics.FAULT_REASONS})
    _np_stats("dma.latency", [r.latency for r in records], m)
    paths = Counter(r.translation.path for r in records if r.translation.outcome != FAULT)
    m.update({f"dma.path.{p}": paths.get(p, 0) for p in ("iotlb", "walk_cache", "walk")})
    ops = [rec for rec, _ in seen["sizes"]]
    for op in metrics.CPU_OPS:
        mine = [r for r in ops if r.label == op]
        m[f"cpu.{op}.count"] = len(mine)
        m[f"cpu.{op}.errors"] = sum(errno_of(r.result) < 0 for r in mine)
        _np_stats(f"cpu.{op}.latency", [r.latency for r in mine], m)
        flushed = [sum(r.flush_lines.values()) for r in mine]
        m[f"cpu.{op}.flush.lines"] = float(np.mean(flushed)) if flushed else 0.0
    m.update(dirty_log(run.devices, seen["scans"]))
    return m


def record_distributions(run: Assembly, seen: dict[str, Any]) -> dict[str, Any]:
    dma: dict[str, Counter[int]] = {}
    for d in run.devices:
        for r in d.records:
            key = "fault" if r.translation.outcome == FAULT else r.translation.path
            dma.setdefault(key, Counter())[r.latency] += 1
    latency: dict[str, Counter[int]] = {}
    flush: dict[str, Counter[int]] = {}
    for r, size in seen["sizes"]:
        group = f"{r.label} {format_size(size)}" if r.label in ("map", "unmap") else r.label
        latency.setdefault(group, Counter())[r.latency] += 1
        for cause in FLUSH_CAUSES:
            flush.setdefault(f"{r.label}.{cause}", Counter())[r.flush_lines.get(cause, 0)] += 1

    def out(groups: dict[str, Counter[int]]) -> dict[str, dict[int, int]]:
        return {k: dict(sorted(v.items())) for k, v in sorted(groups.items())}

    return {"dma.latency": out(dma), "cpu.latency": out(latency), "cpu.flush_lines": out(flush)}


def record_device_stats(dev: Any) -> list[tuple[str, Any]]:
    stats: dict[str, Any] = {
        "requests": len(dev.records),
        "ok": sum(r.translation.outcome == OK for r in dev.records),
        "faults": sum(r.translation.outcome == FAULT for r in dev.records),
        "latency_total": sum(r.latency for r in dev.records),
        "latency_max": max((r.latency for r in dev.records), default=0),
    }
    for r in dev.records:
        stats[f"path.{r.translation.path}"] = stats.get(f"path.{r.translation.path}", 0) + 1
        if r.translation.reason is not None:
            key = f"fault.{r.translation.reason}"
            stats[key] = stats.get(key, 0) + 1
    return list(stats.items())


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_streaming_figures_equal_the_record_definitions(path: Path) -> None:
    for seed in (1, 2):
        run, seen = run_with_records(path, seed)
        streamed = metrics.collect(run)
        for name, value in record_metrics(run, seen).items():
            assert repr(streamed[name]) == repr(value), (name, streamed[name], value)
        assert distributions(run) == record_distributions(run, seen)
        for dev in run.devices:
            assert list(dev.stats().items()) == record_device_stats(dev)
        for runner in run.runners:
            core = runner.core
            expected: dict[str, int] = {}
            for r in core.records:
                expected[f"ops.{r.label}.count"] = expected.get(f"ops.{r.label}.count", 0) + 1
                expected[f"ops.{r.label}.cycles"] = (
                    expected.get(f"ops.{r.label}.cycles", 0) + r.latency)
            stats = core.stats()
            assert stats["operations"] == len(core.records)
            assert [(k, v) for k, v in stats.items() if k.startswith("ops.")] == list(
                expected.items())
        assert run.late == stale_after_unmap(seen["stale"], seen["unmaps"])


def test_streaming_oracles_equal_their_list_definitions() -> None:
    """Random writes, scans, unmaps and stale translations, fed as they complete (ties
    and zero-latency requests included): the streaming oracles answer as the lists."""
    import random

    from iommusim.experiment.oracles import DirtyLog, StaleAfterUnmap
    from iommusim.experiment.workload import DirtyScan
    from iommusim.hwmodels.dma import DmaRecord, Translation
    from iommusim.walker.iommu import Incident

    class Dev:
        records: list[DmaRecord]

    for trial in range(300):
        rng = random.Random(trial)
        events: list[tuple[int, int, Any]] = []  # (completion cycle, order, event)
        writes, scans, stale, unmaps = [], [], [], []
        for i in range(rng.randrange(1, 40)):
            issue = rng.randrange(60)
            end = issue + rng.choice([0, 0, 1, 3, 10])
            page = rng.randrange(6)
            ok = rng.random() < 0.9
            w = DmaRecord("d", i, page << 12 | rng.randrange(64) * 64, 64, rng.random() < 0.8,
                          issue, end, Translation("ok" if ok else "fault", 0, "iotlb"))
            writes.append(w)
            events.append((end, rng.randrange(3), w))
        for _ in range(rng.randrange(0, 8)):
            start = rng.randrange(60)
            end = start + rng.randrange(0, 15)
            first = rng.randrange(5)
            size = rng.randrange(1, 4) << 12
            runs = tuple((p << 12, 4096) for p in range(first, first + (size >> 12))
                         if rng.random() < 0.5)
            s = DirtyScan(start, end, first << 12, size, runs)
            scans.append(s)
            events.append((end, rng.randrange(3), s))
        for _ in range(rng.randrange(0, 6)):
            start = rng.randrange(60)
            u = (start, start + rng.randrange(0, 12), rng.randrange(4) << 12, 8192)
            unmaps.append(u)
            events.append((u[1], rng.randrange(3), u))
        for _ in range(rng.randrange(0, 8)):
            issued = rng.randrange(60)
            inc = Incident(issued + rng.choice([0, 2, 9]), "stale_translation", "d", 1,
                           rng.randrange(6) << 12, 0)
            stale.append((issued, inc))
            events.append((inc.cycle, rng.randrange(3), (issued, inc)))
        dirty, late = DirtyLog(), StaleAfterUnmap()
        for _, _, e in sorted(events, key=lambda x: (x[0], x[1])):
            if isinstance(e, DmaRecord):
                dirty.written(e)
            elif isinstance(e, DirtyScan):
                dirty.scanned(e)
            elif isinstance(e[1], Incident):
                late.stale(*e)
            else:
                late.unmapped(*e)
        dev = Dev()
        dev.records = writes
        assert dirty.result() == dirty_log([dev], scans), trial  # type: ignore[list-item]
        order = [s for _, _, s in sorted(events, key=lambda x: (x[0], x[1]))
                 if isinstance(s, tuple) and isinstance(s[1], Incident)]
        assert late.result() == stale_after_unmap(order, unmaps), trial
