"""The pytest plugin (entry point ``pytest11``): scenarios with a ``regression:`` guard
under the ``iommusim_check`` paths become test items that run ``iommusim check``."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from iommusim.scenarios.resolve import catalog_dir

pytest_plugins = ["pytester"]

GNG = (catalog_dir() / "gather-no-gaps.yaml").read_text()
WRONG = GNG.replace("name: gather-no-gaps", "name: wrong-guard").replace(
    'symptom: {dma.stale_translations: "> 0"}', 'symptom: {dma.faults: "> 0"}')
PLAIN = GNG.split("regression:")[0].replace("name: gather-no-gaps", "name: plain")
INI = """\
[pytest]
iommusim_check = scenarios
iommusim_seeds = 1
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with its own scenarios beside its tests."""
    pytester.makeini(INI)
    pytester.makepyfile(test_unit="def test_ordinary():\n    assert True\n")
    folder = pytester.mkdir("scenarios")
    (folder / "good.yaml").write_text(GNG)
    (folder / "wrong.yaml").write_text(WRONG)
    (folder / "plain.yaml").write_text(PLAIN)  # no guard: not an item
    (folder / "notes.yml").write_text("just: [some, yaml]\n")
    return pytester


def test_guards_become_items(project):
    result = project.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["scenarios/good.yaml::gather-no-gaps",
                                 "scenarios/wrong.yaml::wrong-guard",
                                 "test_unit.py::test_ordinary"])
    assert "plain" not in result.stdout.str() and "notes" not in result.stdout.str()


def test_items_pass_and_fail_like_check(project):
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=j.xml", "-rf")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*iommusim check: wrong-guard: FAILED (fix gather_always_add_range) bug: dma.faults > 0 "
        "on 0/1 seeds (0%)*"])
    cases = {c.get("name"): c for c in ET.parse(project.path / "j.xml").getroot().iter("testcase")}
    assert cases["wrong-guard"].find("failure") is not None
    props = {p.get("name"): p.get("value") for p in cases["gather-no-gaps"].iter("property")}
    assert props["bug.symptomatic"] == "1" and props["fix.symptomatic"] == "0"


def test_marker_selects_the_guards(project):
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-m", "iommusim_check",
                               "--iommusim-seeds", "1", "-k", "gather")
    result.assert_outcomes(passed=1)


def test_inert_without_the_ini_option(pytester):
    (pytester.mkdir("scenarios") / "good.yaml").write_text(GNG)
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider",
                                           "scenarios")
    assert "good.yaml" not in result.stdout.str()


def test_bad_guard_fails_with_the_located_problem(project):
    bad = GNG.replace("min_rate: 90%", "min_rate: 150%")
    (project.path / "scenarios" / "good.yaml").write_text(bad)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "gather")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*iommusim check: bad input*",
                                 "*good.yaml:*: regression.min_rate: '150%' is out of range*"])
