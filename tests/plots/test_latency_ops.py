"""DMA latency and CPU operation cost figures, built from hand-written results."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.patches import StepPatch

from iommusim.errors import InputError
from iommusim.plots import dma_latency_figure, op_cost_figure


def steps(ax):
    return [p for p in ax.patches if isinstance(p, StepPatch)]


def histogram_total(patch: StepPatch) -> float:
    values = patch.get_data().values
    return float(values.sum())


def test_latency_splits_by_outcome_and_pools_seeds(demo):
    fig = dma_latency_figure(demo)
    ax_hist, ax_cdf = fig.axes
    # seeds 1 and 2 pooled: iotlb 4+2, walk-cache 4, walk 2, fault 1
    patches = steps(ax_hist)
    assert [p.get_label().split(":")[0] for p in patches] == [
        "IOTLB hit", "walk-cache hit", "full walk", "fault"]
    assert [histogram_total(p) for p in patches] == [6, 4, 2, 1]
    assert patches[0].get_label() == "IOTLB hit: 6 (46%)"
    # one CDF per outcome plus the pooled one; each reaches 1 at its largest latency
    lines = ax_cdf.get_lines()
    assert len(lines) == 5
    assert lines[-1].get_label() == "all DMAs: 13"
    for line in lines:
        assert line.get_ydata()[-1] == pytest.approx(1.0)
    assert list(lines[0].get_xdata()) == [100, 100, 120]  # iotlb: 100 x5, 120 x1
    assert list(lines[0].get_ydata()) == pytest.approx([0, 5 / 6, 1])
    assert lines[-1].get_xdata()[-1] == 800


def test_latency_axes_title_and_ns_axis(demo):
    fig = dma_latency_figure(demo)
    ax_hist, ax_cdf = fig.axes
    assert ax_cdf.get_xlabel() == "latency (cycles)"
    assert ax_cdf.get_ylabel() == "cumulative fraction"
    (ns,) = ax_hist.child_axes
    assert ns.get_xlabel() == "ns (at 2 GHz)"
    assert ax_cdf.get_xlim()[0] == 0
    title = fig.get_suptitle()
    assert "demo on vtd-incoherent" in title
    assert "fix off: flush_done_sw_bit" in title
    assert "seeds 1–2" in title
    assert "p50" in ax_cdf.get_title() and "max 800" in ax_cdf.get_title()
    # one legend, beside the axes
    assert len(fig.legends) == 1 and ax_hist.get_legend() is None


def test_latency_one_seed(demo):
    fig = dma_latency_figure(demo, seed=2)
    labels = [p.get_label() for p in steps(fig.axes[0])]
    assert labels == ["IOTLB hit: 2 (33%)", "walk-cache hit: 4 (67%)"]
    assert "seed 2" in fig.get_suptitle()


def test_latency_unknown_seed_is_an_input_error(demo):
    with pytest.raises(InputError, match="no run with seed 7"):
        dma_latency_figure(demo, seed=7)


def test_rare_outcome_gets_a_log_axis(kit):
    res = kit.results([kit.run(1, dma={"iotlb": {10: 5000}, "fault": {40: 1}})])
    ax = dma_latency_figure(res).axes[0]
    assert ax.get_yscale() == "log"
    assert "log" in ax.get_ylabel()


def test_no_dmas_still_draws(kit):
    fig = dma_latency_figure(kit.results([kit.run(1)]))
    assert "no DMAs" in fig.axes[0].texts[0].get_text()


def test_ops_one_column_per_kind_one_line_per_size(demo):
    fig = op_cost_figure(demo, seed=1)
    main = [a for a in fig.axes]
    assert len(main) == 4  # (histogram, CDF) x (map, unmap)
    map_hist, unmap_hist, map_cdf, unmap_cdf = main
    assert [p.get_label() for p in steps(map_hist)] == [
        "map 4K: 3 ops, mean 5,333", "map 2M: 1 ops, mean 9,000"]
    assert [histogram_total(p) for p in steps(map_hist)] == [3, 1]
    assert [p.get_label() for p in steps(unmap_hist)] == ["unmap 4K: 2 ops, mean 3,000"]
    assert map_cdf.get_xlabel() == "map latency (cycles)"
    assert unmap_cdf.get_xlabel() == "unmap latency (cycles)"
    assert len(map_cdf.get_lines()) == 3  # 4K, 2M, all maps
    assert len(unmap_cdf.get_lines()) == 1
    assert "p99 9,000" in map_cdf.get_title()
    # 4K and 2M maps and the unmaps each get their own colour
    colors = {tuple(np.round(p.get_edgecolor(), 3)) for a in (map_hist, unmap_hist)
              for p in steps(a)}
    assert len(colors) == 3


def test_ops_pools_seeds(demo):
    fig = op_cost_figure(demo)
    assert steps(fig.axes[0])[0].get_label().startswith("map 4K: 4 ops")


@pytest.mark.parametrize(("n", "total", "text"), [
    (0, 10, "0%"), (10, 10, "100%"), (1, 3, "33%"), (1, 201, "0.5%"), (1, 5000, "<0.1%"),
    (4000, 4020, "99.5%"), (99999, 100000, ">99.9%"),
])
def test_percent_never_rounds_to_all_or_nothing(n, total, text):
    from iommusim.plots.latency import percent

    assert percent(n, total) == text
