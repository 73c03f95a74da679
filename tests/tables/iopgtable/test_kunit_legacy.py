"""The kunit IOMMU suite (kunit_iommu_pt.h) run on the code genpt replaced.

Every test body of tests/tables/test_kunit_iommu.py runs unchanged against each old
implementation through ``LegacyKunitPriv``: the old driver maps and unmaps (through the
iommu core of its era), and the suite's own checks -- check_iova, count_valids -- read
the old tables with the genpt decoder of the same hardware format. Where the old code's
semantics differ from what a test asserts, the test is skipped with the old behaviour
named (``SKIPS``); everything else must pass as it does for genpt, including the exit
checks (no table page left after teardown, no WARN).

The geometry is the old driver's default (conftest ``TWINS``), not each kunit cfg: the
old drivers had one geometry each.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

import tests.tables.test_kunit_iommu as suite
from iommusim.tables.iopgtable import implementation_for
from tests.tables.conftest import KunitPriv, kunit_iommu_exit
from tests.tables.iopgtable.conftest import LegacyView

_EADDRINUSE = "kunit expects -EADDRINUSE on a collision and a clean failure"

# (old implementation, kunit test) -> the old behaviour that makes the test inapplicable.
SKIPS: dict[tuple[str, str], str] = {
    ("amd-v1", "test_random_map"): (
        f"{_EADDRINUSE}; amd-v1 silently replaces the mapping (iommu_v1_map_pages / "
        "alloc_pte, free_clear_pte)"
    ),
    ("amd-v2", "test_random_map"): (
        f"{_EADDRINUSE}; amd-v2 silently replaces the mapping and frees what was in the "
        "way (iommu_v2_map_pages / v2_alloc_pte)"
    ),
    ("vtd", "test_random_map"): (
        f"{_EADDRINUSE}; vtd WARNs 'already set', keeps the old leaf and returns 0 "
        "(__domain_mapping)"
    ),
    ("arm-lpae", "test_random_map"): (
        f"{_EADDRINUSE}; arm-lpae WARNs and returns -EEXIST (arm_lpae_init_pte)"
    ),
    ("arm-lpae", "test_unmap_split"): (
        "kunit expects the whole large page unmapped; arm-lpae WARNs 'partial large "
        "IOPTE' and unmaps nothing (__arm_lpae_unmap, since 33729a5fc0ca)"
    ),
}


# The kernel-sized test_map_table_to_oa is 2^18 4K maps and unmaps (and every larger
# size) per table: 45 s to minutes with the old code's per-page walks. It runs in the
# slow tier; the default tier runs the same body with max_pgsize 2M.
SLOW = frozenset({"test_map_table_to_oa"})
SZ_4M = 1 << 22


class LegacyKunitPriv(KunitPriv):
    """struct kunit_iommu_priv around an old driver's table (``LegacyView``)."""

    def __init__(self, fmt: str, seed: str) -> None:
        # Not KunitPriv.__init__: that builds a genpt table from a kunit cfg.
        self.pt = LegacyView(fmt)
        self.common = self.pt.common
        self.fmt = self.common.fmt
        self.name = self.pt.implementation
        self.cfg = {}
        self.run = self.pt.executor.run
        self.rng = random.Random(seed)
        self.derive_values()


@pytest.fixture
def legacy_kunit_priv(request: pytest.FixtureRequest, legacy_fmt: str) -> Iterator[KunitPriv]:
    """pt_kunit_iommu_init / _exit around the old driver of ``legacy_fmt``."""
    impl = implementation_for(legacy_fmt)
    reason = SKIPS.get((impl, request.function.__name__))
    if reason:
        pytest.skip(f"{impl}: {reason}")
    priv = LegacyKunitPriv(legacy_fmt, seed=request.node.name)
    yield priv
    kunit_iommu_exit(priv)


def _legacy_case(name: str) -> Callable[..., None]:
    """A test running suite.<name>'s body on the old implementation, with its marks."""
    body = getattr(suite, name)

    def case(legacy_kunit_priv: KunitPriv) -> None:
        body(legacy_kunit_priv)

    case.__name__ = name
    case.__doc__ = body.__doc__
    marks = list(getattr(body, "pytestmark", []))
    if name in SLOW:
        marks.append(pytest.mark.slow)
    case.pytestmark = marks  # type: ignore[attr-defined]
    return case


KUNIT_TESTS = sorted(n for n in vars(suite) if n.startswith("test_"))
for _name in KUNIT_TESTS:
    globals()[_name] = _legacy_case(_name)


def test_map_table_to_oa_2m(legacy_kunit_priv: KunitPriv) -> None:
    """test_map_table_to_oa's body with max_pgsize 2M: 4K pages fill a 2M block,
    are unmapped (the table stays behind), and a 2M leaf must replace that table."""
    suite.map_table_to_oa(legacy_kunit_priv, SZ_4M)
