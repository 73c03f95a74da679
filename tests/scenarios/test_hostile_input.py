"""Input a hostile user would try (issue 13): each ends with exit 2, one located
message, no traceback and nothing written -- quickly.

Non-UTF-8 files, YAML alias bombs and deep nesting, huge seed counts and sweeps, paths
that are not regular files, and values that pass the schema but could not run (a
physical address beyond the table's output width, an unmap or dirty scan outside the
table or misaligned).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

HEAD = """\
name: t
hardware: vtd-incoherent
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
"""
CPU = HEAD + "cpus:\n  - name: cpu0\n    ops:\n"


def one_problem(r) -> str:
    assert r.rc == 2, (r.rc, r.out, r.err)
    assert "Traceback" not in r.err
    (problem,) = r.problems()
    return problem


def only_inputs(tmp_path, *names: str) -> None:
    """Nothing was written beside the input files."""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


# --- bytes that are not UTF-8 text ---------------------------------------------------------
ENCODINGS = {
    "latin-1": ("name: café\n".encode("latin-1"), 1, "is not UTF-8 text (byte 0xe9)"),
    "utf-16": ("name: t\n".encode("utf-16"), 1, "is UTF-16 text; save it as UTF-8"),
    "binary": (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), 1, "NUL byte"),
    "nul": (HEAD.encode() + b"description: a\x00b\n", 4, "contains a NUL byte"),
}


@pytest.mark.parametrize("case", ENCODINGS)
@pytest.mark.parametrize("command", ["run", "validate", "show-config"])
def test_not_utf8_scenario(case, command, cli, tmp_path):
    data, line, text = ENCODINGS[case]
    (tmp_path / "s.yaml").write_bytes(data)
    problem = one_problem(cli(command, tmp_path / "s.yaml"))
    assert problem.startswith(f"{tmp_path / 's.yaml'}:{line}: ") and text in problem
    only_inputs(tmp_path, "s.yaml")


def test_not_utf8_hardware_file_referenced_from_a_scenario(cli, tmp_path):
    (tmp_path / "hw.yaml").write_bytes(b"clock_ghz: 2\ncpu: {count: 2}\n# \xff\xfe\n")
    (tmp_path / "s.yaml").write_text(HEAD.replace("vtd-incoherent", "./hw.yaml"))
    problem = one_problem(cli("run", tmp_path / "s.yaml"))
    assert problem == f"{tmp_path / 'hw.yaml'}:3: is not UTF-8 text (byte 0xff); save it as UTF-8"
    only_inputs(tmp_path, "s.yaml", "hw.yaml")


def test_utf8_with_byte_order_mark_is_fine(cli, tmp_path, h):
    (tmp_path / "s.yaml").write_bytes(b"\xef\xbb\xbf" + h.BASE.encode())
    assert cli("validate", tmp_path / "s.yaml").rc == 0


# --- YAML that explodes ----------------------------------------------------------------------
def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


DEEP = {
    "alias-bomb": (alias_bomb(), "aliases (*name) expand this document beyond 200,000 nodes"),
    "block-3000": ("".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "x\n",
                   "nested more than 64 levels deep"),
    "flow-50000": ("a: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested more than 64 levels"),
    "flow-map": ("a: " + "{b: " * 5_000 + "1" + "}" * 5_000 + "\n", "nested more than 64"),
}


@pytest.mark.parametrize("case", DEEP)
def test_yaml_that_explodes_is_refused_quickly(case, cli, tmp_path):
    text, message = DEEP[case]
    (tmp_path / "s.yaml").write_text(text)
    start = time.monotonic()
    problem = one_problem(cli("validate", tmp_path / "s.yaml"))
    assert time.monotonic() - start < 10
    assert message in problem and problem.startswith(f"{tmp_path / 's.yaml'}:")


def test_aliases_within_the_bound_work(cli, tmp_path, h):
    """Anchors and aliases themselves are fine: cpu1 runs cpu0's ops (``*ops``)."""
    text = h.BASE.replace("    ops:\n", "    ops: &ops\n", 1).replace(
        "devices:", "  - name: cpu1\n    ops: *ops\ndevices:")
    (tmp_path / "s.yaml").write_text(text)
    r = cli("validate", tmp_path / "s.yaml")
    assert r.rc == 0, r.err


# --- sizes that would never end --------------------------------------------------------------
@pytest.mark.parametrize("seeds,message", [
    ("10000000000", "at most 10,000 seeds per run, got 10,000,000,000"),
    ("100000000", "at most 10,000 seeds per run"),
    ("[" + ", ".join(["1"] * 10_001) + "]", "at most 10,000 seeds per run, got a list"),
    ("[100000000000000000000]", "less than or equal to 9223372036854775807"),
])
def test_seed_bounds_in_the_file(seeds, message, cli, tmp_path):
    (tmp_path / "s.yaml").write_text(HEAD + f"run: {{seeds: {seeds}}}\n")
    problem = one_problem(cli("run", tmp_path / "s.yaml"))
    assert "run.seeds" in problem and message in problem
    only_inputs(tmp_path, "s.yaml")


@pytest.mark.parametrize("args,message", [
    (["--seeds", str(10**12)], "at most 10,000 seeds"),
    (["--seed", str(2**64)], "a seed is at most"),
])
def test_seed_bounds_on_the_command_line(args, message, cli, tmp_path, h):
    (tmp_path / "s.yaml").write_text(h.BASE)
    r = cli("run", tmp_path / "s.yaml", *args)
    assert r.rc == 2 and message in r.err and "Traceback" not in r.err
    only_inputs(tmp_path, "s.yaml")


def test_sweep_bound(cli, tmp_path):
    values = "[" + ", ".join(str(i) for i in range(1, 12)) + "]"
    sweep = f"sweep: {{cpu.jitter: {values}, run.until: {values}, iommu.iotlb.ways: {values}}}\n"
    (tmp_path / "s.yaml").write_text(HEAD + sweep)
    assert "1,331 sweep points; at most 1,000" in one_problem(cli("validate", tmp_path / "s.yaml"))
    (tmp_path / "s.yaml").write_text(HEAD + "run: {seeds: 10000}\nsweep: {cpu.jitter: "
                                     + "[" + ", ".join(str(i) for i in range(11)) + "]}\n")
    assert "110,000 runs; at most 100,000" in one_problem(cli("validate", tmp_path / "s.yaml"))


# --- paths that are not files ----------------------------------------------------------------
def test_fifo_scenario_is_refused_without_blocking(cli, tmp_path):
    fifo = tmp_path / "s.yaml"
    os.mkfifo(fifo)
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=cli("validate", fifo)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # unblock the reader before failing
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert "cannot read: not a regular file" in one_problem(result["r"])


def test_fifo_hardware_file_is_refused(cli, tmp_path):
    os.mkfifo(tmp_path / "hw.yaml")
    (tmp_path / "s.yaml").write_text(HEAD.replace("vtd-incoherent", "./hw.yaml"))
    assert "not a regular file" in one_problem(cli("validate", tmp_path / "s.yaml"))


# --- values that validate but could not run --------------------------------------------------
UNRUNNABLE = {
    "pa-beyond-output-width": (
        "      - map: {iova: 0x40000000, pa: 0x10000000000000, size: 4K}\n",
        7, "cpus[0].ops[0].map.pa", "lies beyond the table's 52-bit output addresses"),
    "pa-beyond-in-repeat": (
        "      - repeat: {count: 32, stride: 64K,\n"
        "                 ops: [{map: {iova: 0x40000000, pa: 0xfffffffff0000, size: 4K}}]}\n",
        8, "cpus[0].ops[0].repeat.ops[0].map.pa", "0x100000001e0000+0x1000 lies beyond"),
    "random-pa-beyond": (
        "      - map_range_random: {count: 2, sizes: [4K], region: {base: 0, size: 2M},\n"
        "                           pa_base: 0xffffffffff000}\n",
        8, "cpus[0].ops[0].map_range_random.pa_base", "lies beyond the table's 52-bit"),
    "unmap-outside": ("      - unmap: {iova: 0x1000000000000, size: 4K}\n", 7,
                      "cpus[0].ops[0].unmap", "lies outside the table (last IOVA 0xffffffffffff)"),
    "unmap-misaligned": ("      - unmap: {iova: 0x40000800, size: 4K}\n", 7,
                         "cpus[0].ops[0].unmap.iova", "is not aligned to the smallest page"),
    "dirty-outside": ("      - read_and_clear_dirty: {iova: 0xfffffffff000, size: 8K}\n", 7,
                      "cpus[0].ops[0].read_and_clear_dirty", "lies outside the table"),
    "dirty-misaligned": ("      - read_and_clear_dirty: {iova: 0x40000000, size: 100}\n", 7,
                         "cpus[0].ops[0].read_and_clear_dirty.size", "is not aligned"),
}


@pytest.mark.parametrize("case", UNRUNNABLE)
def test_values_that_could_not_run_are_refused_at_load(case, cli, tmp_path):
    ops, line, path, message = UNRUNNABLE[case]
    (tmp_path / "s.yaml").write_text(CPU + ops)
    problem = one_problem(cli("run", tmp_path / "s.yaml"))
    assert problem.startswith(f"{tmp_path / 's.yaml'}:{line}: {path}: "), problem
    assert message in problem
    only_inputs(tmp_path, "s.yaml")


def test_a_stream_with_more_in_flight_than_pcie_tags_is_refused(cli, tmp_path):
    """Found by a long fuzz run: outstanding 2*10**11 built one worker per slot and the
    process grew until the kernel killed it; now a located message at load."""
    (tmp_path / "s.yaml").write_text(
        "name: wide\n"
        "hardware: vtd-coherent\n"
        "table: {format: x86_64}\n"
        "devices:\n"
        "  - name: nic0\n"
        "    stream: {region: {base: 0x40000000, size: 8K}, count: 2,\n"
        "             outstanding: 200000000000}\n")
    problem = one_problem(cli("run", tmp_path / "s.yaml"))
    assert problem.startswith(f"{tmp_path / 's.yaml'}:7: devices[0].stream.outstanding: "), problem
    assert "16384" in problem
    only_inputs(tmp_path, "s.yaml")
