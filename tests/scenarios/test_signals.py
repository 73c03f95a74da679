"""Signals (issue 13, "Signals and concurrency"): SIGTERM behaves as Ctrl-C does.

Real processes and real signals: ``iommusim run --jobs 2`` is started in a process group
of its own, the test waits for its first progress line (the workers are running and
runs have finished), then signals the main process or the whole group, as a terminal's
Ctrl-C or ``kill -TERM -PGID`` does. The command must print one line (no worker
tracebacks), exit 130 (SIGINT) or 143 (SIGTERM), leave no temporary directory and no
process behind, and keep its finished runs for ``--resume``.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iommusim.experiment import results

# A quarter second or so per seed: the 18 seeds left after the first progress line
# outlast the signal by far.
SLOW = """\
name: slow
hardware: vtd-incoherent
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
cpus:
  - name: cpu0
    ops:
      - map: {iova: 0x40000000, pa: 0x100000000, size: 2M}
      - signal: mapped
devices:
  - name: nic0
    stream: {after: mapped, pattern: random, region: {base: 0x40000000, size: 2M},
             count: 5000, size: 64, access: read, outstanding: 4}
run: {seeds: 20}
"""
PROGRESS = re.compile(r"\d+/\d+ runs$")


def wait_started(proc: subprocess.Popen[str], deadline: float = 90) -> str:
    """The first progress line on stderr ("2/20 runs"): runs have finished in workers."""
    assert proc.stderr is not None
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], 1)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            if PROGRESS.match(line.strip()):
                return line
            pytest.fail(f"unexpected output before the first runs: {line!r}")
    pytest.fail(f"no progress line within {deadline} s (exit code {proc.poll()})")


def group_gone(pgid: int, wait: float = 10) -> bool:
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig,to_group,code,word", [
    (signal.SIGINT, True, 130, "interrupted"),   # Ctrl-C in a terminal
    (signal.SIGTERM, True, 143, "terminated"),   # kill -TERM -PGID (a job controller)
    (signal.SIGTERM, False, 143, "terminated"),  # kill PID
], ids=["sigint-group", "sigterm-group", "sigterm-main"])
def test_signal_one_line_no_traceback_nothing_left(scenario, tmp_path, sig, to_group, code,
                                                   word):
    path = scenario(SLOW)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "iommusim", "run", str(path), "--jobs", "2", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        wait_started(proc)
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if not PROGRESS.match(ln)]
    journal = tmp_path / "out.partial"
    kept = len(list(journal.glob("*/run-*.json")))
    assert kept >= 2
    assert lines == [f"iommusim: {word}; {kept} finished run(s) kept in {journal}; run again "
                     "with --resume to go on"]
    assert stdout == ""
    assert group_gone(proc.pid), "worker processes outlived the command"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.partial", "scenario.yaml"]


def test_sigterm_while_writing_keeps_the_old_results(cli, scenario, tmp_path, h, monkeypatch):
    """SIGTERM while the results directory is being written: the temporary directory
    goes, the old results stay, one line, exit 143."""
    path = scenario(h.BASE)
    r = cli("run", path, "--jobs", "1", "--quiet", "--out", "out")
    assert r.rc == 0, r.err
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    real = results._write_point

    def terminated_midway(folder: Path, point, trace) -> None:
        real(folder, point, trace)
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to this process
        time.sleep(10)  # the handler raises long before this ends

    monkeypatch.setattr(results, "_write_point", terminated_midway)
    r = cli("run", path, "--jobs", "1", "--quiet", "--out", "out")
    assert r.rc == 143
    journal = tmp_path / "out.partial"
    assert r.err == (f"iommusim: terminated; 2 finished run(s) kept in {journal}; run again "
                     "with --resume to go on\n")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # and --resume writes them without running anything again
    monkeypatch.setattr(results, "_write_point", real)
    r = cli("run", path, "--jobs", "1", "--out", "out", "--resume")
    assert r.rc == 0 and "resumed: 2 run(s)" in r.err
    assert not journal.exists()
