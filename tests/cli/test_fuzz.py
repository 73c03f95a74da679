"""A fuzzer of the command's inputs (issue 13): valid scenario, hardware, replay and
results files, mutated (bytes, YAML/JSON structure, values), given to the commands that
read them. Whatever the input, the command ends with exit 0, 1 or 2; an exit 2 prints
one report (and nothing on stdout); nothing prints a traceback; and nothing is left
behind but the input and, for a run that went through, the outputs asked for.

Bounded for ``make test``: a few hundred examples, derandomized (the same examples on
every machine), each run capped by ``--set run.max_events``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommusim import cli as cli_module

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """\
name: fuzz
hardware: vtd-incoherent
overrides: {cpu.jitter: 20, cpu.interrupts: {mean_interval: 3000, duration: 500}}
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
kernel: {fixes: {flush_done_sw_bit: false}, alloc_faults: {probability: 0.1}}
cpus:
  - name: cpu0
    ops:
      - map: {iova: 0x40000000, pa: 0x100000000, size: 4K, prot: rw}
      - signal: warm
      - barrier: go
      - repeat: {count: 3, stride: 2M, ops: [{map: {iova: 0x40200000, pa: 0x100200000, size: 4K}},
                                             {delay: 100}]}
      - map_range_random: {count: 4, sizes: [4K, 2M], region: {base: 0x80000000, size: 16M}}
      - read_and_clear_dirty: {iova: 0x40000000, size: 4K}
      - unmap: {iova: 0x40000000, size: 4K}
      - unmap_all
  - name: cpu1
    after: warm
    ops: [{barrier: go}, {wait: warm}]
devices:
  - name: nic0
    dma: [{after: warm, iova: 0x40000000, size: 64, access: write}, {at: 500, iova: 0x40200000}]
  - name: nic1
    stream: {after: warm, pattern: random, region: {base: 0x40200000, size: 8K}, count: 20,
             size: 64, outstanding: 2, gap: 50}
  - name: nic2
    follow: {cpu: cpu0, size: 64, access: write}
run: {seeds: [3], until: 2000000}
expect: {dma.faults: ">= 0", iotlb.hits: {condition: "> 0", seeds: "50%"}}
"""
NASTY = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**12, 2**63, 2**64, 10**12, 10**15]),
    st.text(max_size=12),
    st.sampled_from(["4K", "2M", "1G", "1T", "-4K", "0x40000000", "unmap_all", "rw", "x|y",
                     "> 0", "50%", "nope", "", "\x00", "é"]),
    st.booleans(), st.none(), st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.sampled_from(["a", "map", "count", "seeds", "1"]), st.integers(0, 9),
                    max_size=2),
)


# --- mutations ----------------------------------------------------------------------------------
def paths(node: Any, loc: tuple = ()) -> list[tuple]:
    out = [loc]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*loc, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*loc, i))
    return out


def at(node: Any, loc: tuple) -> Any:
    for part in loc:
        node = node[part]
    return node


@st.composite
def tree_mutation(draw: st.DrawFn, data: Any) -> Any:
    """Delete, replace, duplicate, wrap or rename a node of the parsed document."""
    data = json.loads(json.dumps(data))
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p in paths(data) if p]
        if not places:
            break
        loc = draw(st.sampled_from(places))
        parent, key = at(data, loc[:-1]), loc[-1]
        action = draw(st.sampled_from(["delete", "replace", "replace", "duplicate", "wrap",
                                       "rename"]))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(NASTY)
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(key, json.loads(json.dumps(parent[key])))
        elif action == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"x": parent[key]}]))
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from([f"{key}x", str(key)[:-1] or "k", "seeds", "ops"]))] = \
                parent.pop(key)
    return data


PLAUSIBLE = st.sampled_from([0, 1, 2, 3, 7, 64, 100, 4096, 2**21, 2**30, 10**6, 10**9,
                             2**48 - 4096, 2**52, 2**63 - 1])


@st.composite
def value_mutation(draw: st.DrawFn, data: Any) -> Any:
    """Numbers set to other plausible numbers, booleans flipped: documents that still
    parse and often still validate, so that the runs themselves are fuzzed."""
    data = json.loads(json.dumps(data))
    leaves = [p for p in paths(data) if p and isinstance(at(data, p), int | float)]
    for _ in range(draw(st.integers(1, 3)) if leaves else 0):
        loc = draw(st.sampled_from(leaves))
        parent = at(data, loc[:-1])
        old = parent[loc[-1]]
        parent[loc[-1]] = (not old) if isinstance(old, bool) else draw(PLAUSIBLE)
    return data


@st.composite
def byte_mutation(draw: st.DrawFn, text: bytes) -> bytes:
    data = bytearray(text)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[pos:pos] = draw(st.sampled_from([b"\x00", b"\xff", b"&a ", b"*a", b"[", b"{",
                                                  b"\n  ", b"- ", b": ", b"\t", b"\xc3"]))
        elif action == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            del data[pos:]
    return bytes(data)


def mutated(kind: str, text: str) -> st.SearchStrategy[bytes]:
    """Bytes of a mutated document: raw byte edits, or a tree or value edit dumped again."""
    dump = (lambda d: yaml.safe_dump(d, sort_keys=False).encode()) if kind == "yaml" else (
        lambda d: json.dumps(d, indent=1).encode())
    data = yaml.safe_load(text) if kind == "yaml" else json.loads(text)
    return st.one_of(byte_mutation(text.encode()), tree_mutation(data).map(dump),
                     value_mutation(data).map(dump), value_mutation(data).map(dump))


# --- running one command ---------------------------------------------------------------------
def command(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_module.main(args)
        except SystemExit as exc:  # argparse
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


def check(files: dict[str, bytes], args: list[str], outputs: set[str]) -> None:
    """Run ``args`` in a fresh folder holding ``files``; judge how it ended."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            for name, data in files.items():
                Path(name).parent.mkdir(parents=True, exist_ok=True)
                Path(name).write_bytes(data)
            before = {str(p) for p in Path(".").rglob("*")}
            rc, out, err = command(args)
            after = {str(p) for p in Path(".").rglob("*")}
        finally:
            os.chdir(old)
    assert rc in (0, 1, 2), (rc, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    new = {p for p in after - before if not any(p.startswith(o) for o in outputs)}
    if rc == 2:
        one_report = err.startswith("iommusim: ") and err.count("iommusim: ") == 1
        assert one_report and out == "", (out, err)
        new |= {p for p in after - before if p.startswith(tuple(outputs))}
    assert not new, f"stray files {sorted(new)} (exit {rc}: {err})"


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
CAP = ["--set", "run.max_events=100000", "--set", "run.until=3000000"]


@fuzz(110)
@given(data=mutated("yaml", SCENARIO), which=st.sampled_from(["validate", "run"]))
def test_fuzz_scenario(data: bytes, which: str) -> None:
    if which == "validate":
        check({"s.yaml": data}, ["validate", "s.yaml"], set())
    else:
        check({"s.yaml": data}, ["run", "s.yaml", "--jobs", "1", "--quiet", "--out", "o",
                                 *CAP], {"o"})


HARDWARE = (ROOT / "tests" / "scenarios" / "examples" / "hardware.yaml").read_text()


@fuzz(60)
@given(data=mutated("yaml", HARDWARE), which=st.sampled_from(["validate", "show-config"]),
       with_scenario=st.booleans())
def test_fuzz_hardware(data: bytes, which: str, with_scenario: bool) -> None:
    files = {"hw.yaml": data}
    if with_scenario:  # the hardware read through a scenario that names it
        files["s.yaml"] = SCENARIO.replace("hardware: vtd-incoherent",
                                           "hardware: ./hw.yaml").encode()
        check(files, [which, "s.yaml"], set())
    else:
        check(files, [which, "hw.yaml"], set())


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A replay file (the catalog's shared-level-flush race) and a results directory."""
    folder = tmp_path_factory.mktemp("made")
    (folder / "s.yaml").write_text(SCENARIO)
    rc, _, err = command(["explore", "shared-level-flush", "--out", str(folder / "ex"),
                          "--quiet"])
    assert rc == 1, err
    rc, _, err = command(["run", str(folder / "s.yaml"), "--quiet", "--jobs", "1", "--out",
                          str(folder / "res")])
    assert rc in (0, 1), err
    replay = next((folder / "ex").glob("*.replay.json"))
    return {"replay": replay.read_text(), "results": folder / "res"}


@fuzz(35)
@given(st.data())
def test_fuzz_replay(made: dict[str, Any], data: st.DataObject) -> None:
    mutant = data.draw(mutated("json", made["replay"]))
    check({"r.replay.json": mutant}, ["replay", "r.replay.json", *CAP[:2]], set())


@fuzz(20)  # a valid mutant draws a figure: the slowest examples
@given(st.data())
def test_fuzz_results(made: dict[str, Any], data: st.DataObject) -> None:
    original = (made["results"] / "results.json").read_text()
    mutant = data.draw(mutated("json", original))
    kind = data.draw(st.sampled_from(["latency", "ops", "flushes"]))
    files = {"res/results.json": mutant,
             "res/config.resolved.yaml": (made["results"] / "config.resolved.yaml").read_bytes()}
    check(files, ["plot", "res", "--kind", kind, "-o", "fig.png"], {"fig.png"})


def test_the_fuzzer_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The judge itself: a stray file is caught, and a crash is not swallowed."""
    with pytest.raises(AssertionError, match="stray files"):
        check({"s.yaml": SCENARIO.encode()}, ["schema", "-o", "stray.json"], set())
    from iommusim.cli import validate

    def crash(args: Any) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(validate, "run", crash)
    with pytest.raises(RuntimeError, match="a bug"):
        check({"s.yaml": SCENARIO.encode()}, ["validate", "s.yaml"], set())
