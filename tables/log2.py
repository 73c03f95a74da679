"""The kernel's log2 helpers (pt_log2.h) on unbounded Python ints masked to 64 bits.

Python shifts are defined for every count, so the kernel's "full VA" variants, which
special-case a shift of 64, come out of the plain definitions here.
"""

from __future__ import annotations

U64 = (1 << 64) - 1


def to_int(a_lg2: int) -> int:
    return 1 << a_lg2


def to_max_int(a_lg2: int) -> int:
    return (1 << a_lg2) - 1


def div(a: int, b_lg2: int) -> int:
    return a >> b_lg2


def div_eq(a: int, b: int, c_lg2: int) -> bool:
    return ((a ^ b) >> c_lg2) == 0


def mod(a: int, b_lg2: int) -> int:
    return a & ((1 << b_lg2) - 1)


def mod_eq_max(a: int, b_lg2: int) -> bool:
    m = (1 << b_lg2) - 1
    return a & m == m


def set_mod(a: int, val: int, b_lg2: int) -> int:
    return ((a & ~((1 << b_lg2) - 1)) | val) & U64


def set_mod_max(a: int, b_lg2: int) -> int:
    return (a | ((1 << b_lg2) - 1)) & U64


def fls(x: int) -> int:
    """1-based index of the most significant set bit; fls(0) == 0."""
    return x.bit_length()


def ffs(x: int) -> int:
    """0-based index of the least significant set bit (x must not be 0)."""
    return (x & -x).bit_length() - 1


def ffz(x: int) -> int:
    """0-based index of the least significant zero bit."""
    return ffs(~x)
