"""Sizes in binary units, the one parser and formatter: scenario files, sweeps and figures
all write sizes as ``4K``, ``2M``, ``1G`` (powers of 1024, an optional ``B``/``iB``)."""

from __future__ import annotations

import re

SIZE_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
SIZE_RE = re.compile(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", re.I)
# For editors (JSON Schema): an integer or a size string ("4K", "2MiB").
SIZE_PATTERN = r"^\s*[0-9]+\s*[KMGTkmgt]?([iI]?[bB])?\s*$"


def parse_size(text: str) -> int:
    """"4096", "4K", "2M", "1GiB" -> bytes; ValueError naming the accepted forms."""
    m = SIZE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a size; use an integer or 4K, 2M, 1G")
    return int(m[1]) << SIZE_UNITS[m[2].upper()]


def format_size(n: float) -> str:
    """The inverse of parse_size: 4096 -> "4K", 2**21 -> "2M", 3 * 2**20 + 4096 -> "3076K"."""
    n = int(n)
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def is_size_string(value: object) -> bool:
    """A string written with a unit ("64K"), as opposed to a plain number."""
    return isinstance(value, str) and value.strip()[-1:].upper() in "KMGT"
