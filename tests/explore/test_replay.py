"""Replay files: written on every failure, shrunk, and replayed exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iommusim.explore import replay as R

SHARED = "shared-level-flush"


@pytest.fixture
def saved(cli) -> tuple[Path, dict]:
    res = cli("explore", SHARED, "--out", "found")
    assert res.code == 1, res.out + res.err
    (line,) = [ln for ln in res.out.splitlines() if ln.strip().startswith("replay: ")]
    path = Path(line.split("iommusim replay ", 1)[1])
    assert path.exists()
    return path, json.loads(path.read_text())


def test_the_replay_file_has_everything(saved) -> None:
    path, doc = saved
    assert path.name == "shared-level-flush.visibility.replay.json"
    assert doc["schema"] == R.SCHEMA
    assert doc["scenario"]["name"] == SHARED and len(doc["scenario"]["sha256"]) == 64
    assert "cpus.0.ops.2.repeat.count=1" in doc["sets"]
    assert "cpu.interrupts.mean_interval=0" in doc["sets"]
    assert doc["config"]["scenario"]["kernel"]["fixes"]["flush_done_sw_bit"] is False
    assert doc["config"]["hardware"]["cpu"]["jitter"] == 0
    assert doc["seed"] == 1
    x = doc["exploration"]
    assert x["strategy"] == "dfs" and x["bound"] == 1 and x["run"] > 0
    assert x["budget"]["preemptions"] == 1 and x["budget"]["preempt_cycles"] == 4000
    # Shrunk: the one preemption that matters, between cpu0's cmpxchg and its flush.
    (dev,) = doc["choices"]["deviations"]
    assert dev["kind"] == "preempt" and dev["option"] == 1
    assert "cpu0" in dev["what"] and "flush" in dev["what"]
    kinds = {k for k, _, _ in doc["choices"]["list"]}
    assert kinds <= {"tie", "preempt", "evict"}
    assert doc["choices"]["list"][dev["index"]] == ["preempt", 1, 2]
    assert sum(o != 0 for _, o, _ in doc["choices"]["list"]) == 1
    assert doc["failure"]["check"] == "visibility" and doc["failure"]["cycle"] > 0
    assert doc["faults"] and doc["faults"][0]["reason"] == "not_present"
    assert doc["metrics"]["cpu.map.invisible"] >= 1
    events = {r["event"] for r in doc["trace"]}
    assert {"cmpxchg", "flush", "interrupt", "fault"} <= events
    preempt = [r for r in doc["trace"] if r["event"] == "interrupt"]
    assert preempt and preempt[0]["source"] == "explorer"


def test_replay_reproduces_the_same_fault_at_the_same_cycle(saved, cli) -> None:
    path, doc = saved
    res = cli("replay", path)
    assert res.code == 1, res.out
    cycle = doc["failure"]["cycle"]
    assert f"reproduced: visibility at cycle {cycle:,}" in res.out
    _, out = R.replay(path)
    assert R.compare(doc, out) == []
    assert out.result is not None
    assert out.result.faults == doc["faults"]  # same fault, same cycle, same address
    assert [list(c) for c in out.choices] == doc["choices"]["list"]


def test_replay_in_a_fresh_interpreter_with_another_hash_seed(saved) -> None:
    path, doc = saved
    env = dict(os.environ, PYTHONHASHSEED="12345")
    proc = subprocess.run(
        [sys.executable, "-m", "iommusim", "replay", str(path)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"reproduced: visibility at cycle {doc['failure']['cycle']:,}" in proc.stdout


def test_replay_plot_and_out(saved, cli, tmp_path) -> None:
    path, _ = saved
    res = cli("replay", path, "--plot", "--out", "fig")
    assert res.code == 1, res.out + res.err
    out = tmp_path / "fig"
    assert (out / "shared-level-flush.visibility.timeline.png").stat().st_size > 10_000
    trace = (out / "shared-level-flush.visibility.trace.jsonl").read_text().splitlines()
    assert json.loads(trace[0])["cycle"] == 0


def test_replay_with_the_fix_on_no_longer_fails(saved, cli) -> None:
    path, _ = saved
    res = cli("replay", path, "--set", "kernel.fixes.flush_done_sw_bit=true")
    assert res.code == 0, res.out
    assert "now: no failure" in res.out
    assert "left the saved choice list" in res.out  # the fixed code takes other steps


def test_a_replay_file_that_is_not_one(cli, tmp_path) -> None:
    bad = tmp_path / "x.replay.json"
    bad.write_text("{}")
    res = cli("replay", bad)
    assert res.code == 2 and "not a replay file" in res.err
    res = cli("replay", tmp_path / "missing.json")
    assert res.code == 2 and "no such file" in res.err


def test_shrinking_drops_the_deviations_that_do_not_matter(cli) -> None:
    # A random run deviates at many ties and boundaries; the saved list keeps only
    # what the failure needs.
    res = cli("explore", SHARED, "--strategy", "random", "--runs", "400", "--out", "r")
    assert res.code == 1, res.out
    found = [ln for ln in res.out.splitlines() if "deviation(s) as found" in ln]
    before, after = found[0].split(" deviation(s) as found, ")
    assert int(before.strip()) > 1
    # The race needs exactly one thing: the winner preempted before its flush.
    assert int(after.split()[0]) == 1
    path = next(Path("r").glob("*.replay.json"))
    doc = json.loads(path.read_text())
    (kept,) = doc["choices"]["deviations"]
    assert kept["kind"] == "preempt" and "before its flush" in kept["what"]
    assert len(doc["choices"]["found"]) == int(before.strip())
    assert cli("replay", path).code == 1
