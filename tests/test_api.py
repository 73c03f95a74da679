"""The Python API: ``iommusim.run`` (path, catalog name or dict), ``Results`` (runs,
aggregates, the table, ``to_frame``), ``iommusim.load``, and ``results.csv``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import iommusim
from iommusim.errors import InputError

MINI = {
    "name": "mini",
    "hardware": "vtd-incoherent",
    "table": {"format": "vtdss", "features": ["dma_incoherent"]},
    "cpus": [{"name": "cpu0", "ops": [
        {"map": {"iova": 0x40000000, "pa": 0x100000000, "size": "4K"}}, {"signal": "mapped"}]}],
    "devices": [{"name": "nic0", "dma": [{"after": "mapped", "iova": 0x40000000}]}],
    "run": {"seeds": 2},
    "expect": {"dma.faults": "== 0"},
}
SWEPT = {**MINI, "name": "mini-sweep",
         "sweep": {"iommu.iotlb.entries": [16, 64], "kernel.fixes.cache_flush": [True, False]}}


def test_run_a_dict_without_sweep(tmp_path):
    res = iommusim.run(MINI)
    assert isinstance(res, iommusim.Results)
    assert res.name == "mini" and res.parameters == [] and res.path is None and res.ok
    assert [r.seed for r in res.runs] == [1, 2]
    assert res.runs[0].metrics["dma.requests"] == 1
    assert res.aggregate["dma.requests"] == {"mean": 1, "min": 1, "max": 1, "sum": 2}
    columns, rows = res.table()
    assert columns[0] == "seed" and "dma.faults" in columns and len(rows) == 2


def test_run_a_sweep_gives_a_row_per_point_and_seed(tmp_path):
    res = iommusim.run(SWEPT, seeds=[3, 5], set={"cpu.jitter": 10}, out=tmp_path / "o")
    assert len(res.points) == 4 and len(res.runs) == 8
    df = res.to_frame()
    assert list(df.columns[:3]) == ["iommu.iotlb.entries", "kernel.fixes.cache_flush", "seed"]
    assert df.shape == (8, 3 + len(res.runs[0].metrics))
    assert df["seed"].tolist() == [3, 5] * 4
    assert df["iommu.iotlb.entries"].tolist() == [16] * 4 + [64] * 4
    # the bug (no cache flush) shows as faults on the incoherent walker
    faults = df.groupby("kernel.fixes.cache_flush")["dma.faults"].sum()
    assert faults[False] > 0 and faults[True] == 0
    with pytest.raises(ValueError, match="a sweep of 4 points"):
        res.aggregate  # noqa: B018
    assert res.points[0].aggregate["dma.requests"]["sum"] == 2
    assert res.points[1].values == {"iommu.iotlb.entries": 16, "kernel.fixes.cache_flush": False}
    assert res.points[0].document["hardware"]["cpu"]["jitter"] == 10


def test_load_reads_back_the_same_table_and_csv(tmp_path):
    res = iommusim.run(SWEPT, seeds=1, out=tmp_path / "o")
    again = iommusim.load(tmp_path / "o")
    assert again.path == (tmp_path / "o").resolve() and res.path == again.path
    assert again.table() == res.table()
    with (tmp_path / "o" / "results.csv").open() as f:
        rows = list(csv.reader(f))
    columns, table = res.table()
    assert rows[0] == columns
    assert len(rows) == 1 + len(table)
    # sweep values as in YAML (true/false), metrics as numbers
    assert rows[1][:3] == ["16", "true", "1"] and rows[2][:3] == ["16", "false", "1"]
    assert [float(x) for x in rows[1][3:]] == [float(x) for x in table[0][3:]]
    assert iommusim.load(tmp_path / "o" / "point-000").table() == (columns, [table[0]])


def test_results_csv_beside_results_json(tmp_path):
    """`iommusim run` writes it too (no sweep: in the results directory)."""
    from iommusim import cli

    path = tmp_path / "mini.yaml"
    path.write_text(json.dumps(MINI))
    assert cli.main(["run", str(path), "--quiet", "--out", str(tmp_path / "r")]) == 0
    header, *rows = list(csv.reader((tmp_path / "r" / "results.csv").open()))
    assert header[0] == "seed" and [r[0] for r in rows] == ["1", "2"]
    assert iommusim.load(tmp_path / "r").table() == (
        header, [[int(r[0]), *json.loads(f"[{','.join(r[1:])}]")] for r in rows])


def test_run_a_catalog_name_and_a_path(tmp_path):
    by_name = iommusim.run("gather-no-gaps", seeds=1)
    assert by_name.runs[0].metrics["dma.stale_translations"] > 0
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps(MINI))
    assert iommusim.run(path, seeds=1).name == iommusim.run(str(path), seeds=1).name == "mini"


def test_hardware_path_in_a_dict_is_relative_to_the_cwd(tmp_path, monkeypatch):
    from iommusim.scenarios.resolve import preset_dir

    (tmp_path / "hw.yaml").write_text((preset_dir() / "vtd-coherent.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    res = iommusim.run({**MINI, "hardware": "./hw.yaml"}, seeds=1)
    assert res.points[0].document["hardware"]["iommu"]["coherent_walk"] is True


def test_bad_input_raises_input_error():
    with pytest.raises(InputError) as exc:
        iommusim.run({**MINI, "run": {"seeds": 0}})
    assert "run.seeds" in str(exc.value)
    with pytest.raises(InputError, match=r"cpu\.jiter"):
        iommusim.run(MINI, set={"cpu.jiter": 3})
    with pytest.raises(InputError, match="no such file or catalog scenario"):
        iommusim.run("no-such-scenario")
    with pytest.raises(InputError, match="must be at least 1"):
        iommusim.run(MINI, seeds=0)


def test_load_refuses_what_is_not_results(tmp_path):
    with pytest.raises(InputError, match="not a results directory"):
        iommusim.load(tmp_path)
    (tmp_path / "results.json").write_text('{"schema": "other"}')
    with pytest.raises(InputError, match="not an iommusim results file"):
        iommusim.load(tmp_path)


def test_to_frame_names_the_extra_without_pandas(monkeypatch):
    res = iommusim.Results([{"scenario": {"name": "x"}, "sweep": {}, "aggregate": {},
                             "runs": [{"seed": 1, "metrics": {"m": 1}}]}])
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"iommusim\[frame\]"):
        res.to_frame()


def test_importing_iommusim_stays_light():
    code = ("import sys, iommusim; print(sorted(m for m in sys.modules "
            "if m.startswith('iommusim.'))); iommusim.run; print('iommusim.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["[]", "True"]


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        iommusim.no_such_thing  # noqa: B018
    assert Path(iommusim.__file__).name == "__init__.py"
