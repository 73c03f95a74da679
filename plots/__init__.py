"""Figures drawn from results files and traces (never from simulator objects).

Every figure function takes parsed data (from the loaders, or built by hand) and
returns a matplotlib ``Figure`` that a notebook can restyle before saving::

    from iommusim.plots import load_results, dma_latency_figure, save_figure
    fig = dma_latency_figure(load_results("results/shared-level-flush"))
    save_figure(fig, "latency.svg")
"""

from .data import load_results, load_sweep, load_trace, trace_files
from .flushes import flush_figure, flush_table
from .latency import dma_latency_figure
from .ops import op_cost_figure
from .reach import reach_figure
from .render import KINDS, build_figure, plot_command, save_figure, standard_figures
from .story import find_story
from .sweep import sweep_figure
from .timeline import parse_window, timeline_figure

__all__ = [
    "KINDS",
    "build_figure",
    "dma_latency_figure",
    "find_story",
    "flush_figure",
    "flush_table",
    "load_results",
    "load_sweep",
    "load_trace",
    "op_cost_figure",
    "parse_window",
    "plot_command",
    "reach_figure",
    "save_figure",
    "standard_figures",
    "sweep_figure",
    "timeline_figure",
    "trace_files",
]
