"""``table.implementation`` (issue 14): genpt or the io-pgtable code it replaced.

The key selects which code builds the table; everything else -- commands, walker,
oracles, metrics, traces, plots -- must not care. Checked here: the located errors
(an unknown implementation, io-pgtable for a format that had no old code, a feature
the old code cannot honour), every old implementation on every preset through
``run``, and one each through ``explore`` and ``plot``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from iommusim.experiment.load import load
from iommusim.experiment.table import make_table
from iommusim.scenarios.resolve import find_hardware, load_hardware, preset_names
from iommusim.tables import Interleaver, Prot
from iommusim.tables.iopgtable import IMPLEMENTATIONS, LegacyTable
from iommusim.tables.transactions import STORE

RW = Prot.READ | Prot.WRITE
PRESETS = preset_names()
OLD_FORMATS = sorted(IMPLEMENTATIONS)


def scenario(tmp_path: Path, fmt: str, hardware: str, *, features: str = "[]",
             implementation: str = "io-pgtable", name: str = "impl") -> Path:
    """Two CPUs map and unmap a page each (the second under the first's tables), a
    device DMAs to each page as its map returns."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""\
name: {name}
hardware: {hardware}
table: {{format: {fmt}, implementation: {implementation}, features: {features}}}
cpus:
  - name: cpu0
    ops:
      - map: {{iova: 0x40000000, pa: 0x80000000, size: 4K}}
      - signal: mapped
      - delay: 20000                # the DMA to the page is done
      - unmap: {{iova: 0x40000000, size: 4K}}
  - name: cpu1
    after: mapped
    ops:
      - map: {{iova: 0x40001000, pa: 0x80001000, size: 4K}}
      - delay: 20000
      - unmap: {{iova: 0x40001000, size: 4K}}
devices:
  - name: nic0
    follow: {{cpu: cpu0}}
  - name: nic1
    follow: {{cpu: cpu1}}
run: {{seeds: 1}}
""")
    return path


def incoherent(preset: str) -> bool:
    hw, _ = load_hardware(find_hardware(preset, Path()))
    return not hw.iommu.coherent_walk


def write_buffer(preset: str) -> bool:
    hw, _ = load_hardware(find_hardware(preset, Path()))
    return hw.iommu.write_buffer.enabled


def features_for(fmt: str, preset: str) -> str:
    """What a driver would be created with on this machine: DMA_INCOHERENT where the
    walker does not snoop and the old code can clean caches (the AMD drivers never do:
    their IOMMU snoops), and what genpt amdv1 requires."""
    if fmt == "amdv1":
        return "[dynamic_top, amdv1_encrypt_tables, amdv1_force_coherence]"
    if incoherent(preset) and fmt in ("vtdss", "armv8"):
        return "[dma_incoherent]"
    return "[]"


# --- located errors -----------------------------------------------------------------------
def test_unknown_implementation_is_a_located_error(cli, tmp_path: Path) -> None:
    path = scenario(tmp_path, "vtdss", "vtd-coherent", implementation="iopgtable")
    r = cli("run", path, "--out", tmp_path / "out")
    assert r.rc == 2
    assert f"{path.name}:3: table.implementation:" in r.err
    assert "genpt" in r.err and "io-pgtable" in r.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["riscv64", "amdv1_mock"])
def test_io_pgtable_without_old_code_is_a_located_error(cli, tmp_path: Path, fmt: str) -> None:
    path = scenario(tmp_path, fmt, "riscv-iommu")
    r = cli("validate", path)
    assert r.rc == 2
    assert f"{path.name}:3: table.implementation: the {fmt} format had no io-pgtable" in r.err
    for valid in ("amdv1 (amd-v1)", "x86_64 (amd-v2)", "vtdss (vtd)", "armv8 (arm-lpae)"):
        assert valid in r.err
    assert r.err.count(f"{path.name}:") == 1  # one message, not a cascade


@pytest.mark.parametrize(("fmt", "feature", "why"), [
    ("vtdss", "flush_range", "does not have"),
    ("x86_64", "dma_incoherent", "never cleans a CPU cache line"),
    ("x86_64", "sign_extend", "lower canonical half"),
    ("amdv1", "full_va", "does not have"),
])
def test_a_genpt_feature_the_old_code_lacks_is_a_located_error(
    cli, tmp_path: Path, fmt: str, feature: str, why: str
) -> None:
    path = scenario(tmp_path, fmt, "vtd-coherent", features=f"[{feature}]")
    r = cli("validate", path)
    assert r.rc == 2
    assert f"{path.name}:3: table.features[0]: '{feature}' is a genpt feature" in r.err
    assert why in r.err and "takes:" in r.err


def test_old_only_feature_named_under_genpt(cli, tmp_path: Path) -> None:
    """vtd_sp_off (intel_iommu=sp_off) exists only in the old VT-d driver."""
    path = scenario(tmp_path, "vtdss", "vtd-coherent", features="[vtd_sp_off]",
                    implementation="genpt")
    r = cli("validate", path)
    assert r.rc == 2
    assert "unknown feature 'vtd_sp_off'" in r.err and "io-pgtable vtd code only" in r.err
    assert cli("validate", scenario(tmp_path, "vtdss", "vtd-coherent",
                                    features="[vtd_sp_off]")).rc == 0


def test_addresses_checked_against_the_old_aperture(cli, tmp_path: Path) -> None:
    """AMD v2 translates the lower canonical half only: 2^47 is outside its table."""
    path = scenario(tmp_path, "x86_64", "amd-v1")
    text = path.read_text().replace("iova: 0x40001000, pa", "iova: 0x800000000000, pa", 1)
    path.write_text(text)
    r = cli("validate", path)
    assert r.rc == 2 and "lies outside the table (last IOVA 0x7fffffffffff)" in r.err


# --- every old implementation on every preset -------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("fmt", OLD_FORMATS)
def test_old_code_runs_on_every_preset(cli, tmp_path: Path, fmt: str, preset: str) -> None:
    """Through ``run``: both maps return 0, both unmaps remove their page, no table page
    is leaked; every DMA translates, except where the hardware needs what the old code
    never does, and then every DMA right after its map faults: cleaning CPU caches for
    a walker that does not snoop (the AMD drivers: their IOMMU snoops), flushing VT-d's
    write buffer (RWBF) after a map (only old VT-d knows it)."""
    path = scenario(tmp_path, fmt, preset, features=features_for(fmt, preset))
    r = cli("run", path, "--out", tmp_path / "out", "--quiet")
    assert r.rc == 0, r.err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["scenario"]["table"]["implementation"] == "io-pgtable"
    (run,) = results["runs"]
    m = run["metrics"]
    assert m["cpu.map.count"] == 2 and m["cpu.map.errors"] == 0
    assert m["cpu.unmap.errors"] == 0 and m["table.leaked_pages"] == 0
    assert m["dma.requests"] == 2
    blind = (incoherent(preset) and fmt in ("amdv1", "x86_64")) or (
        write_buffer(preset) and fmt != "vtdss")
    assert m["dma.faults"] == (2 if blind else 0)
    assert m["uaf.events"] == 0 and m["table.bad_frees"] == 0


def test_explore_and_plot_run_the_old_code(cli, tmp_path: Path) -> None:
    """``explore`` exhausts a small bound on old VT-d (the two maps take turns, so no
    install race), ``replay`` is not needed, and ``plot`` draws from a traced run."""
    path = scenario(tmp_path, "vtdss", "vtd-incoherent", features="[dma_incoherent]")
    r = cli("explore", path, "--out", tmp_path / "ex", "--bound", "1", "--runs", "500")
    assert r.rc == 0, r.out + r.err
    assert "bounded space exhausted: yes" in r.out
    listing = json.loads((tmp_path / "ex" / "explore.json").read_text())
    assert listing["exhausted"] is True
    r = cli("run", path, "--out", tmp_path / "out", "--trace", "--quiet")
    assert r.rc == 0, r.err
    r = cli("plot", tmp_path / "out", "--kind", "timeline", "-o", tmp_path / "t.png")
    assert r.rc == 0, r.err
    assert (tmp_path / "t.png").stat().st_size > 0


# --- the truth the oracles read -----------------------------------------------------------------
def test_peek_does_not_spin_on_a_grower_inside_its_seqcount() -> None:
    """AMD v1 with the seqcount: the oracles' zero-time peek during another CPU's
    increase_address_space (seqcount odd, root written, mode not yet) must answer,
    from the root the hardware was given, instead of spinning for ever."""
    t = LegacyTable("amdv1", fixes={"amdv1_seqcount": True})
    t.map(0x4000_0000, 0x8000_0000, 4096, RW)
    seen = []

    def grow():  # stop right after the root word is stored: inside the write section
        op = t.map_op(1 << 40, 0x9000_0000, 4096, RW)
        tx = next(op)
        while not (tx[0] == STORE and tx[1] == t.drv.root_word):
            tx = op.send((yield tx))
        yield tx
        seen.append(t.iova_to_phys(0x4000_0000, view="peek"))

    def spinning(*_: object) -> None:
        raise AssertionError("peek spins on the grower's odd seqcount")

    signal.signal(signal.SIGALRM, spinning)
    signal.alarm(10)
    try:
        Interleaver(t.executor).run([grow()])
    finally:
        signal.alarm(0)
    assert seen == [0x8000_0000]
    assert t.executor.memory.cpu[t.drv.seq_word] & 1  # the writer was inside


@pytest.mark.parametrize(("implementation", "cls"), [("genpt", "PageTable"),
                                                     ("io-pgtable", "LegacyTable")])
def test_the_table_built_is_the_one_named(tmp_path: Path, implementation: str, cls: str) -> None:
    exp = load(scenario(tmp_path, "x86_64", "amd-v1", implementation=implementation))
    pt = make_table(exp.scenario, exp.hardware)
    assert type(pt).__name__ == cls
    if cls == "LegacyTable":
        assert pt.implementation == "amd-v2"
