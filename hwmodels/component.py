"""What every hardware block shares: a dotted name, a seeded random stream, statistics.

Blocks follow desmod's shape: each has a dotted ``name`` (``cpu0``, ``iommu.iotlb``),
its typed config node, and ``stats()``, a flat dict of numbers keyed relative to the
block. ``collect_stats`` prefixes them with the block names into one result dict.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Protocol


class Component(Protocol):
    name: str

    def stats(self) -> dict[str, float]: ...


def component_rng(seed: int, name: str) -> random.Random:
    """The random stream of one block: independent of every other block's draws.

    Seeding with a string is deterministic across processes (it hashes with SHA-512,
    not with Python's randomised ``hash``).
    """
    return random.Random(f"{seed}/{name}")


def collect_stats(components: Iterable[Component]) -> dict[str, float]:
    """One flat dict ``{"<block name>.<key>": value}`` over the given blocks."""
    return {
        f"{c.name}.{key}": value for c in components for key, value in c.stats().items()
    }


def merge_stats(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Two blocks' stats under one name (one scenario device modelled as several DMA
    engines): counts add, ``*_max`` keys take the larger."""
    out = dict(a)
    for key, value in b.items():
        if key.endswith("_max"):
            out[key] = max(out.get(key, value), value)
        else:
            out[key] = out.get(key, 0) + value
    return out
