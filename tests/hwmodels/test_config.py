"""The allocator node added to the hardware config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from iommusim.hwmodels.config import AllocatorConfig, HardwareConfig
from iommusim.tables.memory import TABLE_REGION_BASE, TABLE_REGION_SIZE


def test_allocator_defaults():
    cfg = HardwareConfig().allocator
    assert (cfg.base, cfg.size, cfg.alloc, cfg.free) == (
        TABLE_REGION_BASE, TABLE_REGION_SIZE, 400, 200
    )
    assert (cfg.fail_nth, cfg.fail_probability) == (None, 0.0)


@pytest.mark.parametrize(
    "bad",
    [{"base": 0x1001}, {"size": 100}, {"fail_nth": 0}, {"fail_probability": 1.5},
     {"alloc": -1}, {"colour": "red"}],
)
def test_allocator_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        AllocatorConfig(**bad)


def test_allocator_region_is_used(rig):
    m = rig.machine(allocator={"base": 0x8000_0000, "size": 0x2000})
    assert [m.allocator.alloc(12) for _ in range(3)] == [0x8000_0000, 0x8000_1000, None]
    assert m.allocator.failures == 1
