"""The catalog, and the commands around running: ``validate``, ``list``,
``show-config`` and ``schema``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from iommusim.experiment.metrics import concrete_names
from iommusim.hwmodels.config import HardwareConfig, IommuConfig
from iommusim.scenarios.resolve import catalog_dir, preset_dir, preset_names
from iommusim.scenarios.schema import Scenario
from tests.docs import code_blocks

CATALOG = sorted(catalog_dir().glob("*.yaml"))
PRESETS = sorted(preset_dir().glob("*.yaml"))
REQUIRED_PRESETS = {"vtd-incoherent", "vtd-coherent", "amd-v1", "smmuv3-noncoherent",
                    "riscv-iommu"}


# --- the catalog ---------------------------------------------------------------------
def test_catalog_is_not_empty():
    assert CATALOG
    assert set(preset_names()) >= REQUIRED_PRESETS


@pytest.mark.parametrize("path", CATALOG, ids=[p.stem for p in CATALOG])
def test_catalog_scenario_validates(path, cli):
    r = cli("validate", path)
    assert r.rc == 0, r.err
    assert r.out == f"{path}: valid scenario file\n"
    assert yaml.safe_load(path.read_text())["name"] == path.stem  # `list` and run by name


@pytest.mark.parametrize("path", CATALOG, ids=[p.stem for p in CATALOG])
def test_catalog_scenario_runs(path, cli, tmp_path, h):
    """One seed, by catalog name; an expectation over many seeds may fail on one."""
    r = cli("run", path.stem, "--seed", "1", "--jobs", "1", "--quiet", "--out", "out")
    assert r.rc in (0, 1), r.err
    assert r.err == ""
    doc = h.load_results(tmp_path / "out")
    assert doc["scenario"]["name"] == path.stem
    assert [run["seed"] for run in doc["runs"]] == [1]
    assert set(doc["runs"][0]["metrics"]) == set(concrete_names())


def slow_enabled(config: pytest.Config) -> bool:
    return "slow" in (config.option.markexpr or "") or os.environ.get("IOMMUSIM_SLOW") == "1"


@pytest.mark.slow
@pytest.mark.parametrize("path", CATALOG, ids=[p.stem for p in CATALOG])
def test_catalog_expectations_hold(path, cli, request):
    """Every seed the scenario asks for, and its expectations (``-m slow``)."""
    if not slow_enabled(request.config):
        pytest.skip("slow: run with -m slow or IOMMUSIM_SLOW=1")
    r = cli("run", path, "--quiet", "--out", "out")
    assert r.rc == 0, r.out


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_validates_and_cites_its_source(path, cli):
    r = cli("validate", path)
    assert (r.rc, r.out) == (0, f"{path}: valid hardware file\n"), r.err
    text = path.read_text()
    assert text.startswith("# ")
    assert "hardware.md" in text  # where the numbers come from


# --- validate ----------------------------------------------------------------------
def test_validate_a_mix_of_files(cli, scenario, tmp_path, h):
    good = scenario(h.BASE, name="good.yaml")
    bad = scenario(h.BASE.replace("size: 4K", "size: 5K"), name="bad.yaml")
    hw_good = tmp_path / "hw-good.yaml"
    hw_good.write_text("cpu: {count: 8}\n")
    hw_bad = tmp_path / "hw-bad.yaml"
    hw_bad.write_text("cpu: {count: 8}\niommu: {linc: 3}\n")
    r = cli("validate", good, bad, PRESETS[0], hw_bad, hw_good, CATALOG[0])
    assert r.rc == 2
    assert r.out.splitlines() == [
        f"{good}: valid scenario file",
        f"{PRESETS[0]}: valid hardware file",
        f"{hw_good}: valid hardware file",
        f"{CATALOG[0]}: valid scenario file",
    ]
    assert r.problems() == [
        f"{bad}:7: cpus[0].ops[0].map.size: 0x1400 is not aligned to the smallest page "
        "(0x1000)",
        f"{hw_bad}:2: iommu.linc: unknown key 'linc' (did you mean 'link'?); valid keys: "
        + ", ".join(sorted(IommuConfig.model_fields)),
    ]


def test_validate_the_same_problem_once(cli, tmp_path):
    """A broken hardware file named on the command line and by a scenario: once."""
    (tmp_path / "hw.yaml").write_text("cpu: {count: 0}\n")
    (tmp_path / "s.yaml").write_text("name: s\nhardware: hw.yaml\ntable: {format: vtdss}\n")
    r = cli("validate", tmp_path / "s.yaml", tmp_path / "hw.yaml")
    assert r.problems() == [f"{tmp_path / 'hw.yaml'}:1: cpu.count: input should be greater "
                            "than or equal to 1 (got 0)"]


def test_validate_runs_nothing(cli, scenario, tmp_path, h):
    r = cli("validate", scenario(h.BASE))
    assert r.rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenario.yaml"]


# --- list ----------------------------------------------------------------------------
def test_list(cli):
    r = cli("list")
    assert r.rc == 0
    lines = r.out.splitlines()
    assert lines[0] == "scenarios (scenarios/catalog):"
    split = lines.index("hardware presets (configs):")
    scenarios = [line.split()[0] for line in lines[1:split]]
    presets = [line.split()[0] for line in lines[split + 1:]]
    assert scenarios == [p.stem for p in CATALOG]
    assert presets == [p.stem for p in PRESETS]
    for line in lines[1:split] + lines[split + 1:]:
        assert line.startswith("  ") and len(line.split()) > 1  # a name and a summary
    assert "vtd-incoherent               Intel VT-d without page-walk coherency" in r.out
    for line in lines[1:split]:  # a real sentence for every scenario, not a bare label
        summary = line.split(None, 1)[1]
        assert len(summary.split()) >= 6 and summary.endswith("."), line


@pytest.mark.parametrize(("text", "first"), [
    ("Performance. Two CPUs map. More.", "Performance. Two CPUs map."),
    ("Two CPUs map e.g. a page. Then more.", "Two CPUs map e.g. a page."),
    ("Before 5815d930. every level flushed. Then", "Before 5815d930. every level flushed."),
    ("One line\n  over two lines. Next one.", "One line over two lines."),
    ("", ""),
])
def test_list_first_sentence(text, first):
    from iommusim.cli.list import first_sentence

    assert first_sentence(text) == first


def test_version(cli):
    from iommusim import __version__

    r = cli("--version")
    assert r.rc == 0 and r.out == f"iommusim {__version__}\n"


# --- show-config ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REQUIRED_PRESETS))
def test_show_config_preset_is_valid_hardware(name, cli, tmp_path):
    r = cli("show-config", name)
    assert r.rc == 0, r.err
    data = yaml.safe_load(r.out)
    assert set(data) == {"clock_ghz", "cpu", "cache", "dram", "iommu", "allocator"}
    assert all(isinstance(k, int) for k in data["iommu"]["walk_cache"]["entries"])
    # the printed configuration is a valid hardware file, equal to the preset
    (tmp_path / "copy.yaml").write_text(r.out)
    assert cli("validate", tmp_path / "copy.yaml").rc == 0
    again = cli("show-config", tmp_path / "copy.yaml")
    assert again.out == r.out


def test_show_config_keys_the_issue_names(cli):
    data = yaml.safe_load(cli("show-config", "vtd-incoherent").out)
    assert data["clock_ghz"] == 2.5
    cpu = data["cpu"]
    for key in ("count", "load_hit", "load_miss", "store", "cmpxchg_local", "cmpxchg_remote",
                "clflush_line", "clflushopt_extra_line", "mfence", "jitter"):
        assert isinstance(cpu[key], int), key
    assert set(cpu["interrupts"]) >= {"mean_interval", "duration"}
    assert set(data["cache"]) >= {"line_bytes", "eviction", "eviction_rate", "capacity_lines"}
    assert set(data["dram"]) >= {"read", "write"}
    iommu = data["iommu"]
    assert iommu["coherent_walk"] is False
    assert iommu["write_buffer"] == {"enabled": True, "drain": 1500, "flush_cost": 1500}
    assert set(iommu["iotlb"]) >= {"entries", "ways", "hit", "replacement", "negative_caching"}
    assert iommu["walk_cache"] == {"entries": {3: 4, 2: 8, 1: 32}, "probe": 10}
    assert {"walker_slots", "link", "invalidation"} <= set(iommu)
    assert set(iommu["invalidation"]) >= {"command", "wait"}
    coherent = yaml.safe_load(cli("show-config", "vtd-coherent").out)["iommu"]
    assert coherent["coherent_walk"] is True and coherent["write_buffer"]["enabled"] is False
    smmu = yaml.safe_load(cli("show-config", "smmuv3-noncoherent").out)["iommu"]
    assert smmu["coherent_walk"] is False and smmu["write_buffer"]["enabled"] is False


def test_show_config_preset_with_set(cli):
    r = cli("show-config", "amd-v1", "--set", "iommu.iotlb.entries=256",
            "--set", "iommu.walk_cache.entries.4=9")
    assert r.rc == 0, r.err
    iommu = yaml.safe_load(r.out)["iommu"]
    assert iommu["iotlb"]["entries"] == 256
    assert iommu["walk_cache"]["entries"][4] == 9
    r = cli("show-config", "amd-v1", "--set", "iommu.iotlb.entries=-2")
    assert r.rc == 2
    assert r.problems() == ["--set: iommu.iotlb.entries=-2: input should be greater than or "
                            "equal to 1 (got -2)"]


def test_show_config_scenario_file_and_catalog_name(cli, scenario):
    path = scenario("""\
        name: s
        hardware: smmuv3-noncoherent
        overrides: {iommu.link: 30}
        table: {format: x86_64, features: [dma_incoherent]}
        """)
    r = cli("show-config", path, "--set", "run.seeds=2", "--set", "cpu.count=2")
    assert r.rc == 0, r.err
    data = yaml.safe_load(r.out)
    assert set(data) == {"scenario", "hardware"}
    assert data["scenario"]["run"]["seeds"] == [1, 2]
    assert data["scenario"]["hardware"] == "smmuv3-noncoherent"
    assert data["hardware"]["iommu"]["link"] == 30
    assert data["hardware"]["cpu"]["count"] == 2
    assert data["hardware"]["iommu"]["walker_slots"] == 16  # the preset
    name = CATALOG[0].stem
    r = cli("show-config", name)
    assert r.rc == 0
    assert yaml.safe_load(r.out)["scenario"]["name"] == name


def test_show_config_misspelt_hardware_section(cli, tmp_path):
    """A hardware file with a misspelt section is reported as a hardware file."""
    path = tmp_path / "hw.yaml"
    path.write_text("cpuu: {count: 2}\niommu: {link: 3}\n")
    for command in ("show-config", "validate"):
        r = cli(command, path)
        assert r.rc == 2
        (problem,) = r.problems()
        assert problem.endswith(":1: cpuu: unknown key 'cpuu' (did you mean 'cpu'?); valid "
                                "keys: allocator, cache, clock_ghz, cpu, dram, iommu")


def test_show_config_unknown(cli):
    r = cli("show-config", "no-such-thing")
    assert r.rc == 2
    assert r.problems()[0].startswith("no-such-thing: no such file or catalog scenario")


# --- schema ------------------------------------------------------------------------------
def validate_json(schema: dict, value: Any) -> list[str]:
    """Errors of ``value`` against ``schema``, by the reference validator."""
    value = json.loads(json.dumps(value))  # YAML integer keys become strings, as in JSON
    validator = jsonschema.Draft202012Validator(schema)
    return [e.message for e in validator.iter_errors(value)]


JSON_SCHEMA_KEYWORDS = {
    "$schema", "$defs", "$ref", "title", "description", "default", "type", "properties",
    "additionalProperties", "required", "items", "anyOf", "enum", "const", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "pattern", "minItems",
    "maxItems",
    "minProperties",
}


def schema_keywords(schema: Any) -> set[str]:
    """The keywords a schema uses (property names and definition names excluded)."""
    found = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key in ("properties", "$defs"):
                for inner in value.values():
                    found |= schema_keywords(inner)
            elif key != "default":
                found |= schema_keywords(value)
    elif isinstance(schema, list):
        for inner in schema:
            found |= schema_keywords(inner)
    return found


@pytest.fixture
def schemas(cli) -> dict[str, dict]:
    out = {}
    for kind, args in (("scenario", ["schema"]), ("hardware", ["schema", "hardware"])):
        r = cli(*args)
        assert r.rc == 0
        out[kind] = json.loads(r.out)
    assert cli("schema", "scenario").out == json.dumps(out["scenario"], indent=2) + "\n"
    return out


def test_schema_is_json_schema(schemas):
    for kind, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        jsonschema.Draft202012Validator.check_schema(schema)
        # only JSON Schema keywords (editors ignore others, so their checks would be lost)
        assert schema_keywords(schema) <= JSON_SCHEMA_KEYWORDS, kind
        # every $ref resolves
        text = json.dumps(schema)
        for ref in set(re.findall(r'"\$ref": "#/\$defs/(\w+)"', text)):
            assert ref in schema["$defs"], (kind, ref)
    assert schemas["scenario"]["required"] == ["name", "table"]
    assert set(schemas["scenario"]["properties"]) == set(Scenario.model_fields)
    assert set(Scenario.model_fields) >= {
        "name", "description", "hardware", "overrides", "table", "kernel", "cpus", "devices",
        "run", "expect", "sweep"}
    assert set(schemas["hardware"]["properties"]) == set(HardwareConfig.model_fields)
    assert set(HardwareConfig.model_fields) >= {
        "clock_ghz", "cpu", "cache", "dram", "iommu", "allocator"}


EXAMPLE_DIR = Path(__file__).with_name("examples")
SCENARIO_FILES = [*CATALOG, EXAMPLE_DIR / "scenario.yaml"]
HARDWARE_FILES = [*PRESETS, EXAMPLE_DIR / "hardware.yaml"]


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
def test_catalog_scenario_matches_schema(path, schemas):
    assert validate_json(schemas["scenario"], yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", HARDWARE_FILES, ids=[p.stem for p in HARDWARE_FILES])
def test_preset_matches_schema(path, schemas):
    assert validate_json(schemas["hardware"], yaml.safe_load(path.read_text())) == []


def test_schema_catches_mistakes(schemas, h):
    """The checker is not vacuous: the mistakes editors should flag are flagged."""
    good = yaml.safe_load(h.BUSY)
    assert validate_json(schemas["scenario"], good) == []
    for path, value in (
        (("tabel",), {}),
        (("table", "format"), "vtds"),
        (("cpus", 0, "ops", 0, "map", "prto"), "rw"),
        (("cpus", 0, "ops", 0), {}),
        (("cpus", 0, "start"), -1),
        (("cpus", 0, "ops", 0, "map", "size"), "4Q"),
        (("cpus", 0, "ops", 0, "map", "size"), 0),
        (("cpus", 0, "ops", 3, "map_range_random", "sizes"), ["4K", -4096]),
        (("run", "seeds"), "3"),
        (("devices", 1, "stream", "pattern"), "zigzag"),
        (("expect",), {"dma.faults": {"condition": "> 0", "seed": "all"}}),
    ):
        bad = json.loads(json.dumps(good))
        node = bad
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        assert validate_json(schemas["scenario"], bad), path
    assert validate_json(schemas["hardware"], {"iommu": {"iotlb": {"entires": 3}}})


def test_schema_to_file(cli, tmp_path):
    r = cli("schema", "hardware", "-o", tmp_path / "hw.json")
    assert (r.rc, r.out) == (0, "")
    assert json.loads((tmp_path / "hw.json").read_text())["title"] == "HardwareConfig"


# --- README examples ---------------------------------------------------------------------
YAML_BLOCKS = code_blocks("yaml")
# The complete examples: a scenario has a `name:`, a hardware file a `clock_ghz:`.
EXAMPLES = [b for b in YAML_BLOCKS if re.search(r"^(name|clock_ghz):", b, flags=re.M)]


@pytest.mark.parametrize("text", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_yaml_example_validates(text, cli, tmp_path):
    """Every complete scenario or hardware example in README.md validates (a scenario
    whose `hardware:` names a file gets the README's hardware example there); one whose
    first line is `# invalid...` shows mistakes and must be rejected."""
    path = tmp_path / "example.yaml"
    path.write_text(text)
    hardware = [b for b in EXAMPLES if re.search(r"^clock_ghz:", b, flags=re.M)]
    ref = re.search(r"^hardware:\s*(\S+\.ya?ml)", text, flags=re.M)
    if ref and hardware:
        (tmp_path / ref[1]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / ref[1]).write_text(hardware[0])
    r = cli("validate", path)
    assert r.rc == (2 if text.startswith("# invalid") else 0), r.err
