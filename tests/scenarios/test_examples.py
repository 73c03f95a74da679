"""The documented complete examples (``examples/scenario.yaml``, ``examples/hardware.yaml``):
they validate, run as described, and use every key there is, so that the
documentation cannot fall behind the schema."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from iommusim.hwmodels.config import HardwareConfig
from iommusim.scenarios.schema import Scenario

EXAMPLES = Path(__file__).with_name("examples")


def models_and_fields(model: type[BaseModel], seen: set[str] | None = None) -> set[tuple]:
    """Every (model name, field name) reachable from ``model``."""
    seen = set() if seen is None else seen
    if model.__name__ in seen:
        return set()
    seen.add(model.__name__)
    out = set()
    for name, field in model.model_fields.items():
        out.add((model.__name__, name))
        for inner in _models_in(field.annotation):
            out |= models_and_fields(inner, seen)
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in getattr(annotation, "__args__", ()) + tuple(
        getattr(annotation, "__metadata__", ())
    ):
        found += _models_in(arg)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        found += _models_in(origin)
    return found


def fields_used(value: Any) -> set[tuple]:
    """Every (model name, field name) a validated example sets explicitly."""
    out = set()
    if isinstance(value, BaseModel):
        for name in value.model_fields_set:
            out.add((type(value).__name__, name))
            out |= fields_used(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            out |= fields_used(item)
    elif isinstance(value, dict):
        for item in value.values():
            out |= fields_used(item)
    return out


def test_scenario_example_uses_every_key():
    data = yaml.safe_load((EXAMPLES / "scenario.yaml").read_text())
    missing = models_and_fields(Scenario) - fields_used(Scenario.model_validate(data))
    assert not missing, sorted(missing)


def test_hardware_example_is_every_key_with_its_default():
    data = yaml.safe_load((EXAMPLES / "hardware.yaml").read_text())
    assert data == HardwareConfig().model_dump()


def test_examples_validate(cli):
    r = cli("validate", EXAMPLES / "scenario.yaml", EXAMPLES / "hardware.yaml")
    assert r.rc == 0, r.err


def test_scenario_example_runs_as_documented(cli, tmp_path, h):
    r = cli("run", EXAMPLES / "scenario.yaml", "--seeds", "2", "--jobs", "1", "--quiet",
            "--out", "out")
    assert r.rc == 0, r.out + r.err
    for point, entries in (("point-000", 16), ("point-001", 64)):
        doc = h.load_results(tmp_path / "out" / point)
        assert doc["hardware"]["iommu"]["iotlb"]["entries"] == entries
        for run in doc["runs"]:
            m = run["metrics"]
            assert m["sim.finished"] == 1
            assert m["cpu.map.count"] == 1 + 4 + 16            # map, repeat x4, random
            assert m["cpu.unmap.count"] == 1 + 16               # unmap, unmap_all
            assert m["cpu.read_and_clear_dirty.count"] == 1
            assert m["cpu.map.errors"] == m["cpu.unmap.errors"] == 0
            assert m["dma.requests"] == 2 + 200 + 16            # dma list, stream, follow
            assert m["table.leaked_pages"] == 0


def test_scenario_example_on_the_hardware_example(cli, tmp_path):
    """`hardware:` naming a file beside the scenario."""
    shutil.copy(EXAMPLES / "hardware.yaml", tmp_path / "my-hw.yaml")
    text = (EXAMPLES / "scenario.yaml").read_text()
    text = text.replace("hardware: vtd-incoherent ", "hardware: ./my-hw.yaml  ")
    assert "./my-hw.yaml" in text
    (tmp_path / "s.yaml").write_text(text)
    r = cli("run", tmp_path / "s.yaml", "--seed", "1", "--quiet", "--out", "out")
    assert r.rc == 0, r.out + r.err
    assert "readme-example on my-hw: 2 point(s) x 1 seed(s)" in r.out
