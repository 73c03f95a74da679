"""Loaders: results files and directories, sweep directories, traces; bad files."""

from __future__ import annotations

import json

import pytest

from iommusim.errors import InputError
from iommusim.plots import load_results, load_sweep, load_trace, trace_files


def test_load_results_file_or_directory(tmp_path, kit, demo):
    folder = kit.write_results_dir(tmp_path / "r", demo, kit.race_trace(), seed=3)
    for path in (folder, folder / "results.json"):
        data = load_results(path)
        assert data["scenario"]["name"] == "demo"
        assert [r["seed"] for r in data["runs"]] == [1, 2]
    assert list(trace_files(folder)) == [3]


def test_load_sweep(tmp_path, kit, sweep):
    folder = kit.write_sweep_dir(tmp_path / "s", sweep)
    data = load_sweep(folder)
    assert data["parameters"] == sweep["parameters"]
    assert len(data["points"]) == 6
    assert data["points"][1]["values"] == {"devices.0.stream.region.size": "64K",
                                           "iommu.iotlb.entries": 128}
    assert data["points"][1]["results"]["hardware"]["iommu"]["iotlb"]["entries"] == 128
    with pytest.raises(InputError, match="is a sweep directory"):
        load_results(folder)
    with pytest.raises(InputError, match="not a sweep"):
        load_sweep(folder / "point-000")


def test_load_trace(tmp_path, kit):
    path = tmp_path / "trace-1.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in kit.race_trace()))
    records = load_trace(path)
    assert records[0] == {"cycle": 0, "component": "cpu0", "event": "op_start", "op": "map"}


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ('{"schema": "something/else", "runs": [1]}', "not an iommusim results file"),
    ('{"schema": "iommusim.results/1", "runs": []}', "no runs"),
])
def test_bad_results_files(tmp_path, text, message):
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        load_results(path)
    assert info.value.problems[0].source == str(path)


def test_missing_results(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_results(tmp_path / "nope.json")


def test_bad_trace_line_is_located(tmp_path):
    path = tmp_path / "trace-1.jsonl"
    path.write_text('{"cycle": 0, "component": "cpu0", "event": "op_start"}\n{oops\n')
    with pytest.raises(InputError) as info:
        load_trace(path)
    assert info.value.problems[0].line == 2
    path.write_text('{"cycle": 0}\n')
    with pytest.raises(InputError, match="needs cycle, component and event"):
        load_trace(path)
