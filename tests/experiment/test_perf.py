"""``iommusim perf`` (issue 15): the kernel's map/unmap benchmark in model time.

One tiny run of all four pairs (module fixture) is checked for the shape of the
kernel's table and of perf.json/perf.csv/perf.png, and for the four calibration
points within 5 % of the published minima. The fit must reproduce the preset's work
costs (so the costs in use are the documented rule's output), and they must be
``WorkConfig``'s defaults; bad arguments end
with exit 2 and one message before anything is written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from iommusim.cli import main
from iommusim.experiment.perf import FORMATS, Bench, run_pair
from iommusim.experiment.perf_fit import POINTS, fit
from iommusim.hwmodels.config import CpuConfig, WorkConfig
from iommusim.scenarios.resolve import load_hardware, preset_dir
from iommusim.tables.iopgtable import implementation_for

KEYS = ["format", "old", "walker", "op", "case", "avg_new_ns", "avg_old_ns", "min_new_ns",
        "min_old_ns", "min_pct"]
LOOPS = 2


@pytest.fixture(scope="module")
def hw():
    return load_hardware(preset_dir() / "i7-12700.yaml")[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, hw):
    out = tmp_path_factory.mktemp("perf")
    assert main(["perf", "--loops", str(LOOPS), "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "perf.json").read_text())


def expected_cases(hw, fmt: str) -> list[str]:
    return [c.name for c in Bench(hw, fmt).cases()]


def test_the_table_has_the_kernels_shape(tiny_run, hw, capsys):
    _, rows = tiny_run
    assert all(list(r) == KEYS for r in rows)
    assert [r["format"] for r in rows] == sorted(
        (r["format"] for r in rows), key=list(FORMATS).index)
    for fmt in FORMATS:
        mine = [r for r in rows if r["format"] == fmt]
        cases = expected_cases(hw, fmt)
        # the single IOPTE of every page size, then 256 IOPTEs of 4K, 2M and 1G
        assert cases[0] == "2^12" and cases[-3:] == ["256*2^12", "256*2^21", "256*2^30"]
        assert [r["case"] for r in mine] == cases + cases  # map section, then unmap
        assert [r["op"] for r in mine] == ["map"] * len(cases) + ["unmap"] * len(cases)
        assert {r["old"] for r in mine} == {implementation_for(fmt)}
        assert {r["walker"] for r in mine} == {"coherent"}
        for r in mine:
            assert 0 < r["min_new_ns"] <= r["avg_new_ns"]
            assert 0 < r["min_old_ns"] <= r["avg_old_ns"]
            pct = (r["min_old_ns"] - r["min_new_ns"]) * 100 / r["min_old_ns"]
            assert r["min_pct"] == pytest.approx(pct, abs=0.2)


def test_csv_and_figure_hold_the_same_rows(tiny_run):
    out, rows = tiny_run
    with (out / "perf.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [list(r) for r in table[:1]] == [KEYS]
    assert [(r["format"], r["op"], r["case"]) for r in table] == [
        (r["format"], r["op"], r["case"]) for r in rows]
    assert float(table[0]["min_new_ns"]) == rows[0]["min_new_ns"]
    assert (out / "perf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_calibration_points_are_within_5_percent(tiny_run):
    _, rows = tiny_run
    got = {(r["op"], r["case"]): r["min_new_ns"] for r in rows if r["format"] == "amdv1"}
    for p in POINTS:
        assert got[p.op, p.case] == pytest.approx(p.ns, rel=0.05), p


def test_the_costs_in_use_are_the_fit(hw):
    """The preset's cpu.work is what the documented rule gives (re-fit if this fails)."""
    f = fit(hw)
    for name, cycles in f.costs.items():
        assert getattr(hw.cpu.work, name) == pytest.approx(cycles, abs=0.01), name
    assert max(abs(e) for e in f.residuals()) < 5


def test_the_work_defaults_are_the_fit_of_the_preset(hw):
    """WorkConfig's defaults (what every other preset charges) are the preset's fit;
    ``level`` is the 5-cycle L1D load-to-use less each machine's charged load_hit."""
    assert WorkConfig().model_copy(update={"level": hw.cpu.work.level}) == hw.cpu.work
    assert hw.cpu.work.level + hw.cpu.load_hit == 5
    assert WorkConfig().level + CpuConfig().load_hit == 5


def test_the_table_is_printed_as_the_kernel_prints_it(hw, capsys, tmp_path):
    assert main(["perf", "--format", "x86_64", "--loops", "1", "--out", str(tmp_path),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "x86_64 (new) vs amd-v2 (old), coherent walker" in text
    assert "map_pages \n   pgsz  ,avg new,old ns, min new,old ns  , min % (+ve is better)" in text
    assert "unmap_pages " in text
    assert any(line.startswith(" 256*2^21,") for line in text.splitlines())


def test_a_seed_gives_the_same_rows_and_only_noise_moves(hw):
    a = run_pair(hw, "vtdss", "coherent", 3, seed=1)
    b = run_pair(hw, "vtdss", "coherent", 3, seed=1)
    c = run_pair(hw, "vtdss", "coherent", 3, seed=2)
    assert a == b
    assert [r.avg_new_ns for r in a] != [r.avg_new_ns for r in c]
    for x, y in zip(a, c, strict=True):  # min is the deterministic cost plus a little
        assert x.min_new_ns == pytest.approx(y.min_new_ns, rel=0.05)


def test_compare_fix_runs_genpt_with_the_switch_off_as_old(hw):
    rows = run_pair(hw, "vtdss", "incoherent", 1, compare_fix="unmap_flush_changed_only")
    assert {r.old for r in rows} == {"genpt:unmap_flush_changed_only=off"}
    unmap = {r.case: r for r in rows if r.op == "unmap"}
    # before 5815d930 every visited item of every level was flushed: more lines, and
    # clflush evicts them, so the next map's walk misses too
    for case in ("2^12", "2^21", "256*2^12"):
        assert unmap[case].min_new_ns < unmap[case].min_old_ns
    same = run_pair(hw, "vtdss", "coherent", 8, compare_fix="unmap_flush_changed_only")
    # a coherent walker needs no flush at all: the switch changes nothing
    assert all(abs(r.min_pct) < 3 for r in same)


@pytest.mark.parametrize("args,needle", [
    (["--format", "riscv64"], "unknown format 'riscv64'"),
    (["--compare-fix", "no_such_fix"], "unknown fix switch 'no_such_fix'"),
    (["--loops", "0"], "--loops must be between 1"),
    (["--walker", "sideways"], "unknown walker 'sideways'"),
])
def test_bad_arguments_exit_2_before_anything_runs(args, needle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["perf", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and needle in err[1]  # the header and the one problem
    assert not out.exists()


def test_an_unwritable_out_is_bad_input(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["perf", "--loops", "1", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr()
    assert "--out" in err.err and "cannot create it" in err.err and err.out == ""


def test_calibrate_prints_the_fit(capsys):
    assert main(["perf", "--calibrate"]) == 0
    text = capsys.readouterr().out
    for p in POINTS:
        assert f"{p.op} {p.case}" in text
    assert "per-item" in text and "item_examine" in text


def test_an_unknown_preset_is_bad_input(tmp_path, capsys):
    assert main(["perf", "--preset", "no-such-machine", "--out", str(tmp_path / "o")]) == 2
    assert "no such hardware file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_readme_has_the_section():
    text = (Path(__file__).resolve().parents[2] / "docs" / "fidelity.md").read_text()
    assert text.startswith("# How close to hardware")
