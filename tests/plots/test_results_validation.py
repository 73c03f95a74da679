"""Results files given to ``iommusim plot`` that are not what iommusim wrote (issue 13):
non-UTF-8 bytes, FIFOs, wrong types deep inside, a sweep index that points elsewhere.
Each is exit 2 with one message naming the file, the line and the key path; nothing is
drawn or written."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iommusim import cli as cli_module

SCENARIO = """\
name: v
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
cpus:
  - name: cpu0
    ops: [{map: {iova: 0x40000000, pa: 0x100000000, size: 4K}}, {signal: m}]
devices:
  - name: nic0
    dma: [{after: m, iova: 0x40000000}]
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("made")
    (folder / "s.yaml").write_text(SCENARIO)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_module.main(["run", str(folder / "s.yaml"), "--quiet", "--jobs", "1",
                                "--out", str(folder / "out")]) == 0
    return folder / "out"


def run_plot(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli_module.main(["plot", *args])
    return rc, err.getvalue()


def one_problem(rc: int, err: str) -> str:
    assert rc == 2 and "Traceback" not in err, err
    head, *problems = err.strip().splitlines()
    assert head.startswith("iommusim: 1 problem")
    assert len(problems) == 1, err
    return problems[0].strip()


def copy_with(made: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    out = tmp_path / "r"
    shutil.copytree(made, out)
    doc = json.loads((made / "results.json").read_text())
    change(doc)
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    return out


CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "metric-a-string": (lambda d: d["runs"][0]["metrics"].update({"dma.faults": "many"}),
                        "runs[0].metrics.dma.faults", "input should be a valid number"),
    "seed-missing": (lambda d: d["runs"][0].pop("seed"), "runs[0].seed",
                     "missing required key 'seed'"),
    "bucket-not-a-number": (
        lambda d: d["runs"][0]["distributions"]["dma.latency"].update({"walk": {"fast": 1}}),
        "runs[0].distributions.dma.latency.walk.fast.[key]", "'fast' is not a number"),
    "runs-a-mapping": (lambda d: d.update(runs={"a": 1}), "runs",
                       "input should be a valid array"),
    "fixes-not-booleans": (lambda d: d["scenario"]["kernel"].update(fixes={"x": "yes"}),
                           "scenario.kernel.fixes.x", "input should be a valid boolean"),
    "clock-a-string": (lambda d: d["hardware"].update(clock_ghz="fast"),
                       "hardware.clock_ghz", "valid number"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["latency", "ops", "flushes"])
def test_a_mistyped_results_file(case, kind, made, tmp_path):
    change, path, message = CASES[case]
    folder = copy_with(made, tmp_path, change)
    before = sorted(p.name for p in folder.iterdir())
    problem = one_problem(*run_plot([str(folder), "--kind", kind]))
    where, _, rest = problem.partition(": ")
    assert where.startswith(f"{folder / 'results.json'}:") and where.split(":")[-1].isdigit()
    assert rest.startswith(f"{path}: ") and message in rest, problem
    assert sorted(p.name for p in folder.iterdir()) == before  # no figure


@pytest.mark.parametrize("data,message", [
    (b"\xff\xfe{\x00}\x00", "is UTF-16 text"),
    ('{"schema": "iommusim.results/1", "x": "é"}'.encode("latin-1"), "is not UTF-8 text"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "is not UTF-8 text (byte 0x89)"),
    (b"{\"a\": 1}\n\x00\xff", "contains a NUL byte"),
    (b"[" * 100_000, "not valid JSON"),
])
def test_not_utf8_or_not_json(data, message, made, tmp_path):
    folder = tmp_path / "r"
    shutil.copytree(made, folder)
    (folder / "results.json").write_bytes(data)
    assert message in one_problem(*run_plot([str(folder)]))


def test_a_fifo_is_refused(made, tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    os.mkfifo(folder / "results.json")
    assert "not a regular file" in one_problem(*run_plot([str(folder / "results.json")]))


def test_a_sweep_index_pointing_outside_is_refused(made, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    index = {"schema": "iommusim.sweep/1", "parameters": ["x"],
             "points": [{"values": {"x": 1}, "results": "../../etc/results.json"}]}
    (sweep / "index.json").write_text(json.dumps(index))
    assert "lies outside the sweep directory" in one_problem(*run_plot([str(sweep)]))
    index["points"] = [{"values": {"x": 1}}]
    (sweep / "index.json").write_text(json.dumps(index, indent=1))
    problem = one_problem(*run_plot([str(sweep)]))
    assert "points[0].results: missing required key 'results'" in problem


def test_the_untouched_copy_still_plots(made, tmp_path):
    folder = copy_with(made, tmp_path, lambda d: None)
    rc, err = run_plot([str(folder), "-o", str(tmp_path / "fig.png")])
    assert rc == 0, err


def test_a_trace_that_is_not_utf8(made, tmp_path):
    trace = tmp_path / "trace-1.jsonl"
    trace.write_bytes(b'{"cycle": 1, "component": "x", "event": "\xff"}\n')
    assert "is not UTF-8 text" in one_problem(*run_plot([str(trace)]))


def test_copy_is_deep(made):  # the fixture is shared: the cases must not change it
    doc = json.loads((made / "results.json").read_text())
    assert copy.deepcopy(doc) == doc and doc["runs"][0]["seed"] == 1
