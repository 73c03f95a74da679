"""``iommusim plot`` and ``iommusim run --plot``: files, formats, and bad input."""

from __future__ import annotations

import pytest

from iommusim.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    """Small PNGs: these tests check files and messages, the figure tests check content."""
    monkeypatch.setattr("iommusim.plots.render.DPI", 30)


@pytest.fixture
def rdir(tmp_path, kit, demo):
    return kit.write_results_dir(tmp_path / "demo", demo, kit.race_trace(), seed=1)


@pytest.mark.parametrize("kind", ["latency", "ops", "flushes", "timeline"])
def test_plot_kinds_from_a_results_directory(rdir, tmp_path, kind, capsys):
    out = tmp_path / f"{kind}.png"
    assert main(["plot", str(rdir), "--kind", kind, "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG)
    assert f"figure: {out}" in capsys.readouterr().out


def test_plot_svg_by_extension(rdir, tmp_path):
    out = tmp_path / "latency.svg"
    assert main(["plot", str(rdir / "results.json"), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("<?xml") and "<svg" in text
    assert "DMA latency (translation + access)" in text  # glyphs are paths, named in comments
    again = tmp_path / "again.svg"
    assert main(["plot", str(rdir / "results.json"), "-o", str(again)]) == 0
    assert again.read_text() == text  # no dates, stable ids


def test_plot_pdf_by_extension(rdir, tmp_path, kit, sweep):
    """PDF for papers: vector, without a creation date (the same results give the same
    bytes)."""
    out, again = tmp_path / "latency.pdf", tmp_path / "again.pdf"
    for path in (out, again):
        assert main(["plot", str(rdir), "-o", str(path)]) == 0
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and b"/CreationDate" not in data
    assert again.read_bytes() == data
    folder = kit.write_sweep_dir(tmp_path / "sweep", sweep)
    assert main(["plot", str(folder), "--no-share", "-o", str(tmp_path / "s.pdf")]) == 0
    assert (tmp_path / "s.pdf").read_bytes().startswith(b"%PDF-")


def test_default_outputs(rdir):
    assert main(["plot", str(rdir)]) == 0
    assert (rdir / "latency.png").exists()
    assert main(["plot", str(rdir / "trace-1.jsonl"), "--window", "0:4000"]) == 0
    assert (rdir / "timeline-1.png").read_bytes().startswith(PNG)


def test_flushes_side_by_side(tmp_path, kit, demo, demo_fixed):
    a = kit.write_results_dir(tmp_path / "off", demo)
    b = kit.write_results_dir(tmp_path / "on", demo_fixed)
    out = tmp_path / "fl.png"
    assert main(["plot", str(a), str(b), "--kind", "flushes", "-o", str(out)]) == 0
    assert out.exists()


def test_sweep_and_reach(tmp_path, kit, sweep):
    folder = kit.write_sweep_dir(tmp_path / "sweep", sweep)
    assert main(["plot", str(folder), "--metric", "iotlb.hit_rate", "--x", "entries"]) == 0
    assert (folder / "sweep.png").exists()
    out = tmp_path / "reach.svg"
    assert main(["plot", str(folder), "--kind", "reach", "-o", str(out)]) == 0
    assert "<svg" in out.read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--kind", "timeline", "--seed", "4"], "no trace for seed 4"),
    (["--kind", "latency", "--window", "1:2"], "--window is for --kind timeline"),
    (["--kind", "timeline", "--window", "9:3"], "END must be after START"),
    (["--kind", "sweep"], "needs a sweep directory"),
    (["--kind", "reach"], "needs a sweep directory"),
    (["--metric", "dma.faults"], "--metric is for --kind sweep"),
    (["--seed", "9"], "no run with seed 9"),
    (["-o", "FIG.jpg"], "must end in .png, .svg or .pdf"),
    (["--share"], "--share is for --kind sweep"),
    (["-o", "nodir/x.png"], "no such directory"),
])
def test_bad_input_exit_2_no_file(rdir, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.rglob("*"))
    code = main(["plot", str(rdir), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert "problem(s) in the input" in err and message in err
    assert "Traceback" not in err
    assert set(tmp_path.rglob("*")) == before  # nothing written, no temporary left


def test_bad_inputs_paths(tmp_path, rdir, capsys):
    for args, message in [
        ([str(tmp_path / "missing")], "no such file or directory"),
        ([str(tmp_path)], "neither a results directory"),
        ([str(rdir), str(rdir), "--kind", "latency"], "a second RESULTS is only for"),
        ([str(rdir / "trace-1.jsonl"), "--kind", "ops"], "not a trace"),
    ]:
        assert main(["plot", *args]) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.png"))


def test_timeline_needs_a_trace(tmp_path, kit, demo, capsys):
    folder = kit.write_results_dir(tmp_path / "untraced", demo)
    assert main(["plot", str(folder), "--kind", "timeline"]) == 2
    assert "run the scenario with --trace" in capsys.readouterr().err
    assert not (folder / "timeline.png").exists()


def test_bad_kind_is_argparse_usage_error(rdir, capsys):
    with pytest.raises(SystemExit) as info:
        main(["plot", str(rdir), "--kind", "pie"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


TINY = """\
name: tiny
hardware: vtd-incoherent
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
cpus:
  - name: cpu0
    ops:
      - repeat: {count: 3, stride: 2M, ops: [{map: {iova: 0x40000000, pa: 0x100000000, size: 4K}}]}
      - unmap: {iova: 0x40000000, size: 4K}
devices:
  - name: nic0
    follow: {cpu: cpu0, size: 64, access: write}
"""


def test_run_plot_writes_the_standard_figures(tmp_path, capsys):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY)
    out = tmp_path / "out"
    code = main(["run", str(scenario), "--seed", "1", "--trace", "--plot", "--quiet",
                 "--jobs", "1", "--out", str(out)])
    assert code == 0
    for name in ("latency.png", "ops.png", "flushes.png", "timeline.png"):
        assert (out / name).read_bytes().startswith(PNG), name
    assert "figures: 4 written" in capsys.readouterr().out


def test_run_plot_without_trace_has_no_timeline(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY + "sweep:\n  devices.0.follow.size: [64, 128]\n")
    out = tmp_path / "out"
    assert main(["run", str(scenario), "--seed", "1", "--plot", "--quiet", "--jobs", "1",
                 "--out", str(out)]) == 0
    assert (out / "sweep.png").exists() and (out / "flushes.png").exists()
    assert not (out / "reach.png").exists()  # no region size was swept
    assert (out / "point-001" / "latency.png").exists()
    assert not list(out.rglob("timeline*.png"))


def test_a_failed_save_leaves_nothing(tmp_path, demo):
    from iommusim.plots import dma_latency_figure, save_figure

    fig = dma_latency_figure(demo)

    def broken(name, **kwargs):
        with open(name, "w") as f:
            f.write("half a figure")
        raise RuntimeError("disk full")

    fig.savefig = broken
    with pytest.raises(RuntimeError):
        save_figure(fig, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
