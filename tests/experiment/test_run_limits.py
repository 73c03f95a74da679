"""Runs that would never end, and runs that end with work left (issue 13).

A loop that never lets time advance is stopped after ``STILL_LIMIT`` operations at one
cycle, naming the CPU; a run that would take forever is stopped by ``run.max_events``;
either, or reaching ``run.until`` with work left, is a warning in the summary naming
who did not finish and how far each got, and exit 1 unless the scenario's ``expect:``
speaks of ``sim.finished``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from iommusim import cli as cli_module
from iommusim.errors import InputError
from iommusim.experiment.assembly import simulate
from iommusim.experiment.load import load
from iommusim.hwmodels.sim import STILL_LIMIT

HEAD = """\
name: t
hardware: vtd-incoherent
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
"""
MAP = "      - map: {iova: 0x40000000, pa: 0x100000000, size: 4K}\n"


@pytest.fixture
def run_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def run(text: str, *sets: str):
        path = tmp_path / "s.yaml"
        path.write_text(HEAD + text)
        start = time.monotonic()
        result = simulate(load(path, list(sets)), 1)
        return result, time.monotonic() - start

    return run


@pytest.mark.parametrize("op", ["{delay: 0}", "{signal: x}"])
def test_a_loop_at_one_cycle_is_stopped_naming_the_cpu(op, run_file):
    ops = MAP + f"      - repeat: {{count: 1000000000000, stride: 0, ops: [{op}]}}\n"
    result, seconds = run_file("cpus:\n  - name: cpu0\n    ops:\n" + ops)
    kind = op.strip("{}").split(":")[0]
    assert result.stopped.startswith(
        f"cpu0 kept the clock at cycle {result.metrics['sim.cycles']:,} for "
        f"{STILL_LIMIT:,} operations (operation ")
    assert f"of 1,000,000,000,001: {kind})" in result.stopped
    (cpu,) = result.unfinished
    assert cpu["name"] == "cpu0" and cpu["kind"] == "cpu" and cpu["total"] == 10**12 + 1
    assert result.metrics["sim.finished"] == 0
    assert seconds < 120


def test_a_run_that_would_take_forever_is_stopped_by_max_events(run_file):
    text = ("devices:\n  - name: nic0\n    stream: {region: {base: 0x40000000, size: 4K}, "
            "count: 1000000000, gap: 10}\nrun: {until: 1000000000000000, max_events: 50000}\n")
    result, _ = run_file(text)
    assert result.stopped.startswith("stopped at cycle ")
    assert "(run.max_events = 50,000)" in result.stopped
    (nic,) = result.unfinished
    assert nic["name"] == "nic0" and nic["total"] == 10**9 and 0 < nic["done"] < 50_000
    assert nic["progress"] == f"{nic['done']:,} of 1,000,000,000 DMA requests done"


def test_cpus_waiting_on_each_other_are_named(run_file):
    text = ("cpus:\n  - name: cpu0\n    ops: [{wait: b}, {signal: a}]\n"
            "  - name: cpu1\n    ops: [{wait: a}, {signal: b}]\n"
            "devices:\n  - name: nic0\n    after: a\n    dma: [{iova: 0x40000000}]\n"
            "run: {until: 5000}\n")
    result, _ = run_file(text)
    assert result.stopped == "run.until (5,000 cycles) reached"
    progress = {u["name"]: u["progress"] for u in result.unfinished}
    assert progress == {
        "cpu0": "operation 1 of 2: wait, waiting for 'b'",
        "cpu1": "operation 1 of 2: wait, waiting for 'a'",
        "nic0": "0 of 1 DMA requests done, not started",
    }


def test_a_finished_run_reports_nothing(run_file):
    result, _ = run_file("cpus:\n  - name: cpu0\n    ops:\n" + MAP)
    assert result.stopped is None and result.unfinished == []
    assert result.to_json()["stopped"] is None


# --- the command: the summary warns, the exit code says it -------------------------------
STREAM = ("devices:\n  - name: nic1\n    stream: {region: {base: 0x40000000, size: 4K}, "
          "count: 200000, gap: 100}\nrun: {until: 100000, seeds: 2}\n")


def test_summary_warns_and_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(HEAD + STREAM)
    rc = cli_module.main(["run", "s.yaml", "--jobs", "1", "--quiet", "--out", "o"])
    out = capsys.readouterr().out
    assert rc == 1
    warnings = [ln.strip() for ln in out.splitlines() if "warning:" in ln]
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: seed 1 did not finish: run.until (100,000 cycles) "
                                  "reached; unfinished: nic1: ")
    assert warnings[0].endswith(" of 200,000 DMA requests done")
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["runs"][0]["unfinished"][0]["name"] == "nic1"


def test_an_expected_unfinished_run_keeps_exit_0(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(HEAD + STREAM + 'expect: {sim.finished: "== 0"}\n')
    rc = cli_module.main(["run", "s.yaml", "--jobs", "1", "--quiet", "--out", "o"])
    assert rc == 0
    assert "warning: seed 1 did not finish" in capsys.readouterr().out


def test_max_events_is_a_scenario_key(tmp_path):
    (tmp_path / "s.yaml").write_text(HEAD + "run: {max_events: 0}\n")
    with pytest.raises(InputError, match="max_events"):
        load(Path(tmp_path / "s.yaml"))
