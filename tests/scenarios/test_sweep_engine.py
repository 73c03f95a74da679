"""Sweeps as one task list (issue 16 item 4): the same results directory, byte for byte
(creation time aside), whatever runs it -- one process, a pool across sweep points, a
real Dask cluster, shards joined by ``iommusim merge``, or a run resumed after an
interrupt -- and an unreachable scheduler ends at once with exit 2 and writes nothing.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iommusim.experiment import executors, pool

# BUSY (seed-dependent: jitter, interrupts, random maps) swept over two points.
SWEEP = "sweep: {cpu.jitter: [0, 30]}\n"


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, results.json without its timestamp."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "results.json":
                data = re.sub(rb'"created": "[^"]*"', b'"created": ""', data)
            out[str(p.relative_to(folder))] = data
    return out


@pytest.fixture
def sweep(scenario, h) -> Path:
    return scenario(h.BUSY + SWEEP)


@pytest.fixture
def reference(cli, sweep, tmp_path) -> dict[str, bytes]:
    """The sweep run in this process (--jobs 1), with traces."""
    r = cli("run", sweep, "--seeds", "2", "--jobs", "1", "--trace", "--quiet", "--out", "ref")
    assert r.rc == 0, r.err
    files = tree(tmp_path / "ref")
    assert {"index.json", "point-000/trace-2.jsonl.gz", "point-001/results.json"} <= set(files)
    return files


def test_jobs_run_across_points(cli, sweep, tmp_path, reference, monkeypatch):
    """2 points x 2 seeds are one list of 4 tasks: --jobs 4 starts one pool of 4 workers
    (a pool per point used to cap a one-seed sweep at one worker)."""
    pools = []
    real = pool.WorkerPool.__enter__

    def spy(self):
        pools.append(self.jobs)
        return real(self)

    monkeypatch.setattr(pool.WorkerPool, "__enter__", spy)
    r = cli("run", sweep, "--seeds", "2", "--jobs", "4", "--trace", "--quiet", "--out", "par")
    assert r.rc == 0, r.err
    assert pools == [4]
    assert tree(tmp_path / "par") == reference


def test_dask_local_cluster_gives_the_same_bytes(cli, sweep, tmp_path, reference):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        r = cli("run", sweep, "--seeds", "2", "--trace", "--quiet", "--out", "dask",
                "--executor", "dask", "--scheduler", cluster.scheduler_address)
    assert r.rc == 0, r.err
    assert tree(tmp_path / "dask") == reference


def test_shards_merge_to_the_same_bytes(cli, sweep, tmp_path, reference):
    for k in (1, 2, 3):
        r = cli("run", sweep, "--seeds", "2", "--jobs", "1", "--trace", "--quiet",
                "--shard", f"{k}/3", "--out", f"s{k}")
        assert r.rc == 0, r.err
        assert f"shard {k}/3" in r.out and "iommusim merge" in r.out
    # every 3rd task: shard 1 has point 0 seed 1 and point 1 seed 2, in their own folders
    assert sorted(n for n in tree(tmp_path / "s1") if not n.startswith(".")) == [
        "index.json", "point-000/config.resolved.yaml", "point-000/results.json",
        "point-000/trace-1.jsonl.gz", "point-001/config.resolved.yaml",
        "point-001/results.json", "point-001/trace-2.jsonl.gz", "results.csv", "shard.json",
    ]
    r = cli("merge", "s2", "s1", "s3", "--out", "merged")
    assert r.rc == 0, r.err
    assert "2 point(s) x 2 seed(s)" in r.out
    assert tree(tmp_path / "merged") == reference
    # a shard left out, or given twice: exit 2 naming it, nothing written
    r = cli("merge", "s1", "s3", "--out", "bad")
    assert r.rc == 2 and "shard(s) 2/3 missing" in r.err
    r = cli("merge", "s1", "s1", "s2", "--out", "bad")
    assert r.rc == 2 and "given twice" in r.err
    assert not (tmp_path / "bad").exists()


def counting(simulate, calls: list[int]):
    """``simulate`` noting every seed it runs in ``calls``."""

    def run(exp, seed, *, trace=False):
        calls.append(seed)
        return simulate(exp, seed, trace=trace)

    return run


def test_resume_after_an_interrupt_runs_only_the_rest(cli, sweep, tmp_path, reference,
                                                     monkeypatch):
    calls = []
    real = executors.simulate

    def interrupted_third(exp, seed, *, trace=False):
        calls.append(seed)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(exp, seed, trace=trace)

    monkeypatch.setattr(executors, "simulate", interrupted_third)
    r = cli("run", sweep, "--seeds", "2", "--jobs", "1", "--trace", "--quiet", "--out", "out")
    assert r.rc == 130
    journal = tmp_path / "out.partial"
    assert r.err == (f"iommusim: interrupted; 2 finished run(s) kept in {journal}; run again "
                     "with --resume to go on\n")
    assert not (tmp_path / "out").exists()
    calls.clear()
    monkeypatch.setattr(executors, "simulate", counting(real, calls))
    r = cli("run", sweep, "--seeds", "2", "--jobs", "1", "--trace", "--out", "out", "--resume")
    assert r.rc == 0, r.err
    assert len(calls) == 2  # the two runs the interrupt cut off
    assert "resumed: 2 run(s)" in r.err
    assert tree(tmp_path / "out") == reference
    assert not journal.exists()  # written: the journal is gone


def test_resume_adds_seeds_to_a_finished_directory(cli, sweep, tmp_path, reference,
                                                   monkeypatch):
    r = cli("run", sweep, "--seeds", "1", "--jobs", "1", "--trace", "--quiet", "--out", "out")
    assert r.rc == 0, r.err
    calls: list[int] = []
    monkeypatch.setattr(executors, "simulate", counting(executors.simulate, calls))
    r = cli("run", sweep, "--seeds", "2", "--jobs", "1", "--trace", "--quiet", "--out", "out",
            "--resume")
    assert r.rc == 0, r.err
    assert calls == [2, 2]  # seed 2 of each point; seed 1 came from the directory
    assert tree(tmp_path / "out") == reference
    # another configuration: nothing of the directory is reused
    calls.clear()
    r = cli("run", sweep, "--seeds", "2", "--jobs", "1", "--quiet", "--out", "out", "--resume",
            "--set", "cpu.interrupts.duration=1000")
    assert r.rc == 0, r.err
    assert len(calls) == 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_exit_2_writes_nothing(scenario, tmp_path, h):
    pytest.importorskip("dask.distributed")
    path = scenario(h.BASE)
    address = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "iommusim", "run", str(path), "--executor", "dask",
         "--scheduler", address, "--connect-timeout", "2", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert time.monotonic() - start < 60
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0] == "iommusim: 1 problem(s) in the input:", proc.stderr
    assert lines[1].startswith(f"  --scheduler: cannot reach the Dask scheduler at {address} "
                               "within 2 s"), proc.stderr
    assert len(lines) == 2, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenario.yaml"]
