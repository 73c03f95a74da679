"""``iommusim check``: regression guards run with the bug and with the fix, one line per
scenario, exit 0 only if all hold, a JUnit report, located errors for bad guards."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from iommusim.scenarios.resolve import catalog_dir
from tests.docs import code_blocks

CATALOG = sorted(catalog_dir().glob("*.yaml"))
GNG = (catalog_dir() / "gather-no-gaps.yaml").read_text()  # fast: ~0.1 s a seed
GUARD = """regression:                     # what `iommusim check` verifies
  fix: gather_always_add_range
  symptom: {dma.stale_translations: "> 0"}
  min_rate: 90%
"""
assert GUARD in GNG


def gng(scenario, guard: str | None = GUARD, name: str = "gng.yaml", **replace: str) -> Path:
    """gather-no-gaps with another guard (None: without one)."""
    text = GNG.replace(GUARD, guard or "")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return scenario(text, name)


def test_a_guard_that_holds(cli, scenario):
    r = cli("check", gng(scenario), "--seeds", "2", "--jobs", "1")
    assert r.rc == 0, r.out + r.err
    assert r.out.splitlines() == [
        "gather-no-gaps: ok (fix gather_always_add_range) bug: dma.stale_translations > 0 "
        "on 2/2 seeds (100%), needs 90%; fix: symptom on 0/2",
        "check: 1 ok, 0 failed",
    ]


def test_a_wrong_guard_fails_and_is_named(cli, scenario):
    # With the bug the late DMAs translate through stale entries (no fault); with the
    # fix they fault: a guard on dma.faults fails on both sides.
    path = gng(scenario, GUARD.replace("dma.stale_translations", "dma.faults"))
    r = cli("check", path, "--seeds", "2", "--jobs", "1")
    assert r.rc == 1, r.out + r.err
    first, summary = r.out.splitlines()
    assert first.startswith("gather-no-gaps: FAILED (fix gather_always_add_range) bug: "
                            "dma.faults > 0 on 0/2 seeds (0%), needs 90%; fix: symptom on 2/2")
    assert "with the bug dma.faults > 0 holds on 0/2 seeds, fewer than 90% (2)" in first
    assert "with the fix the symptom shows on 2/2 seeds: 1, 2" in first
    assert summary == "check: 0 ok, 1 failed; failed: gather-no-gaps"


def test_rate_needed_is_rounded_up(cli, scenario):
    """min_rate 50% of 3 seeds needs 2; a symptom on every seed passes any rate."""
    path = gng(scenario, GUARD.replace("90%", "100%"))
    r = cli("check", path, "--seeds", "3", "--jobs", "1")
    assert r.rc == 0 and "on 3/3 seeds (100%), needs 100%" in r.out


def test_set_form_names_any_key(cli, scenario):
    guard = GUARD.replace("fix: gather_always_add_range",
                          "set: {kernel.fixes.gather_always_add_range: [false, true]}")
    r = cli("check", gng(scenario, guard), "--seeds", "1", "--jobs", "1")
    assert r.rc == 0, r.out + r.err
    assert r.out.startswith("gather-no-gaps: ok (kernel.fixes.gather_always_add_range: "
                            "False -> True) bug:")


def test_several_symptoms_each_need_the_rate(cli, scenario):
    guard = GUARD.replace('{dma.stale_translations: "> 0"}',
                          '{dma.stale_translations: "> 0", dma.faults: "> 0"}')
    r = cli("check", gng(scenario, guard), "--seeds", "1", "--jobs", "1")
    assert r.rc == 1
    assert ("bug: dma.stale_translations > 0 on 1/1 seeds (100%), dma.faults > 0 on 0/1 "
            "seeds (0%), needs 90%; fix: symptom on 1/1") in r.out


def test_no_guard_is_said_not_passed(cli, scenario, h):
    alone = scenario(h.BASE, "base.yaml")
    r = cli("check", alone)
    assert r.rc == 2
    assert r.out.splitlines() == [
        "base: no guard -- the scenario has no regression: block, nothing was checked"]
    assert r.problems() == [f"{alone}: no regression: block, so nothing to check "
                            "(see docs/checks.md: Regression checks)"]


def test_directory_and_junit(cli, scenario, h, tmp_path):
    gng(scenario, name="suite/good.yaml")
    gng(scenario, GUARD.replace("dma.stale_translations", "dma.faults"), "suite/bad.yaml",
        **{"name: gather-no-gaps": "name: wrong-guard"})
    scenario(h.BASE, "suite/sub/unguarded.yaml")
    scenario("clock_ghz: 2.0\n", "suite/hw.yaml")  # a hardware file: not a scenario
    r = cli("check", tmp_path / "suite", "--seeds", "1", "--jobs", "1", "--junit", "j.xml")
    assert r.rc == 1, r.out + r.err
    lines = r.out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["wrong-guard", "gather-no-gaps",
                                                         "base"]
    assert lines[3] == ("check: 1 ok, 1 failed, 1 without a guard (not checked); "
                        "failed: wrong-guard")
    assert lines[4] == "junit: j.xml"
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.tag == "testsuites"
    (suite,) = root
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"wrong-guard", "gather-no-gaps", "base"}
    assert cases["wrong-guard"].find("failure") is not None
    assert cases["base"].find("skipped") is not None
    good = cases["gather-no-gaps"]
    assert good.find("failure") is None and good.find("skipped") is None
    props = {p.get("name"): p.get("value") for p in good.iter("property")}
    assert props["bug.symptomatic"] == "1" and props["fix.symptomatic"] == "0"
    assert props["switch"] == "fix gather_always_add_range"


BAD_GUARDS = {
    "unknown-fix": (GUARD.replace("fix: gather_always_add_range", "fix: gather_always_add"),
                    "regression.fix", "did you mean 'gather_always_add_range'?"),
    "bad-condition": (GUARD.replace('"> 0"', '">> 0"'),
                      "regression.symptom.dma.stale_translations", "is not a condition"),
    "unknown-metric": (GUARD.replace("dma.stale_translations", "dma.stale_translation"),
                       "regression.symptom.dma.stale_translation",
                       "did you mean 'dma.stale_translations'?"),
    "rate-out-of-range": (GUARD.replace("90%", "150%"), "regression.min_rate",
                          "'150%' is out of range"),
    "rate-zero": (GUARD.replace("90%", "0%"), "regression.min_rate", "is out of range"),
    "rate-not-a-rate": (GUARD.replace("90%", "most"), "regression.min_rate",
                        "'most' is not a rate"),
    "no-switch": (GUARD.replace("  fix: gather_always_add_range\n", ""), "regression",
                  "needs exactly one of fix"),
    "set-value": (GUARD.replace("fix: gather_always_add_range",
                                "set: {kernel.fixes.gather_always_add_range: [false, maybe]}"),
                  "regression.set.kernel.fixes.gather_always_add_range",
                  "input should be a valid boolean"),
    "set-not-a-pair": (GUARD.replace("fix: gather_always_add_range",
                                     "set: {kernel.fixes.gather_always_add_range: [false]}"),
                       "regression.set.kernel.fixes.gather_always_add_range", "at least 2"),
}


@pytest.mark.parametrize("case", BAD_GUARDS)
def test_bad_guard_is_one_located_problem(cli, scenario, case):
    guard, key, fragment = BAD_GUARDS[case]
    path = gng(scenario, guard)
    line = GNG.splitlines().index("regression:                     # what `iommusim check` "
                                  "verifies") + 1
    for command in (("check", path), ("validate", path)):
        r = cli(*command)
        assert r.rc == 2, (command, r.out, r.err)
        (problem,) = r.problems()
        where, path_shown, message = problem.split(": ", 2)
        assert where.startswith(f"{path}:")
        assert line <= int(where.rsplit(":", 1)[1]) <= line + 4, problem
        assert path_shown == key and fragment.lower() in message.lower(), problem


def test_guard_switch_cannot_be_swept_for_check_only(cli, scenario):
    """check cannot run a guard whose switch a sweep overrides; run and validate can
    (the README sweeps a catalog race over its fix)."""
    path = gng(scenario, GUARD + "sweep: {kernel.fixes.gather_always_add_range: [false, true]}\n")
    r = cli("check", path)
    assert r.rc == 2
    line = GNG.count("\n", 0, GNG.index("  fix: gather_always_add_range")) + 1
    assert r.problems() == [f"{path}:{line}: regression.fix: kernel.fixes."
                            "gather_always_add_range is also swept; a guard's switch cannot "
                            "be a sweep key"]
    assert cli("validate", path).rc == 0
    r = cli("run", "gather-no-gaps", "--seeds", "1", "--jobs", "1", "--quiet", "--out", "o",
            "--set", "sweep.kernel.fixes.gather_always_add_range=[false, true]")
    assert r.rc == 1 and "2 point(s) x 1 seed(s)" in r.out  # the fixed point fails expect


def test_usage_mistakes(cli, tmp_path):
    assert cli("check").rc == 2
    r = cli("check", "--catalog", "--junit", tmp_path / "nowhere" / "j.xml")
    assert r.rc == 2 and "no such directory" in r.err
    r = cli("check", "no-such-scenario")
    assert r.rc == 2 and "no such file or catalog scenario" in r.err


def test_every_catalog_scenario_declares_its_guard():
    for path in CATALOG:
        data = yaml.safe_load(path.read_text())
        guard = data.get("regression")
        assert guard, f"{path.name} has no regression: guard"
        fixes = data.get("kernel", {}).get("fixes", {})
        if "fix" in guard:  # the file runs the bug, as its expect: says
            assert fixes.get(guard["fix"]) is False, path.name
        explore_fix = (data.get("explore") or {}).get("fix")
        assert explore_fix in (None, guard.get("fix")), path.name


def _check_catalog(cli, tmp_path: Path, *seeds: str) -> list[str]:
    """``check --catalog``: a line and a JUnit testcase per scenario, in catalog order."""
    r = cli("check", "--catalog", *seeds, "--jobs", "2", "--junit", tmp_path / "c.xml")
    assert r.rc in (0, 1), r.out + r.err
    names = [p.stem for p in CATALOG]
    lines = r.out.splitlines()[:-2]
    assert [line.split(": ")[0] for line in lines] == names
    cases = [c.get("name") for c in ET.parse(tmp_path / "c.xml").getroot().iter("testcase")]
    assert cases == names
    return lines if r.rc == 0 else [*lines, r.out]


def test_catalog_guards_hold_fast(cli, tmp_path):
    """Three seeds a side: every fix removes its symptom, and every bug shows each of
    its symptoms at least once. Whether the rates reach min_rate is for the slow tier:
    three seeds of a race that reproduces on half of them prove nothing either way."""
    for line in _check_catalog(cli, tmp_path, "--seeds", "3")[:len(CATALOG)]:
        assert line.endswith("fix: symptom on 0/3") or "fix: symptom on 0/3 -- " in line, line
        bug = line.split(") bug: ")[1].split(", needs ")[0]
        assert " on 0/3 seeds" not in bug, line


@pytest.mark.slow
def test_catalog_guards_hold(cli, tmp_path):
    """The seeds each file names (20), as CI would run it: every guard holds."""
    lines = _check_catalog(cli, tmp_path)
    assert len(lines) == len(CATALOG), lines[-1]
    assert all(": ok (" in line for line in lines)




def readme_yaml(first_line: str) -> str:
    """The README's YAML block that starts with ``first_line``."""

    for block in code_blocks("yaml"):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"no YAML block starting {first_line!r} in the README")


def test_readme_race_recipe_is_valid(cli, scenario):
    r = cli("validate", scenario(readme_yaml("name: my-2m-race"), "my-race.yaml"))
    assert r.rc == 0, r.err


@pytest.mark.slow
def test_readme_race_recipe_guard_holds(cli, scenario):
    r = cli("check", scenario(readme_yaml("name: my-2m-race"), "my-race.yaml"), "--jobs", "2")
    assert r.rc == 0, r.out
    assert "my-2m-race: ok (fix flush_done_sw_bit) bug: dma.faults > 0 on 10/20" in r.out


def test_guard_on_the_table_implementation(cli, scenario):
    """The documented set: form for the io-pgtable races: old code is the bug side."""
    guard = GUARD.replace("fix: gather_always_add_range",
                          "set: {table.implementation: [io-pgtable, genpt]}")
    text = (catalog_dir() / "short-gather.yaml").read_text().replace(
        GUARD.replace("gather_always_add_range", "gather_unmapped_length"), guard)
    assert "table.implementation" in text
    path = scenario(text, "impl.yaml")
    assert cli("validate", path).rc == 0
    r = cli("check", path, "--seeds", "1", "--jobs", "1")
    assert r.out.startswith("short-gather: ")
    assert "(table.implementation: io-pgtable -> genpt) bug: " in r.out
