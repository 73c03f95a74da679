"""PT_FEAT_* feature bits and their user-facing names.

Names are the kernel's identifiers in lower case without the ``PT_FEAT_`` prefix.
Bits from ``FMT_START`` on are private to a format, so the same bit number has a
different name in each format (``Format.private_features``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DMA_INCOHERENT = 0
FULL_VA = 1
DYNAMIC_TOP = 2
SIGN_EXTEND = 3
FLUSH_RANGE = 4
FLUSH_RANGE_NO_GAPS = 5
FMT_START = 6

GENERIC_FEATURES: dict[str, int] = {
    "dma_incoherent": DMA_INCOHERENT,
    "full_va": FULL_VA,
    "dynamic_top": DYNAMIC_TOP,
    "sign_extend": SIGN_EXTEND,
    "flush_range": FLUSH_RANGE,
    "flush_range_no_gaps": FLUSH_RANGE_NO_GAPS,
}

ALL_BITS = (1 << 32) - 1


def bit(n: int) -> int:
    return 1 << n


def feature_mask(names: Iterable[str], private: Mapping[str, int]) -> int:
    """Turn feature names into a bitmap; unknown names are an error listing valid ones."""
    known = {**GENERIC_FEATURES, **private}
    mask = 0
    for name in names:
        if name not in known:
            raise ValueError(
                f"unknown feature {name!r}; valid features: {', '.join(sorted(known))}"
            )
        mask |= 1 << known[name]
    return mask


def feature_names(mask: int, private: Mapping[str, int]) -> list[str]:
    by_bit = {b: n for n, b in {**GENERIC_FEATURES, **private}.items()}
    return [by_bit.get(b, f"bit{b}") for b in range(32) if mask >> b & 1]
