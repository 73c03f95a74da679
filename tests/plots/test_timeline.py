"""The race diagram, from a hand-written trace of the shared-level-flush race."""

from __future__ import annotations

import pytest

from iommusim.errors import InputError
from iommusim.plots import find_story, parse_window, timeline_figure


def lane_labels(ax):
    return [t.get_text() for t in ax.get_yticklabels()]


def markers(ax, marker):
    return [line for line in ax.get_lines() if line.get_marker() == marker]


def callouts(ax):
    return [t.get_text() for t in ax.texts if t.get_text().isdigit()]


def test_story_of_the_first_fault(kit):
    story = find_story(kit.race_trace())
    texts = [e.text for e in story.events]
    assert [e.cycle for e in story.events] == [420, 600, 2734, 2734, 2780, 3030, 4540]
    assert texts[0].startswith(f"cpu1 cmpxchg at {kit.P:#x} writes")
    assert "into cpu1's cache only" in texts[0]
    assert texts[1].startswith(f"cpu0 cmpxchg at {kit.P:#x} fails: cpu1 got there first")
    assert texts[2] == "cpu0's map returns 0 (success)"
    assert texts[3] == "nic0 starts a 64-byte write DMA to iova 0x1000"
    assert "stale" in texts[4]
    assert texts[5] == "FAULT: nic0 write at iova 0x1000: not_present at level 1"
    assert texts[6].startswith(f"cpu1 flushes {kit.P:#x} (install)")
    assert "1,510 cycles after the fault" in texts[6]
    assert "interrupt held cpu1 for 4,000 cycles" in story.summary
    # the window runs from the operations' start to the late flush, padded a little
    lo, hi = story.window
    assert lo == 0 and 4840 <= hi < 5200
    assert all(e.marker for e in story.events)


def test_timeline_lanes_marks_and_callouts(kit):
    fig = timeline_figure(kit.race_trace())
    ax = fig.axes[0]
    assert lane_labels(ax) == ["cpu0", "cpu1", "nic0 (DMA)", "IOMMU walker"]
    assert ax.get_xlabel() == "cycle"
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # first lane on top
    (stale,) = markers(ax, "X")
    assert list(stale.get_xdata()) == [2780] and list(stale.get_ydata()) == [3]
    (fault,) = markers(ax, "*")
    assert list(fault.get_xdata()) == [3030]
    assert sorted(callouts(ax), key=int) == [str(i) for i in range(1, 8)]
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    for label in ("cmpxchg", "cache-line flush", "interrupt", "DMA that faulted",
                  "walker read: stale (DRAM ≠ CPU view)", "IOMMU fault",
                  "waiting for the IOMMU"):
        assert label in legend
    caption = [t.get_text() for t in fig.axes[2].texts]
    assert caption[0].startswith("First fault at cycle 3,030")
    assert caption[1].startswith("(1)  cycle 420: cpu1 cmpxchg")
    assert caption[-1].startswith("In short:") or caption[-2].startswith("In short:")
    assert "Race timeline, cycles 0–" in fig.get_suptitle()


def test_timeline_bars_match_the_trace(kit):
    fig = timeline_figure(kit.race_trace())
    ax = fig.axes[0]
    spans = {}
    for c in ax.collections:
        for path in c.get_paths():
            xs = path.vertices[:, 0]
            ys = path.vertices[:, 1]
            spans.setdefault(round(float(ys.min() + ys.max()) / 2, 2), []).append(
                (round(float(xs.min())), round(float(xs.max()))))
    nic0 = spans[2.0]
    assert (2734, 3050) in nic0  # the DMA from request to completion
    cpu1 = spans[1.0]
    assert (540, 4540) in cpu1  # the interrupt
    assert (4540, 4840) in cpu1  # the late install flush
    cpu0 = spans[0.0]
    assert (1284, 2734) in cpu0  # waiting for the write-buffer flush


def test_explicit_window_and_results_title(kit, demo):
    fig = timeline_figure(kit.race_trace(), demo, "2700:3100", seed=1)
    ax = fig.axes[0]
    assert ax.get_xlim() == (2700, 3100)
    # events outside the window are told in the caption only
    assert sorted(callouts(ax), key=int) == ["3", "4", "5", "6"]
    caption = " ".join(t.get_text() for t in fig.axes[2].texts)
    assert "cycle 420 (outside the window)" in caption
    title = fig.get_suptitle()
    assert "cycles 2,700–3,100" in title and "demo on vtd-incoherent" in title
    assert "seed 1" in title
    (ns,) = ax.child_axes
    assert ns.get_xlabel() == "ns (at 2 GHz)"


def test_no_fault_shows_the_race(kit):
    story = find_story(kit.race_trace(fault=False))
    assert story.headline.startswith("no fault; first lost cmpxchg race at cycle 600")
    texts = [e.text for e in story.events]
    assert texts[0].startswith(f"cpu1 cmpxchg at {kit.P:#x} wins")
    assert any(t.startswith("nic0's DMA completes after 566 cycles: translated") for t in texts)
    fig = timeline_figure(kit.race_trace(fault=False))
    assert markers(fig.axes[0], "*") == []


@pytest.mark.parametrize(("text", "expected"), [
    ("100:200", (100, 200)),
    ("1_000:2,000", (1000, 2000)),
    (":500", (None, 500)),
    ("500:", (500, None)),
])
def test_parse_window(text, expected):
    assert parse_window(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("100", "START:END"),
    ("a:b", "whole cycles"),
    ("200:100", "END must be after START"),
])
def test_bad_windows(text, message):
    with pytest.raises(InputError, match=message):
        parse_window(text)


def test_window_without_events(kit):
    with pytest.raises(InputError, match="no trace events between cycles 90,000 and 91,000"):
        timeline_figure(kit.race_trace(), window=(90_000, 91_000))


def test_dmas_in_flight_together_get_their_own_rows(kit):
    from iommusim.plots.timeline import _pack

    # three overlapping DMAs, then one after the first finished
    spans = [(0, 100, False), (10, 100, False), (20, 100, True), (105, 10, False)]
    assert _pack(spans) == [0, 1, 2, 0]
    trace = kit.race_trace()
    extra = [
        {"cycle": 2740, "component": "nic0", "event": "request", "index": 1, "iova": 0x2000,
         "size": 64, "is_write": False},
        {"cycle": 2900, "component": "nic0", "event": "complete", "index": 1, "outcome": "ok",
         "pa": 0x2000, "path": "iotlb", "reason": None, "level": None, "latency": 160},
    ]
    fig = timeline_figure(sorted(trace + extra, key=lambda r: r["cycle"]))
    ax = fig.axes[0]
    rows = set()
    for c in ax.collections:
        for path in c.get_paths():
            xs, ys = path.vertices[:, 0], path.vertices[:, 1]
            if round(float(xs.min())) in (2734, 2740) and 1.5 < ys.min() < 2.5:
                rows.add(round(float(ys.min() + ys.max()) / 2, 2))
    assert rows == {1.85, 2.15}  # two sub-rows of the nic0 lane
