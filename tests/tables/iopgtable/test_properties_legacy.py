"""The property tests of test_properties.py, run on the code genpt replaced.

The same hypothesis-driven sequences (maps of several page sizes per call, collisions,
unmaps inside, ending inside and over holes, lookups), the same reference model and the
same census of both memory views after every operation, on each old implementation
(``LegacyView``: census and lookups decode its tables with the genpt format of the same
hardware). The model speaks for genpt; ``LegacyModel`` leaves out, and counts, the
operations in a case the old implementation answers differently -- exactly the
``EXCLUDE`` entries of the named differences in conftest.py -- so everything else must
match the model as genpt does.

Configurations are the genpt ones whose geometry an old driver had. AMD v1/v2 run
coherent only: the AMD IOMMU snoops and the old AMD code never flushes, so an
incoherent AMD configuration has no old counterpart.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from iommusim.tables.iopgtable import IMPLEMENTATIONS, implementation_for
from tests.tables.iopgtable.conftest import (
    EXCLUDE,
    MAP_OVER_MAPPED,
    LegacyView,
    classify_unmap,
    differences,
    missing,
)
from tests.tables.test_properties import CONFIGS, Config, Model, _random_ops_test

LEGACY_CONFIGS = (
    "amdv1",
    "x86_64",
    "x86_64_5level",
    "vtdss",
    "vtdss_incoherent",
    "armv8",
    "armv8_incoherent",
)


class LegacyModel(Model):
    """The reference model, declining (None) what the old code answers otherwise."""

    def __init__(self, cfg: Config, pt: Any) -> None:
        super().__init__(cfg, pt)
        self.excluded = {
            case for case, d in differences(pt.implementation).items() if d.action == EXCLUDE
        }
        self.left_out: Counter[str] = Counter()

    def declines(self, case: str | None) -> bool:
        if case in self.excluded:
            self.left_out[case] += 1
            return True
        return False

    def map(self, va: int, pa: int, size: int) -> int | None:  # type: ignore[override]
        if self.declines(MAP_OVER_MAPPED if self.overlaps(va, size) else None):
            return None
        return super().map(va, pa, size)

    def unmap(self, va: int, size: int) -> int | None:  # type: ignore[override]
        if self.declines(classify_unmap(self.leaves, va, size)):
            return None
        return super().unmap(va, size)


def legacy_table(cfg: Config) -> LegacyView:
    return LegacyView(cfg.fmt, **cfg.kwargs)


def _legacy_test(n: int, cfg: Config) -> Any:
    test = _random_ops_test(cfg, 2000 + n, make_table=legacy_table, model_cls=LegacyModel)
    impl = implementation_for(cfg.fmt)
    test.__name__ = f"test_random_ops_match_model_{impl.replace('-', '_')}_{cfg.name}"
    test.__doc__ = (
        f"{impl} ({cfg.name}): the genpt property sequences keep the old table equal to "
        "the model in both views, apart from the named differences; teardown frees "
        "every page."
    )
    reason = missing(cfg.fmt)
    return pytest.mark.skip(reason=reason)(test) if reason else test


for _n, _cfg in enumerate(c for c in CONFIGS if c.name in LEGACY_CONFIGS):
    assert _cfg.fmt in IMPLEMENTATIONS
    _test = _legacy_test(_n, _cfg)
    globals()[_test.__name__] = _test
