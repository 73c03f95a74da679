"""``--set``, a scenario's ``overrides:`` and ``sweep:``: dotted paths into the
hardware and the scenario, in that order of precedence (preset < overrides < --set <
sweep point)."""

from __future__ import annotations

import json

import yaml

from iommusim.experiment import executors
from iommusim.experiment.assembly import simulate


def resolved(tmp_path, out="out"):
    return yaml.safe_load((tmp_path / out / "config.resolved.yaml").read_text())


def test_set_hardware_and_scenario_keys(cli, scenario, tmp_path, h):
    path = scenario(h.BASE)
    r = cli("run", path, "--jobs", "1", "--quiet", "--out", "out",
            "--set", "iommu.iotlb.entries=128",
            "--set", "iommu.iotlb.replacement=random",
            "--set", "clock_ghz=3.0",
            "--set", "iommu.walk_cache.entries.3=7",   # an integer-keyed map
            "--set", "iommu.walk_cache.entries.4=2",   # a new key in it
            "--set", "kernel.fixes.flush_done_sw_bit=false",
            "--set", "run.seeds=3",
            "--set", "cpus.0.start=80",                # a list index
            "--set", "devices.0.dma.0.size=128",
            "--set", "table.features=[dma_incoherent, flush_range]",
            "--set", "description=set from the command line")
    assert r.rc == 0, r.err
    res = resolved(tmp_path)
    hw, sc = res["hardware"], res["scenario"]
    assert hw["iommu"]["iotlb"]["entries"] == 128
    assert hw["iommu"]["iotlb"]["replacement"] == "random"
    assert hw["clock_ghz"] == 3.0
    assert hw["iommu"]["walk_cache"]["entries"] == {3: 7, 2: 8, 1: 32, 4: 2}
    assert sc["kernel"]["fixes"]["flush_done_sw_bit"] is False
    assert sc["run"]["seeds"] == [1, 2, 3]
    assert sc["cpus"][0]["start"] == 80
    assert sc["devices"][0]["dma"][0]["size"] == 128
    assert sc["table"]["features"] == ["dma_incoherent", "flush_range"]
    assert sc["description"] == "set from the command line"
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [run["seed"] for run in doc["runs"]] == [1, 2, 3]  # run.seeds=3 took effect
    assert doc["hardware"]["iommu"]["walk_cache"]["entries"] == {"3": 7, "2": 8, "1": 32, "4": 2}


def test_set_changes_the_simulation(cli, scenario, tmp_path, h):
    """A later start shifts the whole run by exactly that many cycles."""
    path = scenario(h.BASE)
    assert cli("run", path, "--seed", "1", "--quiet", "--out", "a").rc == 0
    assert cli("run", path, "--seed", "1", "--quiet", "--out", "b",
               "--set", "cpus.0.start=1000").rc == 0
    a = h.load_results(tmp_path / "a")["runs"][0]["metrics"]
    b = h.load_results(tmp_path / "b")["runs"][0]["metrics"]
    assert b["sim.cycles"] == a["sim.cycles"] + 1000


def test_seed_options_beat_run_seeds(cli, scenario, tmp_path, h):
    path = scenario(h.BASE)
    assert cli("run", path, "--seeds", "3", "--jobs", "1", "--quiet", "--out", "a").rc == 0
    assert [r["seed"] for r in h.load_results(tmp_path / "a")["runs"]] == [1, 2, 3]
    assert cli("run", path, "--seed", "7", "--quiet", "--out", "b",
               "--set", "run.seeds=[1, 2]").rc == 0
    assert [r["seed"] for r in h.load_results(tmp_path / "b")["runs"]] == [7]
    assert cli("run", path, "--quiet", "--jobs", "1", "--out", "c",
               "--set", "run.seeds=[4, 9]").rc == 0
    assert [r["seed"] for r in h.load_results(tmp_path / "c")["runs"]] == [4, 9]


def test_set_expectations_by_metric_name(cli, scenario, tmp_path, h):
    """Metric names contain dots: `expect.dma.faults=...` names the metric dma.faults."""
    path = scenario(h.BASE)
    r = cli("run", path, "--jobs", "1", "--quiet", "--out", "out",
            "--set", "expect.dma.faults=> 0",                        # replaces the file's
            "--set", 'expect.dma.requests={condition: "== 1", seeds: any}',  # a new one
            "--set", "expect.dma.requests.seeds=50%")               # one key of an entry
    assert r.rc == 1
    exp = resolved(tmp_path)["scenario"]["expect"]
    assert exp == {"dma.faults": {"condition": "> 0", "seeds": "all"},
                   "dma.requests": {"condition": "== 1", "seeds": "50%"}}


def test_overrides_then_set(cli, scenario, tmp_path, h):
    """The preset, then the file's overrides:, then --set (which wins)."""
    text = h.BASE.replace(
        "hardware: vtd-incoherent\n",
        "hardware: vtd-incoherent\noverrides:\n  iommu.iotlb.entries: 128\n"
        "  iommu.link: 40\n  cpu.interrupts: {mean_interval: 5000}\n",
    )
    r = cli("run", scenario(text), "--seed", "1", "--quiet", "--out", "out",
            "--set", "iommu.link=60", "--set", "overrides.dram.read=300")
    assert r.rc == 0, r.err
    hw = resolved(tmp_path)["hardware"]
    assert hw["iommu"]["iotlb"]["entries"] == 128   # overrides
    assert hw["iommu"]["link"] == 60                 # --set beats overrides
    assert hw["dram"]["read"] == 300                 # --set into overrides
    assert hw["cpu"]["interrupts"] == {"mean_interval": 5000, "duration": 4000,
                                       "distribution": "fixed"}  # a whole node replaced
    assert hw["iommu"]["walker_slots"] == 8          # the preset


def test_hardware_file_by_path(cli, scenario, tmp_path, h):
    """`hardware:` may name a file, relative to the scenario's folder."""
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "mine.yaml").write_text("cpu: {count: 2}\niommu: {link: 33}\n")
    path = scenario(h.BASE.replace("vtd-incoherent", "../hw/mine.yaml"), name="s/x.yaml")
    r = cli("run", path, "--seed", "1", "--quiet", "--out", "out")
    assert r.rc == 0, r.err
    hw = resolved(tmp_path)["hardware"]
    assert (hw["cpu"]["count"], hw["iommu"]["link"]) == (2, 33)
    assert hw["iommu"]["write_buffer"]["enabled"] is False  # model defaults, not a preset
    assert r.out.startswith("base on mine: ")


SWEEP = """\
sweep:
  iommu.iotlb.entries: [64, 128, 256]
  kernel.fixes.flush_done_sw_bit: [true, false]
"""


def test_sweep_cross_product(cli, scenario, tmp_path, h):
    path = scenario(h.BASE + SWEEP)
    r = cli("run", path, "--jobs", "1", "--quiet", "--out", "out", "--set", "run.seeds=2")
    assert r.rc == 0, r.err
    out = tmp_path / "out"
    index = json.loads((out / "index.json").read_text())
    assert index["schema"] == "iommusim.sweep/1"
    assert index["parameters"] == ["iommu.iotlb.entries", "kernel.fixes.flush_done_sw_bit"]
    expected = [(e, f) for e in (64, 128, 256) for f in (True, False)]
    assert [tuple(p["values"].values()) for p in index["points"]] == expected
    assert sorted(p.name for p in out.iterdir()) == [".iommusim", "index.json"] + [
        f"point-{i:03d}" for i in range(6)
    ] + ["results.csv"]
    for point, (entries, fix) in zip(index["points"], expected, strict=True):
        doc = json.loads((out / point["results"]).read_text())
        assert doc["sweep"] == point["values"]
        assert doc["hardware"]["iommu"]["iotlb"]["entries"] == entries
        assert doc["scenario"]["kernel"]["fixes"]["flush_done_sw_bit"] is fix
        assert [run["seed"] for run in doc["runs"]] == [1, 2]
        folder = (out / point["results"]).parent
        res = yaml.safe_load((folder / "config.resolved.yaml").read_text())
        assert res["hardware"]["iommu"]["iotlb"]["entries"] == entries
    lines = r.out.splitlines()
    assert lines[0] == "base on vtd-incoherent: 6 point(s) x 2 seed(s)"
    assert lines[1].split()[:2] == ["iommu.iotlb.entries", "kernel.fixes.flush_done_sw_bit"]
    assert sum("expect dma.faults == 0 at {" in line for line in lines) == 6
    assert lines[-1] == f"results: {out}"


def test_sweep_point_beats_set(cli, scenario, tmp_path, h):
    path = scenario(h.BASE + "sweep: {iommu.link: [10, 30]}\n")
    r = cli("run", path, "--seed", "1", "--quiet", "--out", "out", "--set", "iommu.link=99",
            "--set", "iommu.iotlb.entries=128")
    assert r.rc == 0, r.err
    for i, link in enumerate((10, 30)):
        doc = json.loads((tmp_path / "out" / f"point-{i:03d}" / "results.json").read_text())
        assert doc["hardware"]["iommu"]["link"] == link
        assert doc["hardware"]["iommu"]["iotlb"]["entries"] == 128


def test_sweep_from_the_command_line(cli, scenario, tmp_path, h):
    r = cli("run", scenario(h.BASE), "--seed", "1", "--quiet", "--out", "out",
            "--set", "sweep.cpus.0.start=[0, 500]")
    assert r.rc == 0, r.err
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [p["values"] for p in index["points"]] == [{"cpus.0.start": 0},
                                                      {"cpus.0.start": 500}]
    cycles = [
        json.loads((tmp_path / "out" / p["results"]).read_text())["runs"][0]["metrics"][
            "sim.cycles"]
        for p in index["points"]
    ]
    assert cycles[1] == cycles[0] + 500


def test_sweep_validates_every_point_before_running(cli, scenario, tmp_path, monkeypatch, h):
    calls = []

    def counting(exp, seed, *, trace=False):
        calls.append(seed)
        return simulate(exp, seed, trace=trace)

    monkeypatch.setattr(executors, "simulate", counting)
    # only the last point is bad
    path = scenario(h.BASE + "sweep: {iommu.link: [10, 20, -5]}\n")
    r = cli("run", path, "--jobs", "1", "--quiet", "--out", "out")
    assert r.rc == 2
    assert r.problems() == [f"{path}:15: sweep.iommu.link: input should be greater than or "
                            "equal to 0 (got -5)"]
    assert calls == []
    assert not (tmp_path / "out").exists()
    r = cli("validate", path)  # validate checks the points too
    assert r.rc == 2 and "sweep.iommu.link" in r.err
    r = cli("run", path, "--jobs", "1", "--quiet", "--out", "out", "--set", "sweep.iommu.link=[7]")
    assert r.rc == 0
    assert calls == [1, 2]


def test_sweep_over_hardware_presets(cli, scenario, tmp_path, h):
    path = scenario(h.BASE + "sweep: {hardware: [vtd-incoherent, vtd-coherent, amd-v1]}\n")
    r = cli("run", path, "--seed", "1", "--quiet", "--out", "out")
    assert r.rc == 0, r.err
    coherent = []
    for i in range(3):
        doc = json.loads((tmp_path / "out" / f"point-{i:03d}" / "results.json").read_text())
        coherent.append(doc["hardware"]["iommu"]["coherent_walk"])
    assert coherent == [False, True, True]
    bad = scenario(h.BASE + "sweep: {hardware: [vtd-incoherent, vtd-cohrent]}\n", name="b.yaml")
    r = cli("run", bad, "--seed", "1", "--quiet", "--out", "out2")
    assert r.rc == 2
    assert r.problems() == [f"{bad}:15: sweep.hardware: no such hardware file; presets: "
                            "amd-v1, i7-12700, riscv-iommu, smmuv3-noncoherent, "
                            "vtd-coherent, vtd-incoherent"]
    r = cli("run", path, "--set", "hardware=nope", "--out", "out3")
    assert r.problems() == ["--set: hardware=nope: no such hardware file; presets: amd-v1, "
                            "i7-12700, riscv-iommu, smmuv3-noncoherent, vtd-coherent, "
                            "vtd-incoherent"]
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_sweep_of_one_point(cli, scenario, tmp_path, h):
    """A sweep with one value still has the sweep layout, and the summary names its root."""
    r = cli("run", scenario(h.BASE + "sweep: {iommu.link: [10]}\n"), "--seed", "1", "--quiet",
            "--out", "out")
    assert r.rc == 0, r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".iommusim", "index.json", "point-000", "results.csv"]
    assert r.out.splitlines()[-1] == f"results: {tmp_path / 'out'}"
