"""Perfetto traces (issue 16 item 3), checked structurally on a catalog race: every slice
has a duration and nests on its track, every flow has both ends inside slices, every
track is named; the tracks, slices, flows and counters the issue asks for are there;
``iommusim trace export`` gives the same events from the JSON-lines trace; the plots
read the gzip-compressed trace as they read the plain one.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from iommusim.cli import main
from iommusim.experiment.perfetto import check
from iommusim.plots.data import load_trace, trace_files


@pytest.fixture(scope="module")
def race(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """shared-level-flush seed 1 (its DMA faults: a walker read missed a CPU store), with
    its trace in every format."""
    out = tmp_path_factory.mktemp("race") / "out"
    rc = main(["run", "shared-level-flush", "--seed", "1", "--quiet", "--out", str(out),
               "--trace-format", "jsonl.gz,jsonl,perfetto"])
    assert rc == 0
    return out


def perfetto(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


def test_structure_of_a_catalog_race(race: Path) -> None:
    doc = perfetto(race / "trace-1.perfetto.json.gz")
    assert check(doc) == []
    events = doc["traceEvents"]
    names = {(e["pid"], e["args"]["name"]) for e in events if e["name"] == "thread_name"}
    assert {(1, "cpu0"), (1, "cpu1"), (2, "walker slot 0"), (2, "invalidation queue"),
            (2, "faults and incidents"), (3, "nic0"), (3, "nic1")} <= names
    processes = [e["args"]["name"] for e in events if e["name"] == "process_name"]
    assert [p.split(" (")[0] for p in processes] == ["CPUs", "IOMMU", "Devices"]
    assert "2.5 GHz" in processes[0]
    slices = Counter(e["cat"] for e in events if e["ph"] == "X")
    assert slices["op"] == 201 and slices["dma"] == 201  # every map, every DMA
    assert slices["walk"] > 201 and slices["tx"] > 1000  # walks with their reads; loads...
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert {"IOTLB entries", "write buffer depth", "invalidation queue depth"} <= counters
    flows = Counter(e["name"] for e in events if e["ph"] == "s")
    assert flows["store missed"] >= 1  # the race: the walker read 0 where cpu0 had stored
    assert flows["store seen"] > 100 and flows["flush seen"] > 100
    for e in events:  # arrows go from a CPU to a walker slot
        if e["ph"] in ("s", "f"):
            assert e["pid"] == (1 if e["ph"] == "s" else 2)


def test_trace_export_gives_the_same_events(race: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "exported.json"
    assert main(["trace", "export", str(race / "trace-1.jsonl.gz"), "-o", str(out)]) == 0
    assert "flow arrows" in capsys.readouterr().out
    exported = json.loads(out.read_text())  # plain JSON: not .gz
    assert exported["traceEvents"] == perfetto(race / "trace-1.perfetto.json.gz")["traceEvents"]
    assert main(["trace", "export", str(tmp_path / "missing.jsonl")]) == 2


def test_plots_read_the_gzip_trace_like_the_plain_one(race: Path) -> None:
    assert load_trace(race / "trace-1.jsonl.gz") == load_trace(race / "trace-1.jsonl")
    assert trace_files(race) == {1: race / "trace-1.jsonl"}  # the plain one, when both
    (race / "trace-1.jsonl").unlink()
    assert trace_files(race) == {1: race / "trace-1.jsonl.gz"}


def slice_(tid: int, ts: float, dur: float) -> dict:
    return {"ph": "X", "name": "x", "pid": 1, "tid": tid, "ts": ts, "dur": dur}


def test_the_check_catches_what_perfetto_would_not_show() -> None:
    named = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "p"}},
             {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "t"}}]
    good = {"traceEvents": [*named, slice_(1, 0, 10), slice_(1, 2, 3)]}
    assert check(good) == []
    overlap = {"traceEvents": [*named, slice_(1, 0, 10), slice_(1, 5, 10)]}
    assert "overlap" in check(overlap)[0]
    unnamed = {"traceEvents": [*named, slice_(2, 0, 1)]}
    assert "unnamed track" in check(unnamed)[0]
    half_flow = {"traceEvents": [*named, slice_(1, 0, 10), {
        "ph": "s", "id": 1, "name": "f", "cat": "c", "pid": 1, "tid": 1, "ts": 1}]}
    assert "has ends ['s']" in check(half_flow)[0]
    outside = {"traceEvents": [*named, slice_(1, 0, 1), *[
        {"ph": ph, "id": 1, "name": "f", "cat": "c", "pid": 1, "tid": 1, "ts": 5}
        for ph in "sf"]]}
    assert "not inside a slice" in check(outside)[0]
    no_end = {"traceEvents": [*named, {"ph": "B", "name": "b", "pid": 1, "tid": 1, "ts": 0}]}
    assert "B without E" in check(no_end)[0]
