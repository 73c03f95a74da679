"""Flush, sweep and IOTLB-reach figures, built from hand-written results and sweeps."""

from __future__ import annotations

import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle

from iommusim.errors import InputError
from iommusim.plots import flush_figure, flush_table, reach_figure, sweep_figure
from iommusim.plots.sweep import metric_label, metric_unit


def bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def by_label(ax):
    out: dict[str, list[float]] = {}
    for c in ax.containers:
        out[c.get_label()] = [round(b.get_height(), 6) for b in c]
    return out


def test_flush_table_means_per_operation(demo):
    table = flush_table(demo)
    assert table["map"]["ops"] == 8 and table["unmap"]["ops"] == 4
    per_map = table["map"]["per_op"]
    assert per_map["leaf"] == pytest.approx(1.25)  # (1*3 + 2*1) / 4
    assert per_map["install"] == pytest.approx(0.5)
    assert per_map["table_start"] == pytest.approx(16.0)
    assert table["unmap"]["per_op"]["unmap"] == pytest.approx(1.0)


def test_flushes_side_by_side_stacked_by_cause(demo, demo_fixed):
    fig = flush_figure([demo, demo_fixed])
    # table_start (16 lines per map) dwarfs the rest: a zoomed row shows the others
    (top_map, top_unmap), (zoom_map, zoom_unmap) = (fig.axes[:2], fig.axes[2:])
    assert top_map.get_title() == "per map"
    assert zoom_map.get_title().startswith("per map, zoomed")
    stacks = by_label(top_map)
    assert list(stacks) == ["new table page (start)", "table pointer install",
                            "helper (another CPU's pointer)", "leaf range"]
    assert stacks["leaf range"] == [1.25, 1.25]
    assert stacks["helper (another CPU's pointer)"] == [0.0, 0.5]
    assert len(bars(top_map)) == 2 * 4
    assert "new table page (start)" not in by_label(zoom_map)
    assert not zoom_unmap.get_visible()  # one cause per unmap: nothing to zoom into
    ticks = [t.get_text() for t in top_map.get_xticklabels()]
    assert ticks == ["flush_done_sw_bit=off\n(8 maps)", "flush_done_sw_bit=on\n(4 maps)"]
    totals = [t.get_text() for t in top_map.texts]
    assert totals == ["17.8", "18.2"]
    assert by_label(top_unmap) == {"unmap clear": [1.0, 1.0]}
    assert top_map.get_ylabel() == "lines flushed per map"
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [*stacks, "unmap clear"]
    assert "bars: 2 runs compared" in fig.get_suptitle()
    assert "all other fixes on" in fig.get_suptitle()


def test_flushes_single_run_without_zoom(kit):
    res = kit.results([kit.run(1, flush={"map.leaf": {1: 2, 3: 2}, "map.install": {1: 4}})])
    fig = flush_figure(res)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert by_label(ax) == {"table pointer install": [1.0], "leaf range": [2.0]}
    assert [t.get_text() for t in ax.texts] == ["3", "1", "2"]  # total, then segments


def test_flushes_of_a_sweep_one_bar_per_point(sweep):
    fig = flush_figure(sweep)
    ax = fig.axes[0]
    assert len(bars(ax)) == 6
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "size=64K\nentries=64\n(4 maps)"  # 2 maps in each of 2 seeds


def test_sweep_lines_per_other_value_with_min_max_bars(sweep):
    fig = sweep_figure(sweep, "dma.latency.mean")
    (ax,) = fig.axes
    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 2  # entries = 64, 128
    assert [c.get_label() for c in containers] == ["64", "128"]
    line = containers[0].lines[0]
    assert list(line.get_xdata()) == [64 * 1024, 128 * 1024, 256 * 1024]
    # mean of (kib + 64, kib + 128); bars from min to max
    assert list(line.get_ydata()) == [64 + 96, 128 + 96, 256 + 96]
    segments = containers[0].lines[2][0].get_segments()
    assert [tuple(s[:, 1]) for s in segments] == [(128, 192), (192, 256), (320, 384)]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["64K", "128K", "256K"]
    assert ax.get_xlabel() == "devices.0.stream.region.size"
    assert ax.get_ylabel() == "dma.latency.mean (cycles)"  # the name: no meaning given
    assert ax.get_legend().get_title().get_text() == "iommu.iotlb.entries"
    assert "mean over seeds, bars: min–max" in fig.get_suptitle()


def test_sweep_defaults_and_other_x(sweep):
    fig = sweep_figure(sweep)  # the scenario's expect metric
    assert fig.axes[0].get_ylabel() == "dma.faults (per run)"
    fig = sweep_figure(sweep, "iotlb.hit_rate", x="entries")  # a short name is enough
    ax = fig.axes[0]
    assert ax.get_xlabel() == "iommu.iotlb.entries"
    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 3  # one per region size
    assert list(containers[0].lines[0].get_ydata()) == [pytest.approx(0.375)] * 2


def test_sweep_categorical_parameter(kit):
    points = []
    for fix in (False, True):
        res = kit.results([kit.run(s, metrics={"dma.faults": 0 if fix else s})
                           for s in (1, 2, 3)], fix=fix,
                          sweep={"kernel.fixes.flush_done_sw_bit": fix})
        points.append({"values": {"kernel.fixes.flush_done_sw_bit": fix}, "results": res})
    doc = {"parameters": ["kernel.fixes.flush_done_sw_bit"], "points": points}
    fig = sweep_figure(doc, "dma.faults", meaning=lambda m: "DMA requests that faulted")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["off", "on"]
    (c,) = ax.containers
    assert list(c.lines[0].get_ydata()) == [2, 0]
    assert c.lines[0].get_linestyle() == "None"  # categories: points, no joining line
    assert ax.get_ylabel() == "DMA requests that faulted (per run)"
    assert "fix off" not in fig.get_suptitle()  # the swept fix is on the x axis
    # by default a sweep over a fix switch shows the share of seeds with the symptom
    # (the scenario's expectation dma.faults > 0): 3 of 3 seeds off, none on
    fig = sweep_figure(doc)
    ax = fig.axes[0]
    (c,) = ax.containers
    assert list(c.lines[0].get_ydata()) == [100, 0]
    assert c.has_yerr is False and c.lines[0].get_linestyle() == "None"
    assert ax.get_ylabel() == "seeds showing the symptom (%)"
    assert fig.get_suptitle().startswith("seeds showing dma.faults > 0 against "
                                         "kernel.fixes.flush_done_sw_bit")
    assert "share of the seeds" in fig.get_suptitle()
    # a metric named: its mean again, unless the share is asked for
    assert sweep_figure(doc, "dma.faults").axes[0].get_ylabel() == "dma.faults (per run)"
    fig = sweep_figure(doc, "dma.faults", share=True)
    assert list(fig.axes[0].containers[0].lines[0].get_ydata()) == [100, 0]


def test_sweep_share_of_a_guarded_scenario_uses_the_guard(kit):
    """The guard's symptom wins over expect:, any of its conditions counts, and a
    numeric axis keeps its line."""
    points = []
    for entries in (16, 64):
        runs = [kit.run(s, metrics={"dma.faults": 0, "uaf.events": int(s <= entries // 16)})
                for s in (1, 2, 3, 4)]
        res = kit.results(runs, sweep={"iommu.iotlb.entries": entries})
        res["scenario"]["regression"] = {"fix": "free_after_sync",
                                         "symptom": {"uaf.events": "> 0", "dma.faults": "> 0"},
                                         "min_rate": "50%"}
        points.append({"values": {"iommu.iotlb.entries": entries}, "results": res})
    doc = {"parameters": ["iommu.iotlb.entries"], "points": points}
    fig = sweep_figure(doc)
    (c,) = fig.axes[0].containers
    assert list(c.lines[0].get_ydata()) == [25, 100]
    assert c.lines[0].get_linestyle() == "-"
    assert "uaf.events > 0 or dma.faults > 0" in fig.get_suptitle()
    assert sweep_figure(doc, share=False).axes[0].get_ylabel() == "dma.faults (per run)"


@pytest.mark.parametrize(("metric", "unit"), [
    ("dma.latency.p99", "cycles"), ("cpu.lock.wait", "cycles"), ("sim.cycles", "cycles"),
    ("iotlb.hit_rate", "fraction of lookups"), ("cpu.map.flush.lines", "cache lines per operation"),
    ("cpu.flush.lines", "cache lines per run"), ("cpu.flush.lines.helper", "cache lines per run"),
    ("dma.faults", "per run"), ("table.leaked_pages", "per run"),
])
def test_sweep_y_units(metric, unit):
    assert metric_unit(metric) == unit
    assert metric_label(metric, "what it is") == f"What it is ({unit})"


@pytest.mark.parametrize(("metric", "x", "message"), [
    ("dma.latncy.mean", None, "did you mean 'dma.latency.mean'"),
    (None, "iommu.iotlb.entires", "not a swept parameter"),
])
def test_sweep_bad_choices(sweep, metric, x, message):
    with pytest.raises(InputError, match=message):
        sweep_figure(sweep, metric, x)


def test_reach_latency_and_hit_rate_against_working_set(sweep):
    fig = reach_figure(sweep)
    ax_lat, ax_hit = fig.axes
    lat = [c for c in ax_lat.containers if isinstance(c, ErrorbarContainer)]
    hit = [c for c in ax_hit.containers if isinstance(c, ErrorbarContainer)]
    assert len(lat) == len(hit) == 2
    assert list(hit[0].lines[0].get_ydata()) == [pytest.approx(37.5)] * 3  # % of lookups
    assert ax_lat.get_ylabel() == "mean DMA latency (cycles)"
    assert ax_hit.get_ylabel() == "IOTLB hit rate (%)"
    assert ax_hit.get_xlabel() == "working set: devices.0.stream.region.size"
    # a dotted reach line per IOTLB size inside the range: 64 x 4K = 256K (128 x 4K is out)
    reach = [line.get_xdata()[0] for line in ax_lat.get_lines() if line.get_linestyle() == ":"]
    assert reach == [256 * 1024]
    top = [a for a in ax_lat.child_axes if a.get_xlabel().startswith("IOTLB reach")]
    assert [t.get_text() for t in top[0].get_xticklabels()] == ["64×4K\n= 256K"]


def test_reach_needs_a_region_parameter(kit):
    doc = kit.sweep_doc()
    doc["parameters"] = ["a", "b"]
    with pytest.raises(InputError, match="no swept region size"):
        reach_figure(doc)
