"""PagedWords, the memory views' word store, behaves as the ``{pa: value}`` dictionary
it replaced (zero words never stored), whole-line and whole-range operations included."""

from __future__ import annotations

import random

import pytest

from iommusim.tables.memory import PAGE_SIZE, PagedWords


def set_word(d: dict[int, int], pa: int, value: int) -> None:
    if value:
        d[pa] = value
    else:
        d.pop(pa, None)


@pytest.mark.parametrize("seed", range(40))
def test_random_operations_match_a_dictionary(seed: int) -> None:
    rng = random.Random(seed)
    d: dict[int, int] = {}
    p = PagedWords()
    for _ in range(300):
        op = rng.random()
        base = rng.choice([0, 0x1000, 0x2000, 0x40_0000_0000])
        pa = base + rng.randrange(0, 8192) * rng.choice([8, 8, 8, 1])  # some unaligned
        value = rng.choice([0, 1, 0x6B6B6B6B6B6B6B6B, rng.getrandbits(64)])
        if op < 0.4:
            set_word(d, pa, value)
            p[pa] = value
        elif op < 0.5:
            assert p.pop(pa, None) == d.pop(pa, None)
        elif op < 0.6:
            n = rng.choice([8, 24, 64, 100, PAGE_SIZE, 2 * PAGE_SIZE])
            for a in range(pa, pa + n, 8):
                set_word(d, a, value)
            p.fill(pa, n, value)
        elif op < 0.7:
            n = rng.choice([32, 64, 128])
            words = [rng.choice([0, 5, 7]) for _ in range(n // 8)]
            for a, w in zip(range(pa, pa + n, 8), words, strict=True):
                set_word(d, a, w)
            p.put_line(pa, words)
            assert p.line(pa, n) == words
        elif op < 0.8:
            n = rng.choice([32, 64])
            source = PagedWords({pa + 8 * i: i for i in range(n // 8) if rng.random() < 0.5})
            for a in range(pa, pa + n, 8):
                set_word(d, a, source.get(a, 0))
            p.copy_line(source, pa, n)
        else:
            assert p.get(pa, 0) == d.get(pa, 0)
            assert p.get(pa) == d.get(pa)
            assert (pa in p) == (pa in d)
    assert dict(p) == d
    assert dict(p.items()) == d
    assert len(p) == len(d)
    assert bool(p) == bool(d)
    assert p == d
    assert p == PagedWords(d) and PagedWords(d) == p
    assert p.copy() == p
    if d:
        changed = p.copy()
        changed[next(iter(d))] = 0
        assert changed != p


def test_zero_words_are_absent() -> None:
    p = PagedWords()
    p[0x1008] = 5
    assert p[0x1008] == 5 and 0x1008 in p
    p[0x1008] = 0
    assert 0x1008 not in p and p.get(0x1008) is None and p.get(0x1008, 0) == 0
    with pytest.raises(KeyError):
        p[0x1008]
    with pytest.raises(KeyError):
        p.pop(0x1008)
    assert p == PagedWords() and not p


def test_an_all_zero_page_equals_no_page_and_a_zeroed_page_is_dropped() -> None:
    a, b = PagedWords(), PagedWords()
    a[0x2000] = 1
    a[0x2000] = 0  # the page array stays, all zero
    assert a == b and b == a
    a.fill(0x2000, PAGE_SIZE, 0)
    assert not a.pages
