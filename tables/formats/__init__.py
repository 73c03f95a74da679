"""Page-table formats: one bit-layout module each, looked up by name."""

from __future__ import annotations

from ..compiled import search_path

__path__ = search_path(__path__, "formats")  # the compiled formats first (tables.compiled)

from . import amdv1, amdv1_mock, armv8, riscv64, vtdss, x86_64
from .base import EMPTY, ENTRY_TYPE_NAMES, OA, TABLE, Format

FORMATS: dict[str, Format] = {
    m.FORMAT.name: m.FORMAT for m in (amdv1, amdv1_mock, x86_64, vtdss, riscv64, armv8)
}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown page-table format {name!r}; valid formats: {', '.join(FORMATS)}"
        ) from None


__all__ = ["EMPTY", "ENTRY_TYPE_NAMES", "FORMATS", "OA", "TABLE", "Format", "get_format"]
