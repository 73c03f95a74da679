"""The two tiers of the suite.

Tests marked ``slow`` are the deeper versions of default tests (the race catalog over
200 seeds instead of 20; the kunit test_map_table_to_oa with the 64-bit kernel's
page-size limit). ``make test`` and plain ``pytest`` deselect them; ``-m slow`` (or any
``-m`` expression) or ``IOMMUSIM_SLOW=1`` selects them.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr or os.environ.get("IOMMUSIM_SLOW") == "1":
        return
    keep, slow = [], []
    for item in items:
        (slow if item.get_closest_marker("slow") else keep).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = keep
