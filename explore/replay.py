"""Replay files: one failure the explorer found, reproducible exactly.

A replay file is JSON (``<scenario>.<check>.replay.json``) with schema
``iommusim.replay/1``:

``scenario``
    ``path`` of the scenario file, ``sha256`` of its content when explored, ``name``.
``sets``
    every override applied on top of the file, in order: the ``explore:`` sets, the
    command line's ``--set``, and those that turned interrupts and jitter off.
``config``
    the resolved configuration as run (``scenario``, ``hardware``): what replay runs,
    so a replay needs neither the scenario file nor the presets.
``seed``
    the simulation seed.
``exploration``
    ``strategy``, ``strategy_seed``, ``run`` (the failing run's number), ``bound``,
    ``depth``, the per-run ``budget`` (``preemptions``, ``preempt_cycles``,
    ``evictions``, ``ops`` and transaction ``kinds`` whose boundaries are choice
    points, ``ties`` mode),
    ``max_steps``, ``expect_mode``, ``oracles``, ``require_finish``.
``choices``
    the **shrunk** choice list: ``deviations`` (the non-default choices: ``index`` in
    the list, ``kind``, ``option``, ``n`` options, ``cycle``, and ``what`` in words),
    ``list`` (every choice point of the run, ``[kind, option, n]``), and the
    deviations of the run as found, before shrinking (``found``).
``failure``
    the first failed check (``check``, ``message``, ``cycle``) and ``all`` of them.
``faults``
    the IOMMU faults of the run (cycle, device, domain, iova, access, reason, level).
``metrics``
    the run's metrics.
``trace``
    the run's event trace, one record per event (``cycle``, ``component``,
    ``event`` and its fields), as in ``trace-<seed>.jsonl``.

``iommusim replay FILE`` rebuilds the experiment from ``config``, forces the listed
deviations, checks at every choice point that the run offers the same choice as the
list (else it reports where it diverged), and compares the failures and faults.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from .. import __version__
from ..errors import InputError, Problem
from ..experiment import results
from ..experiment.load import RUN_CHECKS
from ..experiment.oracles import EXPECT_MODES, ORACLES, Failure
from ..hwmodels.config import HardwareConfig
from ..scenarios.checks import check_experiment
from ..scenarios.resolve import Experiment, is_hardware_key
from ..scenarios.schema import Scenario
from ..scenarios.yamldoc import JsonDoc, Loc, Override, apply_override, parse_set, validate
from .control import Budget
from .search import Outcome, Setup, run_one
from .setup import Resolved
from .strategies import RunSpec

SCHEMA = "iommusim.replay/1"


def sha256_of(path: Path) -> str | None:
    """The file's hash; None if it is not a regular file (gone, a FIFO, a bad name)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except (OSError, ValueError):
        return None


def trace_rows(out: Outcome) -> list[dict[str, Any]]:
    assert out.result is not None
    return results.trace_rows(out.result.trace)


def file_name(scenario: str, check: str) -> str:
    return f"{scenario}.{re.sub(r'[^A-Za-z0-9_.-]', '-', check)}.replay.json"


def document(
    resolved: Resolved,
    setup: Setup,
    exploration: dict[str, Any],
    found: Outcome,
    final: Outcome,
) -> dict[str, Any]:
    assert final.result is not None
    return {
        "schema": SCHEMA,
        "version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scenario": {
            "path": str(resolved.path),
            "sha256": sha256_of(resolved.path),
            "name": setup.exp.scenario.name,
        },
        "sets": resolved.sets,
        "config": setup.exp.resolved(),
        "seed": setup.seed,
        "exploration": {
            **exploration,
            "run": found.index,
            "budget": {
                "preemptions": setup.budget.preemptions,
                "preempt_cycles": setup.budget.preempt_cycles,
                "evictions": setup.budget.evictions,
                "ops": list(setup.budget.ops) if setup.budget.ops is not None else None,
                "ties": setup.budget.ties,
                "kinds": list(setup.budget.kinds) if setup.budget.kinds is not None else None,
            },
            "max_steps": setup.max_steps,
            "expect_mode": setup.expect_mode,
            "oracles": list(setup.oracles),
            "require_finish": setup.require_finish,
        },
        "choices": {
            "deviations": [d.to_json() for d in final.deviations],
            "list": [list(c) for c in final.choices],
            "found": [list(p) for p in found.dev_pairs],
        },
        "failure": {**final.failures[0].to_json(), "all": [f.to_json() for f in final.failures]},
        "faults": final.result.faults,
        "metrics": final.result.metrics,
        "trace": trace_rows(final),
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path


# --- reading and replaying ------------------------------------------------------------------
def _bad(path: Path, message: str) -> InputError:
    return InputError([Problem(str(path), None, "", message)])


class _Open(BaseModel):
    """Strict types; keys this version does not read are allowed (a newer writer)."""

    model_config = ConfigDict(strict=True, extra="allow")


NonNeg = Annotated[int, Field(ge=0)]


class _ScenarioRef(_Open):
    path: str
    sha256: str | None = None
    name: str = "?"


class _Config(_Open):
    scenario: dict[str, Any]
    hardware: dict[str, Any]


class _Budget(_Open):
    preemptions: NonNeg
    preempt_cycles: NonNeg
    evictions: NonNeg
    ops: list[str] | None = None
    ties: Literal["threads", "all"] = "threads"
    kinds: list[str] | None = None


class _Exploration(_Open):
    strategy: str
    run: NonNeg
    budget: _Budget
    max_steps: Annotated[int, Field(ge=1)]
    expect_mode: Literal[EXPECT_MODES]  # type: ignore[valid-type]
    oracles: list[Literal[ORACLES]]  # type: ignore[valid-type]
    require_finish: bool = True


class _Deviation(_Open):
    index: NonNeg
    kind: str
    option: NonNeg
    n: Annotated[int, Field(ge=1)]
    cycle: NonNeg
    what: str


class _Choices(_Open):
    deviations: list[_Deviation]
    # [kind, option, n]: a JSON list, read as a tuple whose items stay strictly typed
    list: list[Annotated[
        tuple[StrictStr, Annotated[StrictInt, Field(ge=0)], Annotated[StrictInt, Field(ge=1)]],
        Field(strict=False),
    ]]
    found: list[Any] = []


class _Found(_Open):
    check: str
    message: str
    cycle: NonNeg | None = None


class _Failure(_Found):
    all: Annotated[list[_Found], Field(min_length=1)]


class ReplayFile(_Open):
    """What ``replay`` reads of a replay file (the module docstring lists it all)."""

    schema_: Literal[SCHEMA] = Field(alias="schema")  # type: ignore[valid-type]
    scenario: _ScenarioRef
    sets: list[str] = []
    config: _Config
    seed: NonNeg
    exploration: _Exploration
    choices: _Choices
    failure: _Failure
    faults: list[dict[str, Any]] | None = None


def read(path: Path) -> dict[str, Any]:
    """A replay file, checked: the structure against ``ReplayFile``, and each saved
    choice against the choice list (an index past its end, an option past its count).
    Every problem is located (file, line, key path)."""
    if not path.exists():
        raise _bad(path, "no such file")
    jdoc = JsonDoc.read(path)
    doc = jdoc.data
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise _bad(path, f"not a replay file (schema is not {SCHEMA})")
    validate(ReplayFile, doc, jdoc)
    problems = []
    listed = doc["choices"]["list"]
    for i, (_, option, n) in enumerate(listed):
        if option >= n:
            problems.append(jdoc.problem(("choices", "list", i),
                                         f"option {option} of a choice with {n} options"))
    for i, d in enumerate(doc["choices"]["deviations"]):
        loc = ("choices", "deviations", i)
        if d["index"] >= len(listed):
            problems.append(jdoc.problem((*loc, "index"), f"choice {d['index']} is past the "
                                         f"end of the choice list ({len(listed)} choices)"))
        elif listed[d["index"]][0] != d["kind"] or d["option"] >= listed[d["index"]][2]:
            kind, _, n = listed[d["index"]]
            problems.append(jdoc.problem(loc, f"does not fit choice {d['index']} of the list "
                                         f"({kind} with {n} options)"))
    if problems:
        raise InputError(problems)
    return doc


def experiment(path: Path, doc: dict[str, Any], sets: list[str]) -> Experiment:
    """The saved configuration, with ``sets`` applied on top; a value that no longer
    validates is reported at its line in the replay file (or against its --set)."""
    config = json.loads(json.dumps(doc["config"]))
    problems = []
    origins: dict[str, dict[Loc, Override]] = {"scenario": {}, "hardware": {}}
    for text in sets:
        try:
            ov = parse_set(text)
            part = "hardware" if is_hardware_key(ov.path) else "scenario"
            origins[part][apply_override(config[part], ov)] = ov
        except InputError as exc:
            problems += exc.problems
    jdoc = JsonDoc.read(path)
    models: dict[str, Any] = {"scenario": Scenario, "hardware": HardwareConfig}
    valid = {}
    for part, model in models.items():
        try:
            valid[part] = validate(model, config[part], jdoc, origins[part], ("config", part))
        except InputError as exc:
            problems += exc.problems
    if not problems:  # what the schema cannot see (a pa beyond the table's output width)
        found = check_experiment(valid["scenario"], valid["hardware"],
                                 jdoc.at(("config", "scenario")), origins["scenario"], RUN_CHECKS)
        problems += [dataclasses.replace(p, path=f"config.scenario.{p.path}")
                     if p.source == jdoc.source else p for p in found]
    if problems:
        raise InputError(problems)
    source = str(doc.get("scenario", {}).get("path", path))
    return Experiment(valid["scenario"], valid["hardware"], config["scenario"],
                      config["hardware"], source, str(config["scenario"].get("hardware", "")), [])


def setup_of(doc: dict[str, Any], exp: Experiment) -> Setup:
    x = doc["exploration"]
    b = x["budget"]
    return Setup(
        exp,
        int(doc["seed"]),
        Budget(int(b["preemptions"]), int(b["preempt_cycles"]), int(b["evictions"]),
               tuple(b["ops"]) if b.get("ops") is not None else None,
               str(b.get("ties", "threads")),
               tuple(b["kinds"]) if b.get("kinds") is not None else None),
        int(x["max_steps"]),
        str(x["expect_mode"]),
        tuple(x["oracles"]),
        bool(x.get("require_finish", True)),
    )


def replay(path: Path, sets: list[str] | None = None, *, trace: bool = True) -> tuple[
        dict[str, Any], Outcome]:
    """Run the saved choice list again; returns the file and the new outcome."""
    doc = read(path)
    exp = experiment(path, doc, list(sets or []))
    setup = setup_of(doc, exp)
    choices = tuple((str(k), int(o), int(n)) for k, o, n in doc["choices"]["list"])
    deviations = tuple((int(d["index"]), int(d["option"])) for d in doc["choices"]["deviations"])
    spec = RunSpec("forced", deviations=deviations, expect_choices=choices)
    out = run_one(setup, spec, trace=trace, keep=True)
    return doc, out


def compare(doc: dict[str, Any], out: Outcome) -> list[str]:
    """How the new run differs from the saved one ([] = reproduced exactly)."""
    diffs = []
    if out.diverged:
        diffs.append(f"the run left the saved choice list: {out.diverged}")
    saved = [list(c) for c in doc["choices"]["list"]]
    if not out.diverged and [list(c) for c in out.choices] != saved:
        diffs.append(f"the run had {len(out.choices)} choice points, the file {len(saved)}")
    want = [Failure(f["check"], f["message"], f.get("cycle")) for f in doc["failure"]["all"]]
    if out.failures != want:

        def show(f: Failure) -> str:
            return f"{f.check} at cycle {f.cycle:,}" if f.cycle is not None else f.check

        got = "; ".join(show(f) for f in out.failures) or "none"
        exp = "; ".join(show(f) for f in want)
        diffs.append(f"failures differ: saved {exp}; now {got}")
    if out.result is not None and "faults" in doc and out.result.faults != doc["faults"]:
        diffs.append(f"faults differ: saved {len(doc['faults'])}, now {len(out.result.faults)}")
    return diffs
