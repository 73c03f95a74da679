"""``iommusim explore``: livelock, a scenario's own explore: section, expect modes,
oracles, bad input."""

from __future__ import annotations

import json
from pathlib import Path

SHARED = "shared-level-flush"

# A user's scenario (not the catalog): two CPUs race for a new level-0 table, each
# device DMAs as its CPU's map returns; expect: states what must hold.
MINE = """\
name: mine
hardware: vtd-incoherent
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
kernel:
  fixes: {flush_done_sw_bit: FIX}
cpus:
  - name: cpu0
    ops:
      - map: {iova: 0x40000000, pa: 0x100000000, size: 4K}
      - signal: warm
      - barrier: go
      - map: {iova: 0x40200000, pa: 0x100200000, size: 4K}
  - name: cpu1
    after: warm
    ops:
      - barrier: go
      - map: {iova: 0x40201000, pa: 0x100201000, size: 4K}
devices:
  - name: nic0
    follow: {cpu: cpu0}
  - name: nic1
    follow: {cpu: cpu1}
expect:
  dma.faults: "== 0"
explore:
  bound: 1
  runs: 500
"""


def mine(tmp_path: Path, fix: bool, extra: str = "") -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(MINE.replace("FIX", str(fix).lower()) + extra)
    return path


def test_livelock_is_reported_not_hung(cli) -> None:
    res = cli("explore", SHARED, "--max-steps", "60", "--out", "ll")
    assert res.code == 1, res.out + res.err
    assert "failure at run 0: livelock: no end after 60 events" in res.out
    path = Path("ll/shared-level-flush.livelock.replay.json")
    doc = json.loads(path.read_text())
    assert doc["exploration"]["max_steps"] == 60
    again = cli("replay", path)
    assert again.code == 1 and "reproduced: livelock" in again.out


def test_a_scenarios_explore_section_and_expect_hold(cli, tmp_path) -> None:
    off = cli("explore", mine(tmp_path, False), "--out", "off")
    assert off.code == 1, off.out
    assert "explore defaults from mine.yaml: explore:" in off.out
    assert "expect: hold" in off.out
    assert "failure at run" in off.out and "visibility" in off.out
    on = cli("explore", mine(tmp_path, True), "--out", "on")
    assert on.code == 0, on.out
    assert "bounded space exhausted: yes" in on.out
    assert "failures found: 0" in on.out


def test_expect_modes_and_oracles_off(cli, tmp_path) -> None:
    path = mine(tmp_path, False)
    # Without the oracles, only the expectation (dma.faults == 0) can fail.
    res = cli("explore", path, "--no-oracle", "visibility", "--out", "a")
    assert res.code == 1
    assert "failure at run" in res.out and "expect:dma.faults" in res.out
    assert "expect dma.faults == 0 fails" in res.out
    # symptom: the expectation describes the bug, so the clean FIFO run fails at once
    res = cli("explore", path, "--no-oracle", "visibility", "--expect", "symptom", "--out", "b")
    assert res.code == 1 and "failure at run 0" in res.out
    res = cli("explore", path, "--no-oracle", "visibility", "--expect", "ignore",
              "--runs", "30", "--out", "c")
    assert res.code == 0


def test_explore_out_files(cli) -> None:
    res = cli("explore", "short-gather", "--set", "kernel.fixes.gather_unmapped_length=true",
              "--out", "o")
    assert res.code == 0, res.out
    summary = json.loads(Path("o/explore.json").read_text())
    assert summary["schema"] == "iommusim.explore/1"
    assert summary["exhausted"] is True and summary["failures"] == 0
    assert summary["runs"] == len(Path("o/explored.jsonl").read_text().splitlines())
    assert summary["options"]["strategy"] == "dfs"
    assert not list(Path("o").glob("*.replay.json"))


def test_default_out_directory(cli) -> None:
    res = cli("explore", "short-gather", "--runs", "3")
    assert res.code == 1
    assert Path("results/explore/short-gather/explore.json").exists()
    assert "replay: iommusim replay results/explore/short-gather/" in res.out


def test_evictions_are_choice_points(cli) -> None:
    res = cli("explore", SHARED, "--set", "kernel.fixes.flush_done_sw_bit=true",
              "--evictions", "1", "--preemptions", "0", "--runs", "5", "--out", "e")
    assert res.code == 0, res.out
    assert " evict)" in res.out and "preempt" not in res.out.split("choice points in")[1]


def test_bad_input(cli, tmp_path) -> None:
    cases = [
        (["nosuch"], "no such file or catalog scenario"),
        ([SHARED, "--set", "cpus.7.start=1"], "no list item"),
        ([SHARED, "--preempt-in", "mapp"], "--preempt-in"),
        ([SHARED, "--preempt-before", "loads"], "--preempt-before"),
    ]
    for args, message in cases:
        res = cli("explore", *args)
        assert res.code == 2, args
        assert message in res.err, (args, res.err)
        assert "Traceback" not in res.err
    bad = mine(tmp_path, False, "  strategy: bfs\n")
    res = cli("explore", bad)
    assert res.code == 2 and "explore.strategy" in res.err
    swept = mine(tmp_path, False)
    swept.write_text(swept.read_text() + "sweep: {cpus.1.start: [0, 100]}\n")
    res = cli("explore", swept)
    assert res.code == 2 and "sweep" in res.err
    res = cli("explore", swept, "--set", "sweep={}")
    assert res.code == 1
