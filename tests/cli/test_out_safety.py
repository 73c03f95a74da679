"""Where the commands write: never over a user's data (issue 13, "Data loss").

``--out`` replaces only a directory iommusim wrote; anything else non-empty, a file, or
the current directory is refused with exit 2 before anything simulates (the
``no_simulation`` fixture fails the test if a simulation starts). ``--force`` replaces
an iommusim directory that holds other files too, nothing more. The single-file
outputs (``plot -o``, ``schema -o``, ``replay`` traces) follow the same rule.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import command_line


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- refused before simulating --------------------------------------------------------------
def test_out_dot_is_refused_and_nothing_is_deleted(cli, base, tmp_path, no_simulation):
    (tmp_path / "thesis.tex").write_text("three years of work")
    before = snapshot(tmp_path)
    message = cli("run", base, "--out", ".").one_message()
    assert message.startswith("--out: . is the current directory")
    assert snapshot(tmp_path) == before


def test_out_containing_the_current_directory_is_refused(cli, base, tmp_path, no_simulation):
    work = tmp_path / "project" / "work"
    work.mkdir(parents=True)
    shutil.copy(base, work / "base.yaml")
    os.chdir(work)
    assert "contains it" in cli("run", "base.yaml", "--out", "..").one_message()
    assert "contains it" in cli("run", "base.yaml", "--out", tmp_path).one_message()
    assert sorted(p.name for p in work.iterdir()) == ["base.yaml"]


def test_out_naming_a_users_directory_is_refused(cli, base, tmp_path, no_simulation):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.md").write_text("mine")
    for force in ([], ["--force"]):  # --force does not widen what may be replaced
        message = cli("run", base, "--out", project, *force).one_message()
        assert "is a directory iommusim did not write (it holds notes.md)" in message
    assert snapshot(project) == {"notes.md": b"mine"}


def test_out_naming_a_file_is_refused_and_the_file_kept(cli, base, tmp_path, no_simulation):
    (tmp_path / "o.txt").write_text("keep me")
    assert "o.txt is a file" in cli("run", base, "--out", "o.txt", "--force").one_message()
    assert (tmp_path / "o.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_out_under_a_file_is_refused(cli, base, tmp_path, no_simulation):
    (tmp_path / "f").write_text("x")
    message = cli("run", base, "--out", "f/results").one_message()
    assert message == f"--out: cannot create f/results: {tmp_path / 'f'} is a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_under_a_read_only_directory_is_refused(cli, base, tmp_path, no_simulation):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert "is not writable" in cli("run", base, "--out", ro / "out").one_message()


def test_explore_out_follows_the_same_rule(cli, base, tmp_path, no_simulation):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("1,2")
    message = cli("explore", base, "--out", "mine").one_message()
    assert "iommusim did not write" in message
    assert (tmp_path / "mine" / "data.csv").read_text() == "1,2"


# --- what may be replaced --------------------------------------------------------------------
def test_own_results_are_replaced_and_others_need_force(cli, base, tmp_path):
    assert cli("run", base, "--out", "out", "--trace").rc == 1
    assert (tmp_path / "out" / ".iommusim").is_file()
    assert cli("run", base, "--out", "out").rc == 1  # replaced: no --force needed
    assert not list((tmp_path / "out").glob("trace-*"))
    (tmp_path / "out" / "notes.txt").write_text("added by hand")
    message = cli("run", base, "--out", "out").one_message()
    assert "holds files iommusim did not write (notes.txt)" in message and "--force" in message
    assert (tmp_path / "out" / "notes.txt").exists()
    assert cli("run", base, "--out", "out", "--force").rc == 1
    assert not (tmp_path / "out" / "notes.txt").exists()


def test_a_results_json_without_marker_counts_as_iommusim(cli, base, tmp_path):
    """Results written before the marker existed: recognised by their schema tag."""
    assert cli("run", base, "--out", "old").rc == 1
    (tmp_path / "old" / ".iommusim").unlink()
    assert cli("run", base, "--out", "old").rc == 1
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "results.json").write_text(json.dumps({"schema": "someone.else/1"}))
    assert "iommusim did not write" in cli("run", base, "--out", fake).one_message()


def test_an_empty_directory_may_be_used(cli, base, tmp_path):
    (tmp_path / "empty").mkdir()
    assert cli("run", base, "--out", "empty").rc == 1
    assert (tmp_path / "empty" / "results.json").exists()


def test_results_directories_get_the_usual_permissions(cli, base, tmp_path):
    old = os.umask(0o022)
    try:
        assert cli("run", base, "--out", "deep/out", "--trace").rc == 1
    finally:
        os.umask(old)
    for path in [tmp_path / "deep", tmp_path / "deep" / "out"]:
        assert path.stat().st_mode & 0o777 == 0o755, path
    for path in (tmp_path / "deep" / "out").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_explore_replaces_its_own_directory_whole(cli, tmp_path):
    args = ("explore", "shared-level-flush", "--out", "ex", "--runs", "60", "--quiet")
    assert cli(*args).rc == 1
    replays = sorted(p.name for p in (tmp_path / "ex").glob("*.replay.json"))
    assert replays and (tmp_path / "ex" / ".iommusim").is_file()
    (tmp_path / "ex" / "old-run.replay.json").write_text("{}")  # an earlier exploration's
    assert cli(*args).rc == 1
    assert sorted(p.name for p in (tmp_path / "ex").glob("*.replay.json")) == replays


# --- single files ----------------------------------------------------------------------------
def test_schema_output(cli, tmp_path):
    (tmp_path / "notes.json").write_text('{"mine": true}')
    assert "iommusim did not write it" in cli("schema", "-o", "notes.json").one_message()
    assert (tmp_path / "notes.json").read_text() == '{"mine": true}'
    assert "is a directory" in cli("schema", "-o", tmp_path).one_message()
    assert "no such directory" in cli("schema", "-o", "nope/s.json").one_message()
    assert cli("schema", "-o", "s.json").rc == 0
    assert cli("schema", "hardware", "-o", "s.json").rc == 0  # its own file: replaced
    assert json.loads((tmp_path / "s.json").read_text())["title"] == "HardwareConfig"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json", "s.json"]


def test_plot_output(cli, base, tmp_path):
    assert cli("run", base, "--out", "out").rc == 1
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n not a figure of ours")
    assert "iommusim did not write it" in cli("plot", "out", "-o", "photo.png").one_message()
    assert (tmp_path / "photo.png").read_bytes().endswith(b"not a figure of ours")
    (tmp_path / "d.png").mkdir()
    assert "is a directory" in cli("plot", "out", "-o", "d.png").one_message()
    assert cli("plot", "out", "-o", "fig.svg").rc == 0
    assert cli("plot", "out", "-o", "fig.svg").rc == 0  # its own figure: replaced


def test_replay_outputs(cli, tmp_path):
    assert cli("explore", "shared-level-flush", "--out", "ex", "--runs", "60",
               "--quiet").rc == 1
    replay = next((tmp_path / "ex").glob("*.replay.json"))
    stem = replay.name.removesuffix(".replay.json")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / f"{stem}.trace.jsonl").write_text("my own log\n")
    assert "iommusim did not write it" in cli("replay", replay, "--out", "o").one_message()
    (tmp_path / "file").write_text("x")
    assert "is a file" in cli("replay", replay, "--out", "file").one_message()
    (tmp_path / "o" / f"{stem}.trace.jsonl").unlink()
    assert cli("replay", replay, "--out", "o").rc == 1
    assert cli("replay", replay, "--out", "o").rc == 1  # its own trace: replaced


# --- concurrency and pipes -------------------------------------------------------------------
def test_four_concurrent_runs_into_one_out(base, tmp_path):
    """Each run waits for the one writing the same --out (their journals would collide),
    with --trace too; the directory ends valid and nothing else is left."""
    procs = [subprocess.Popen(command_line("run", base, "--out", "same", "--jobs", "1",
                                           "--quiet", "--trace"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert rc == 1, err  # the expectation's verdict, not a crash
        assert err == ""  # no traceback (and --quiet: no word about waiting)
    assert json.loads((tmp_path / "same" / "results.json").read_text())["runs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.yaml", "same"]


def test_a_closed_stdout_keeps_the_verdict(base, tmp_path):
    """`iommusim run ... | head -2`: the expectation failed, so the exit code is 1."""
    proc = subprocess.Popen(command_line("run", base, "--out", "o", "--quiet"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is printed
    assert proc.wait(timeout=300) == 1
    assert proc.stderr.read() == b""
    assert (tmp_path / "o" / "results.json").exists()
    shell = subprocess.run(f"{' '.join(command_line('run', base, '--out', 'o2'))} | head -2; "
                           "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                           capture_output=True, text=True, timeout=300)
    assert shell.returncode == 1, shell.stderr
    assert len(shell.stdout.splitlines()) == 2 and "Traceback" not in shell.stderr


def test_trace_export_output(cli, base, tmp_path):
    assert cli("run", base, "--out", "out", "--trace").rc == 1
    trace = next((tmp_path / "out").glob("trace-1.*"))
    (tmp_path / "notes.json").write_text('{"mine": true}')
    message = cli("trace", "export", trace, "-o", "notes.json").one_message()
    assert "iommusim did not write it" in message
    assert (tmp_path / "notes.json").read_text() == '{"mine": true}'
    assert "is a directory" in cli("trace", "export", trace, "-o", tmp_path).one_message()
    for name in ("t.json", "t.json.gz"):
        assert cli("trace", "export", trace, "-o", name).rc == 0
        assert cli("trace", "export", trace, "-o", name).rc == 0  # its own export: replaced
