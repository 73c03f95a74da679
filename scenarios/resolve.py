"""From files to a validated experiment: scenario + hardware preset + overrides.

Order of application: the preset file, the scenario's ``overrides:``, then each
``--set`` (and a sweep point's values). Keys that start with a hardware section
(``clock_ghz``, ``cpu``, ``cache``, ``dram``, ``iommu``) change the hardware, all others
the scenario. Everything is validated before anything runs, and every problem found
is reported together.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..hwmodels.config import HardwareConfig
from .checks import RunChecks, check_experiment
from .schema import Scenario
from .yamldoc import Loc, Override, YamlDoc, apply_override, parse_set, validate

HARDWARE_SECTIONS = frozenset(HardwareConfig.model_fields)


def preset_dir() -> Path:
    return Path(str(resources.files("iommusim.configs")))


def catalog_dir() -> Path:
    return Path(str(resources.files("iommusim.scenarios"))) / "catalog"


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def find_hardware(name: str, base: Path) -> Path:
    """A preset name, or a path (relative to the scenario's folder) to a hardware YAML."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        path = Path(name)
        return path if path.is_absolute() else base / path
    return preset_dir() / f"{name}.yaml"


def find_scenario(name: str) -> Path:
    """A path, or the name of a catalog scenario."""
    path = Path(name)
    if path.exists() or "/" in name or name.endswith((".yaml", ".yml")):
        return path
    path = catalog_dir() / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in catalog_dir().glob("*.yaml")))
        message = f"no such file or catalog scenario (catalog: {known or 'empty'})"
        raise InputError([Problem(name, None, "", message)])
    return path


def is_hardware_key(path: str) -> bool:
    return path.split(".", 1)[0] in HARDWARE_SECTIONS


@dataclass
class Experiment:
    """A validated scenario and hardware, and the data they were built from."""

    scenario: Scenario
    hardware: HardwareConfig
    scenario_data: dict[str, Any]
    hardware_data: dict[str, Any]
    source: str
    hardware_source: str
    settings: list[Override] = field(default_factory=list)

    def resolved(self, mode: str = "json") -> dict[str, Any]:
        """The configuration as run: for results.json (``mode="json"``) and, with
        ``mode="python"``, for YAML (config.resolved.yaml, show-config), where
        integer-keyed maps such as ``iommu.walk_cache.entries`` keep integer keys so
        that the output validates again as an input file."""
        return {
            "scenario": self.scenario.model_dump(mode=mode),
            "hardware": self.hardware.model_dump(mode=mode),
        }


def load_hardware(path: Path, overrides: Sequence[Override] = ()) -> tuple[HardwareConfig, dict]:
    """Read and validate a hardware YAML with overrides applied."""
    if not path.exists():
        names = ", ".join(preset_names())
        raise InputError(
            [Problem(str(path), None, "", f"no such hardware file; presets: {names}")]
        )
    doc = YamlDoc.read(path)
    data = copy.deepcopy(doc.data)
    origins: dict[Loc, Override] = {}
    problems: list[Problem] = []
    for ov in overrides:
        try:
            origins[apply_override(data, ov)] = ov
        except InputError as exc:
            problems += exc.problems
    try:
        hardware = validate(HardwareConfig, data, doc, origins)
    except InputError as exc:
        problems += exc.problems
    if problems:
        raise InputError(problems)
    return hardware, data


def load_experiment(
    path: Path, sets: Sequence[str | Override] = (), run: RunChecks | None = None
) -> Experiment:
    """Load a scenario file with ``--set`` overrides; raise InputError listing everything.
    ``run``: the experiment layer's checks (``experiment.load`` passes them)."""
    doc = YamlDoc.read(path)
    problems: list[Problem] = []
    settings: list[Override] = []
    for item in sets:
        try:
            settings.append(parse_set(item) if isinstance(item, str) else item)
        except InputError as exc:
            problems += exc.problems

    data = copy.deepcopy(doc.data)
    origins: dict[Loc, Override] = {}
    for ov in settings:
        if not is_hardware_key(ov.path):
            try:
                origins[apply_override(data, ov)] = ov
            except InputError as exc:
                problems += exc.problems

    scenario = None
    try:
        scenario = validate(Scenario, data, doc, origins)
    except InputError as exc:
        problems += exc.problems

    hardware = hw_data = None
    hw_name = data.get("hardware", Scenario.model_fields["hardware"].default)
    hw_path = find_hardware(str(hw_name), path.parent)
    hw_overrides = _scenario_overrides(doc, data, origins)
    hw_overrides += [s for s in settings if is_hardware_key(s.path)]
    try:
        hardware, hw_data = load_hardware(hw_path, hw_overrides)
    except InputError as exc:
        problems += _blame_hardware_name(exc.problems, doc, hw_path, origins.get(("hardware",)))

    if scenario is not None and hardware is not None:
        problems += check_experiment(scenario, hardware, doc, origins, run)
    if problems:
        raise InputError(problems)
    assert scenario is not None and hardware is not None and hw_data is not None
    return Experiment(scenario, hardware, data, hw_data, str(path), str(hw_path), settings)


def _scenario_overrides(
    doc: YamlDoc, data: dict[str, Any], origins: dict[Loc, Override]
) -> list[Override]:
    """The scenario's ``overrides:`` entries; one put there by ``--set`` keeps that origin."""
    raw = data.get("overrides") or {}
    if not isinstance(raw, dict):
        return []
    out = []
    for key, value in raw.items():
        origin = origins.get(("overrides", key))
        if origin is not None:
            out.append(Override(str(key), value, origin.source, origin.line, origin.shown))
        else:
            line = doc.key_line(("overrides", key))
            out.append(Override(str(key), value, doc.source, line, f"overrides.{key}"))
    return out


def _blame_hardware_name(
    problems: list[Problem], doc: YamlDoc, hw_path: Path, origin: Override | None
) -> list[Problem]:
    """A missing hardware file is the scenario's mistake: point at its `hardware:` key
    (or at the --set / sweep that named the file)."""
    out = []
    for p in problems:
        if p.source == str(hw_path) and p.line is None and "no such hardware" in p.message:
            if origin is not None:
                out.append(origin.problem(p.message))
            else:
                line = doc.line_of(("hardware",))
                out.append(Problem(doc.source, line, "hardware", p.message))
        else:
            out.append(p)
    return out


def is_hardware_file(path: Path) -> bool:
    """More hardware sections than scenario keys at the top (so that a hardware file
    with a misspelt section is still checked, and reported, as a hardware file)."""
    keys = set(YamlDoc.read(path).data)
    return len(keys & HARDWARE_SECTIONS) > len(keys & set(Scenario.model_fields))
