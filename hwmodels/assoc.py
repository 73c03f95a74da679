"""A set-associative array: the storage shared by the IOTLB and the walk cache.

The caller chooses the set (from its key) and the array chooses the way and the
victim. A lookup is one dictionary probe in one set; nothing scans a set except
``remove_where``, which invalidation uses when probing key by key would cost more.
Replacement: ``lru`` (least recently looked up or filled), ``rr`` (a round-robin
pointer per set, gem5's default) or ``random`` (a uniformly drawn way, seeded).
Free ways are always used before anything is evicted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Literal

Replacement = Literal["lru", "rr", "random"]


class AssocArray:
    """``sets`` x ``ways`` slots of key -> value (values must not be None)."""

    def __init__(
        self,
        sets: int,
        ways: int,
        replacement: Replacement = "lru",
        rng: random.Random | None = None,
    ) -> None:
        if replacement == "random" and rng is None:
            raise ValueError("random replacement needs a seeded random.Random")
        self.sets = sets
        self.ways = ways
        self._victim = REPLACEMENTS[replacement]
        self._lru = replacement == "lru"  # a use moves the key to the end of its set
        self._rng = rng
        # Per set: key -> way (in recency order under lru), way -> key, free ways.
        self._where: list[dict[Hashable, int]] = [{} for _ in range(sets)]
        self._keys: list[list[Hashable]] = [[None] * ways for _ in range(sets)]
        self._values: list[list[Any]] = [[None] * ways for _ in range(sets)]
        self._free: list[list[int]] = [list(range(ways - 1, -1, -1)) for _ in range(sets)]
        self._next: list[int] = [0] * sets
        self.size = 0

    def get(self, s: int, key: Hashable) -> Any:
        """The value stored under ``key`` in set ``s``, or None; a hit counts as a use."""
        where = self._where[s]
        way = where.get(key)
        if way is None:
            return None
        if self._lru:
            del where[key]
            where[key] = way
        return self._values[s][way]

    def peek(self, s: int, key: Hashable) -> Any:
        """The value under ``key`` in set ``s``, or None; not a use (recency unchanged)."""
        way = self._where[s].get(key)
        return None if way is None else self._values[s][way]

    def __contains__(self, item: tuple[int, Hashable]) -> bool:
        s, key = item
        return key in self._where[s]

    def put(self, s: int, key: Hashable, value: Any) -> Hashable | None:
        """Store ``key`` -> ``value`` in set ``s``; returns the evicted key, if any."""
        where = self._where[s]
        way = where.get(key)
        if way is not None:
            self._values[s][way] = value
            if self._lru:
                del where[key]
                where[key] = way
            return None
        free = self._free[s]
        victim = None
        if free:
            way = free.pop()
        else:
            victim = self._keys[s][self._victim(self, s)]
            way = where.pop(victim)
            self.size -= 1
        self._keys[s][way] = key
        self._values[s][way] = value
        where[key] = way
        self.size += 1
        return victim

    def remove(self, s: int, key: Hashable) -> bool:
        """Invalidate ``key`` in set ``s``; returns whether it was there."""
        way = self._where[s].pop(key, None)
        if way is None:
            return False
        self._keys[s][way] = None
        self._values[s][way] = None
        self._free[s].append(way)
        self.size -= 1
        return True

    def items(self) -> Iterator[tuple[int, Hashable, Any]]:
        """Every (set, key, value), set by set, in each set's key order."""
        for s, where in enumerate(self._where):
            values = self._values[s]
            for key, way in where.items():
                yield s, key, values[way]

    def remove_where(self, match: Callable[[Hashable], bool]) -> list[Hashable]:
        """Invalidate every key for which ``match(key)`` is true; returns them."""
        doomed = [(s, key) for s, key, _ in self.items() if match(key)]
        for s, key in doomed:
            self.remove(s, key)
        return [key for _, key in doomed]


# --- replacement policies (the way a full set gives up), chosen by name ------------------
def _least_recent(arr: AssocArray, s: int) -> int:
    where = arr._where[s]
    return where[next(iter(where))]


def _round_robin(arr: AssocArray, s: int) -> int:
    way = arr._next[s]
    arr._next[s] = (way + 1) % arr.ways
    return way


def _uniform(arr: AssocArray, s: int) -> int:
    assert arr._rng is not None
    return arr._rng.randrange(arr.ways)


REPLACEMENTS: dict[str, Callable[[AssocArray, int], int]] = {
    "lru": _least_recent,
    "rr": _round_robin,
    "random": _uniform,
}
