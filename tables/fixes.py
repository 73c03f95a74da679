"""Fix switches: every historical bug of the page-table code behind a named switch.

Each switch defaults to on (fixed). Turning one off runs the historical code path
(generic_pt.md section 8), not an imitation of its symptom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

# switch name -> what the code does with the fix off
FIX_DESCRIPTIONS: dict[str, str] = {
    "flush_done_sw_bit": "a mapper that finds a table pointer installed by another CPU does "
    "not flush it (no SW_BIT_CACHE_FLUSH_DONE protocol; only the installer flushes)",
    "increase_top": "increase_top before 152c862c: a top built from stale state can be "
    "published; a failed allocation mid-growth leaks the pages already allocated",
    "table_alloc_error": "_table_alloc before 7a089c5d: a failed allocation returns NULL, "
    "which is installed as a table at physical address 0",
    "unmap_flush_changed_only": "unmap before 5815d930: every visited item at every level "
    "is flushed",
    "gather_always_add_range": "gather_range_pages before b48ca920: a NO_GAPS-only gather "
    "never records its range",
    "gather_unmapped_length": "unmap gathers the requested length instead of the bytes "
    "actually unmapped (short gather when the unmap ends inside a large page)",
    "vtd_top_level": "before d856f9d2 / 1eb0ae6f: vtdss and x86_64 choose the table depth "
    "from the address width alone",
    "cache_flush": "before efa03dab: no CPU cache maintenance at all",
    "free_after_sync": "tables removed by unmap are freed at once instead of after the "
    "IOTLB / walk-cache invalidation",
    "dirty_clear_flush": "read_and_clear_dirty clears dirty bits without the IOTLB flush "
    "its caller owes",
    "amdv1_seqcount": "io-pgtable AMD v1 only (genpt packs top and level in one word): "
    "before the 2025 seqcount fix (CVE-2025-39961) alloc_pte / fetch_pte read the root "
    "and mode words without the seqcount, so a walk racing increase_address_space can "
    "pair the new root with the old mode",
}

# Switches of the genpt code, and those that apply only to the io-pgtable drivers it
# replaced (tables.iopgtable): a genpt table ignores the latter.
GENPT_FIXES: tuple[str, ...] = (
    "flush_done_sw_bit",
    "increase_top",
    "table_alloc_error",
    "unmap_flush_changed_only",
    "gather_always_add_range",
    "gather_unmapped_length",
    "vtd_top_level",
    "cache_flush",
    "free_after_sync",
    "dirty_clear_flush",
)
IOPGTABLE_FIXES: tuple[str, ...] = ("amdv1_seqcount",)


@dataclass(frozen=True, slots=True)
class Fixes:
    flush_done_sw_bit: bool = True
    increase_top: bool = True
    table_alloc_error: bool = True
    unmap_flush_changed_only: bool = True
    gather_always_add_range: bool = True
    gather_unmapped_length: bool = True
    vtd_top_level: bool = True
    cache_flush: bool = True
    free_after_sync: bool = True
    dirty_clear_flush: bool = True
    amdv1_seqcount: bool = True

    @classmethod
    def from_mapping(cls, switches: Mapping[str, bool] | None) -> Fixes:
        """Build from ``{name: bool}``; unknown names are an error listing valid ones."""
        if switches is None:
            return cls()
        if isinstance(switches, Fixes):
            return switches
        valid = [f.name for f in fields(cls)]
        for name, value in switches.items():
            if name not in valid:
                raise ValueError(f"unknown fix switch {name!r}; valid switches: {', '.join(valid)}")
            if not isinstance(value, bool):
                raise ValueError(f"fix switch {name!r} must be true or false, not {value!r}")
        return cls(**dict(switches))

    def as_dict(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
