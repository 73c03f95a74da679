"""The figure kinds of ``iommusim plot --kind``, by name (importable without matplotlib).

Each kind names the options that apply to it and its drawer, a function of
``plots.render`` that takes a ``render.Request``; ``render.build_figure`` checks the
options against this table and calls the drawer. A new figure is one entry here and
one drawer there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    options: frozenset[str]  # of: metric, x, share, window, seed, second (a 2nd RESULTS)
    drawer: str  # the function of plots.render that draws it


KINDS: dict[str, Kind] = {
    "latency": Kind(frozenset({"seed"}), "draw_latency"),
    "ops": Kind(frozenset({"seed"}), "draw_ops"),
    "flushes": Kind(frozenset({"seed", "second"}), "draw_flushes"),
    "timeline": Kind(frozenset({"window", "seed"}), "draw_timeline"),
    "sweep": Kind(frozenset({"metric", "x", "share"}), "draw_sweep"),
    "reach": Kind(frozenset({"x"}), "draw_reach"),
}


def accepting(option: str) -> list[str]:
    """The kinds an option applies to, in table order."""
    return [name for name, kind in KINDS.items() if option in kind.options]
