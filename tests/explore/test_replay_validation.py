"""Replay files that are not what explore wrote (issue 13): a missing or mistyped field,
a choice index past the end of the list, a configuration that no longer validates --
each is exit 2 with a message naming the file, the line and the key path, never a
KeyError traceback or a silent "no failure"."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iommusim import cli as cli_module


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One replay file of the catalog's shared-level-flush race."""
    folder = tmp_path_factory.mktemp("explored")
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli_module.main(["explore", "shared-level-flush", "--out", str(folder / "ex"),
                              "--quiet"])
    assert rc == 1
    (path,) = (folder / "ex").glob("*.replay.json")
    return json.loads(path.read_text())


def mutated(doc: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    change(out)
    return out


CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "no-seed": (lambda d: d.pop("seed"), "seed", "missing required key 'seed'"),
    "seed-a-string": (lambda d: d.update(seed="1"), "seed",
                      "input should be a valid integer (got '1')"),
    "no-budget-field": (lambda d: d["exploration"]["budget"].pop("preemptions"),
                        "exploration.budget.preemptions", "missing required key"),
    "unknown-oracle": (lambda d: d["exploration"].update(oracles=["psychic"]),
                       "exploration.oracles[0]", "psychic"),
    "index-past-the-end": (lambda d: d["choices"]["deviations"][0].update(index=10**6),
                           "choices.deviations[0].index",
                           "choice 1000000 is past the end of the choice list"),
    "option-past-its-count": (lambda d: d["choices"]["list"].__setitem__(0, ["tie", 5, 2]),
                              "choices.list[0]", "option 5 of a choice with 2 options"),
    "deviation-of-another-kind": (
        lambda d: d["choices"]["deviations"][0].update(kind="evict"),
        "choices.deviations[0]", "does not fit choice"),
    "failure-without-list": (lambda d: d["failure"].pop("all"), "failure.all",
                             "missing required key 'all'"),
    "bad-config": (lambda d: d["config"]["scenario"]["cpus"][0].update(start=-5),
                   "config.scenario.cpus[0].start", "greater than or equal to 0"),
    "pa-beyond-the-table": (
        lambda d: d["config"]["scenario"]["cpus"][0]["ops"][0]["map"].update(pa=2**60),
        "config.scenario.cpus[0].ops[0].map.pa", "lies beyond the table's 52-bit"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_broken_replay_file_is_one_located_message(case, saved, cli, tmp_path):
    change, path, message = CASES[case]
    bad = tmp_path / "bad.replay.json"
    bad.write_text(json.dumps(mutated(saved, change), indent=1))
    res = cli("replay", bad)
    assert res.code == 2, res.out + res.err
    assert "Traceback" not in res.err and res.out == ""
    head, *problems = res.err.strip().splitlines()
    assert head.startswith("iommusim: 1 problem")
    assert len(problems) == 1, res.err
    where, _, rest = problems[0].strip().partition(": ")
    assert where.startswith(f"{bad}:") and where.split(":")[-1].isdigit()  # a line
    assert rest.startswith(f"{path}: ") and message in rest, problems[0]


def test_the_line_is_the_fields_line(saved, cli, tmp_path):
    bad = tmp_path / "bad.replay.json"
    text = json.dumps(mutated(saved, lambda d: d.update(seed="x")), indent=1)
    bad.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(' "seed"'))
    assert f"{bad}:{line}: seed: " in cli("replay", bad).err


@pytest.mark.parametrize("data,message", [
    (b"\xff\xfe{}", "is UTF-16 text"),
    (b'{"schema": "iommusim.replay/1",', "not JSON: Expecting"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON: nested too deeply"),
    (b"{}", "not a replay file"),
])
def test_not_a_replay_file(data, message, cli, tmp_path):
    (tmp_path / "x.replay.json").write_bytes(data)
    res = cli("replay", tmp_path / "x.replay.json")
    assert res.code == 2 and message in res.err and "Traceback" not in res.err


def test_the_saved_file_itself_replays(saved, cli, tmp_path):
    good = tmp_path / "good.replay.json"
    good.write_text(json.dumps(saved))
    assert cli("replay", good).code == 1  # the failure is reproduced
    assert not Path("good.trace.jsonl").exists()
