"""``iommusim run``: results directories, determinism, parallel seeds, expectations,
traces, ``--out`` and atomic writes."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iommusim import cli as cli_module
from iommusim.experiment import executors, metrics, results
from iommusim.experiment.assembly import simulate

# Metric names the issue requires in every run.
REQUIRED_METRICS = (
    "dma.requests", "dma.faults", "dma.stale_translations", "dma.latency.mean",
    "dma.latency.p50", "dma.latency.p99", "dma.latency.max", "iotlb.hits", "iotlb.misses",
    "walk_cache.hits", "walker.walks", "walker.pte_reads", "cpu.map.count",
    "cpu.map.latency.mean", "cpu.unmap.latency.mean", "cpu.flush.lines", "table.live_pages",
    "table.leaked_pages", "uaf.events", "sim.cycles", "sim.events",
)


def command() -> list[str]:
    """The installed ``iommusim`` entry point (or ``python -m iommusim``)."""
    script = Path(sys.executable).with_name("iommusim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "iommusim"]


def run_ok(cli, *args) -> None:
    r = cli("run", *args, "--quiet")
    assert r.rc == 0, r.out + r.err


# --- the results directory ----------------------------------------------------------
def test_results_json_schema(cli, scenario, tmp_path, h):
    path = scenario(h.BUSY)
    run_ok(cli, path, "--seeds", "2", "--jobs", "1", "--out", "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".iommusim", "config.resolved.yaml", "results.csv", "results.json"
    ]
    doc = h.load_results(tmp_path / "out")
    assert doc["schema"] == "iommusim.results/1"
    assert set(doc) == {"schema", "version", "created", "source", "scenario", "hardware",
                        "sweep", "runs", "aggregate", "expect"}
    assert doc["source"] == str(path)
    assert doc["sweep"] == {}
    assert doc["scenario"]["name"] == "busy"
    assert doc["hardware"]["iommu"]["write_buffer"]["enabled"] is True  # the preset
    assert doc["hardware"]["cpu"]["jitter"] == 30  # overrides applied
    assert [r["seed"] for r in doc["runs"]] == [1, 2]
    names = set(metrics.concrete_names())
    for run in doc["runs"]:
        assert set(run) == {"seed", "stopped", "unfinished", "metrics", "stats", "faults",
                            "incidents", "distributions"}
        assert run["stopped"] is None and run["unfinished"] == []
        # every metric of the catalog, and only those, in every run
        assert set(run["metrics"]) == names
        assert set(REQUIRED_METRICS) <= names
        assert all(isinstance(v, int | float) for v in run["metrics"].values())
        assert len(run["faults"]) == run["metrics"]["dma.faults"]
    agg = doc["aggregate"]
    assert set(agg) == names
    for name, stats in agg.items():
        values = [r["metrics"][name] for r in doc["runs"]]
        assert stats == pytest.approx({"mean": sum(values) / 2, "min": min(values),
                                       "max": max(values), "sum": sum(values)})
    assert doc["expect"] == []


def test_results_carry_every_blocks_stats_under_its_config_name(cli, scenario, tmp_path, h):
    """One name per block: a block's stats sit under its config key path (the name its
    trace records use), in full, beside the headline metrics they agree with."""
    path = scenario(h.BUSY)
    run_ok(cli, path, "--seed", "1", "--out", "out")
    run = h.load_results(tmp_path / "out")["runs"][0]
    stats, m = run["stats"], run["metrics"]
    assert {"cache", "dram", "allocator", "iommu.write_buffer", "iommu.iotlb",
            "iommu.walk_cache", "iommu.invalidation", "iommu.port", "iommu.walker",
            "cpu0", "cpu1", "nic0"} <= set(stats)
    doc = h.load_results(tmp_path / "out")
    for name in ("cache", "dram", "allocator", "iommu.write_buffer", "iommu.iotlb",
                 "iommu.walk_cache", "iommu.invalidation"):
        node = doc["hardware"]
        for key in name.split("."):
            node = node[key]  # the block's name is a path into the hardware config
    for key in ("lookups", "hits", "misses", "fills", "evictions", "invalidated"):
        assert stats["iommu.iotlb"][key] == m[f"iotlb.{key}"]
    assert stats["iommu.walker"]["walks"] == m["walker.walks"]
    assert stats["iommu.port"]["reads"] == m["walker.pte_reads"]
    assert stats["allocator"]["failures"] == m["table.alloc_failures"]
    assert stats["nic0"]["requests"] + stats["nic1"]["requests"] == m["dma.requests"]


def test_default_scenario_and_default_out(cli, tmp_path, h):
    """Without SCENARIO the default catalog scenario runs into results/<name>."""
    r = cli("run", "--seed", "1", "--jobs", "1", "--quiet")
    assert r.rc in (0, 1), r.err  # one seed may not meet a 50% expectation
    name = cli_module.DEFAULT_SCENARIO
    doc = h.load_results(tmp_path / "results" / name)
    assert doc["scenario"]["name"] == name
    assert [run["seed"] for run in doc["runs"]] == [1]
    assert f"results: {tmp_path / 'results' / name}" in r.out


def test_summary_table(cli, scenario, h):
    r = cli("run", scenario(h.BASE), "--jobs", "1", "--quiet", "--out", "out")
    assert r.rc == 0
    lines = r.out.splitlines()
    assert lines[0] == "base on vtd-incoherent: 1 point(s) x 2 seed(s)"
    assert lines[1].split() == ["metric", "mean", "min", "max"]
    for name in cli_module.SUMMARY_METRICS:
        assert any(line.split()[0] == name for line in lines[2:]), name
    assert "  expect dma.faults == 0: ok, holds on 2/2 seeds (needs all)" in lines
    assert r.err == ""  # --quiet: no progress


def test_progress_without_quiet(cli, scenario, h):
    r = cli("run", scenario(h.BASE), "--jobs", "1", "--out", "out")
    assert r.rc == 0
    assert r.err.splitlines()[-1] == "2/2 runs"


def test_config_resolved_yaml(cli, scenario, tmp_path, h):
    path = scenario(h.BUSY)
    run_ok(cli, path, "--seed", "3", "--out", "out", "--set", "iommu.iotlb.entries=128",
           "--set", "run.until=5000000")
    text = (tmp_path / "out" / "config.resolved.yaml").read_text()
    assert text.startswith("# The configuration as run")
    resolved = yaml.safe_load(text)
    assert set(resolved) == {"scenario", "hardware"}
    hw, sc = resolved["hardware"], resolved["scenario"]
    assert hw["iommu"]["iotlb"]["entries"] == 128  # --set
    assert hw["cpu"]["jitter"] == 30 and hw["cpu"]["interrupts"]["mean_interval"] == 3000
    assert hw["iommu"]["walk_cache"]["entries"] == {3: 4, 2: 8, 1: 32}  # integer keys
    assert sc["run"]["until"] == 5_000_000
    assert sc["kernel"]["fixes"]["flush_done_sw_bit"] is False
    assert sc["kernel"]["fixes"]["cache_flush"] is True  # defaults written out
    # The same as results.json, and valid input again: run the resolved files and
    # get the same runs.
    doc = h.load_results(tmp_path / "out")
    assert json.loads(json.dumps(resolved)) == {"scenario": doc["scenario"],
                                                "hardware": doc["hardware"]}
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "hw.yaml").write_text(yaml.safe_dump(hw))
    sc = dict(sc, hardware="hw.yaml", overrides={})
    (tmp_path / "again" / "s.yaml").write_text(yaml.safe_dump(sc))
    r = cli("validate", tmp_path / "again" / "hw.yaml", tmp_path / "again" / "s.yaml")
    assert r.rc == 0, r.err
    run_ok(cli, tmp_path / "again" / "s.yaml", "--seed", "3", "--out", "out2")
    assert h.load_results(tmp_path / "out2")["runs"] == doc["runs"]


def test_trace_files(cli, scenario, tmp_path, h):
    run_ok(cli, scenario(h.BASE), "--jobs", "1", "--trace", "--out", "out")
    names = sorted(p.name for p in (tmp_path / "out").glob("trace-*"))
    assert names == ["trace-1.jsonl.gz", "trace-2.jsonl.gz"]  # gzip-compressed by default
    text = gzip.decompress((tmp_path / "out" / "trace-1.jsonl.gz").read_bytes()).decode()
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows
    for row in rows:
        assert {"cycle", "component", "event"} <= set(row)
        assert isinstance(row["cycle"], int) and isinstance(row["event"], str)
    cycles = [row["cycle"] for row in rows]
    assert cycles == sorted(cycles)
    doc = h.load_results(tmp_path / "out")
    assert cycles[-1] <= doc["runs"][0]["metrics"]["sim.cycles"]
    components = {row["component"] for row in rows}
    assert any("nic0" in c for c in components), components  # the device's DMA is traced
    # without --trace: no trace files, and the same results
    run_ok(cli, scenario(h.BASE), "--jobs", "1", "--out", "plain")
    assert not list((tmp_path / "plain").glob("trace-*"))
    assert h.load_results(tmp_path / "plain")["runs"] == doc["runs"]


def test_out_replaces_an_old_directory(cli, scenario, tmp_path, h):
    """An earlier results directory is replaced whole (what else --out may replace:
    tests/cli/test_out_safety.py)."""
    out = tmp_path / "deep" / "er" / "out"
    run_ok(cli, scenario(h.BASE), "--seed", "1", "--trace", "--out", out)
    assert list(out.glob("trace-1.*"))
    run_ok(cli, scenario(h.BASE), "--seed", "1", "--out", out)
    names = {p.name for p in out.iterdir()}
    assert {".iommusim", "config.resolved.yaml", "results.json"} <= names
    assert not list(out.glob("trace-*"))  # nothing of the old run is left
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no temporaries left


# --- determinism -----------------------------------------------------------------------
def test_same_seed_twice_identical_but_timestamp(cli, scenario, tmp_path, h):
    path = scenario(h.BUSY)
    run_ok(cli, path, "--seed", "5", "--jobs", "1", "--out", "a")
    run_ok(cli, path, "--seed", "5", "--jobs", "1", "--out", "b")
    a, b = h.load_results(tmp_path / "a"), h.load_results(tmp_path / "b")
    assert h.without_timestamp(a) == h.without_timestamp(b)
    assert (tmp_path / "a" / "config.resolved.yaml").read_text() == (
        tmp_path / "b" / "config.resolved.yaml"
    ).read_text()
    # and the seed matters: another seed gives another run
    run_ok(cli, path, "--seed", "6", "--jobs", "1", "--out", "c")
    assert h.load_results(tmp_path / "c")["runs"][0]["metrics"] != a["runs"][0]["metrics"]


def test_jobs_2_equals_jobs_1(cli, scenario, tmp_path, h):
    path = scenario(h.BUSY)
    run_ok(cli, path, "--seeds", "4", "--jobs", "1", "--out", "one")
    run_ok(cli, path, "--seeds", "4", "--jobs", "2", "--out", "two")
    one, two = h.load_results(tmp_path / "one"), h.load_results(tmp_path / "two")
    assert h.without_timestamp(one) == h.without_timestamp(two)
    cycles = [r["metrics"]["sim.cycles"] for r in one["runs"]]
    assert len(set(cycles)) > 1  # the seeds really differ


def test_determinism_across_processes(scenario, tmp_path, h):
    """Two real processes of the installed command (different hash seeds, --jobs 2
    against --jobs 1) write the same results.json."""
    path = scenario(h.BUSY)
    outs = []
    for hashseed, jobs in (("1", "1"), ("2", "2")):
        out = tmp_path / f"p{hashseed}"
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        proc = subprocess.run(
            [*command(), "run", str(path), "--seeds", "3", "--jobs", jobs, "--out", str(out)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "busy on vtd-incoherent: 1 point(s) x 3 seed(s)" in proc.stdout
        assert proc.stderr.splitlines()[-1] == "3/3 runs"  # not a terminal: progress lines
        outs.append(h.load_results(out))
    assert h.without_timestamp(outs[0]) == h.without_timestamp(outs[1])


def test_subprocess_bad_input(scenario, tmp_path, h):
    """Exit code 2 from the real command, with no traceback and no output."""
    path = scenario(h.BASE.replace("size: 4K", "size: 4Q"))
    proc = subprocess.run(
        [*command(), "run", str(path), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "iommusim: 1 problem(s) in the input:\n"
        f"  {path}:7: cpus[0].ops[0].map.size: '4Q' is not a size; use an integer or 4K, 2M, 1G\n"
    )
    assert not (tmp_path / "out").exists()


# --- expectations --------------------------------------------------------------------
def test_failed_expectation_exit_1(cli, scenario, tmp_path, h):
    path = scenario(h.BASE.replace('dma.faults: "== 0"', 'dma.faults: "> 0", dma.requests: "== 1"'))
    r = cli("run", path, "--jobs", "1", "--quiet", "--out", "out")
    assert r.rc == 1
    assert ("  expect dma.faults > 0: FAILED, holds on 0/2 seeds (needs all); "
            "fails on seeds 1, 2") in r.out.splitlines()
    assert "  expect dma.requests == 1: ok, holds on 2/2 seeds (needs all)" in r.out.splitlines()
    doc = h.load_results(tmp_path / "out")  # the results are still written
    assert doc["expect"] == [
        {"metric": "dma.faults", "condition": "> 0", "seeds": "all", "ok": False,
         "failed_seeds": [1, 2]},
        {"metric": "dma.requests", "condition": "== 1", "seeds": "all", "ok": True,
         "failed_seeds": []},
    ]


def test_seed_quantifiers(cli, scenario, tmp_path, h):
    """all / any / N%: with exactly 2 of 4 seeds passing."""
    path = scenario(h.BUSY)
    run_ok(cli, path, "--seeds", "4", "--jobs", "1", "--out", "probe")
    cycles = {r["seed"]: r["metrics"]["sim.cycles"]
              for r in h.load_results(tmp_path / "probe")["runs"]}
    assert len(set(cycles.values())) == 4
    bound = sorted(cycles.values())[2]
    passing = sorted(s for s, c in cycles.items() if c >= bound)
    failing = sorted(s for s, c in cycles.items() if c < bound)
    verdicts = {"all": 1, "any": 0, "50%": 0, "75%": 1, "60%": 1, "49.5%": 0, "100%": 1}
    for seeds, rc in verdicts.items():
        expectation = f'{{condition: ">= {bound}", seeds: "{seeds}"}}'
        r = cli("run", path, "--seeds", "4", "--jobs", "1", "--quiet", "--out", "q",
                "--set", f"expect.sim.cycles={expectation}")
        assert r.rc == rc, (seeds, r.out)
        verdict = "ok" if rc == 0 else "FAILED"
        line = (f"  expect sim.cycles >= {bound}: {verdict}, holds on 2/4 seeds "
                f"(needs {seeds})")
        if rc:
            line += f"; fails on seeds {', '.join(map(str, failing))}"
        assert line in r.out.splitlines(), r.out
        (entry,) = h.load_results(tmp_path / "q")["expect"]
        assert entry["failed_seeds"] == failing and entry["ok"] == (rc == 0)
    assert passing


def test_catalog_default_seeds_quantifier_from_file(cli, scenario, h):
    """The quantifier written in a file (not --set), with the shorthand and long forms."""
    text = h.BASE.replace(
        'expect: {dma.faults: "== 0"}',
        'expect:\n  dma.faults: "== 0"\n  dma.requests: {condition: "> 5", seeds: any}',
    )
    r = cli("run", scenario(text), "--jobs", "1", "--quiet", "--out", "out")
    assert r.rc == 1
    assert "expect dma.requests > 5: FAILED, holds on 0/2 seeds (needs any)" in r.out


# --- interrupted runs ------------------------------------------------------------------
@pytest.fixture
def old_results(cli, scenario, tmp_path, h):
    """A finished results directory and a snapshot of its files."""
    path = scenario(h.BASE)
    run_ok(cli, path, "--jobs", "1", "--trace", "--out", "out")
    snapshot = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    return path, snapshot


def assert_untouched(tmp_path: Path, snapshot: dict[str, bytes]) -> None:
    out = tmp_path / "out"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == snapshot
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_crash_mid_run_keeps_old_results(cli, tmp_path, old_results, monkeypatch):
    path, snapshot = old_results
    calls = []

    def crashing(exp, seed, *, trace=False):
        calls.append(seed)
        if len(calls) == 2:
            raise RuntimeError("simulator bug")
        return simulate(exp, seed, trace=trace)

    monkeypatch.setattr(executors, "simulate", crashing)
    with pytest.raises(RuntimeError, match="simulator bug"):
        cli_module.main(["run", str(path), "--seeds", "3", "--jobs", "1", "--quiet",
                         "--out", "out"])
    assert calls == [1, 2]
    assert_untouched(tmp_path, snapshot)


def test_interrupt_mid_run_keeps_old_results(cli, tmp_path, old_results, monkeypatch):
    path, snapshot = old_results

    def interrupted(exp, seed, *, trace=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(executors, "simulate", interrupted)
    r = cli("run", path, "--jobs", "1", "--quiet", "--out", "out")
    assert r.rc == 130
    assert r.err == "iommusim: interrupted\n"
    assert_untouched(tmp_path, snapshot)


def test_crash_while_writing_keeps_old_results(cli, tmp_path, old_results, monkeypatch):
    """A failure after results.json was half written: the old directory stays."""
    path, snapshot = old_results
    real = results._write_point

    def half_written(folder, point, trace):
        real(folder, point, trace)
        with (folder / "results.json").open("w") as f:
            f.write('{"schema": "iommusim.res')  # truncated
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "_write_point", half_written)
    with pytest.raises(OSError, match="No space left"):
        cli_module.main(["run", str(path), "--jobs", "1", "--quiet", "--out", "out"])
    assert_untouched(tmp_path, snapshot)


@pytest.mark.parametrize("key", ["allocator.fail_nth", "kernel.alloc_faults.fail_nth"])
def test_alloc_faults_count_the_workload_only(cli, tmp_path, key, h):
    """fail_nth=1 fails the workload's first table allocation, not the domain's set-up
    (which used to crash the run with a traceback for allocator.fail_nth=1)."""
    r = cli("run", "shared-level-flush", "--seed", "1", "--quiet", "--set", f"{key}=1",
            "--out", tmp_path / "out")
    assert r.rc in (0, 1), r.err
    assert "Traceback" not in r.err
    run = h.load_results(tmp_path / "out")["runs"][0]
    assert run["metrics"]["table.alloc_failures"] == 1
