"""Device pipelines (issue 17): a device's requests in one pipeline -- exact look-ahead
with many in flight, eager IOTLB hits, whole periods advanced at once -- give what one
SimPy process per request gives: the same results, traces, figures and records.

Look-ahead off runs the reference model (a process per request); on, the pipeline.
Traces on keep every request acting at its own cycles (nothing may act early where a
trace would show it); traces off let hits run eagerly and periods be advanced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from iommusim.experiment.assembly import simulate
from iommusim.experiment.runner import prepare
from iommusim.hwmodels.config import HardwareConfig
from iommusim.hwmodels.dma import DmaDevice, DmaStream
from iommusim.hwmodels.machine import Machine
from iommusim.hwmodels.sim import SimEnvironment, events_processed
from iommusim.scenarios.resolve import catalog_dir, preset_dir
from iommusim.tables import PageTable, Prot
from iommusim.walker import Iommu

MIX = Path(__file__).resolve().parent / "scenarios" / "pipeline-mix.yaml"
VARIANTS = {
    "as-is": [],
    "one-in-flight": ["devices.0.stream.outstanding=1", "devices.1.stream.outstanding=1"],
    "eight-no-gap": ["devices.0.stream.outstanding=8", "devices.1.stream.gap=0"],
    "dram-channels": ["dram.channels=2", "dram.occupancy=40"],
    "no-merge-negative": ["iommu.merge_walks=false", "iommu.iotlb.negative_caching=true"],
    "random-2-slots": ["iommu.iotlb.replacement=random", "iommu.walker_slots=2",
                       "devices.0.stream.pattern=random"],
    "long-hits-gap": ["devices.0.stream.count=20000", "devices.0.stream.gap=5"],
}


def outcome(path: Path, sets: list[str], lookahead: bool, seed: int,
            trace: bool) -> tuple[str, list[Any]]:
    [(_, exp)] = prepare(path, [*sets, f"run.lookahead={str(lookahead).lower()}"])
    run = simulate(exp, seed, trace=trace)
    return json.dumps(run.to_json()), [tuple(r) for r in run.trace]


@pytest.mark.parametrize("trace", [True, False], ids=["traced", "eager"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_pipelines_match_a_process_per_request(variant: str, trace: bool) -> None:
    for seed in (1, 2):
        on = outcome(MIX, VARIANTS[variant], True, seed, trace)
        off = outcome(MIX, VARIANTS[variant], False, seed, trace)
        assert on[0] == off[0]
        assert on[1] == off[1]
        if trace:
            assert on[1], "traced runs must trace something to compare"


def test_dirty_scans_with_long_write_streams() -> None:
    """The dirty-log oracle hears every write, advanced in periods or not."""
    path = catalog_dir() / "dirty-clear-without-flush.yaml"
    sets = ["devices.0.stream.count=6000", "devices.0.stream.gap=0",
            "devices.0.stream.outstanding=4"]
    for seed in (1, 2):
        assert outcome(path, sets, True, seed, False) == outcome(path, sets, False, seed, False)


# --- one device on a bare machine: records, IOTLB recency, periods -------------------
IOVA, PA = 0x4000_0000, 0x1_0000_0000


def stream_run(lookahead: bool, s: DmaStream, truth: bool = True) -> tuple[Any, ...]:
    hw = HardwareConfig.model_validate(
        yaml.safe_load(Path(preset_dir(), "vtd-incoherent.yaml").read_text()))
    machine = Machine(hw, seed=1, env=SimEnvironment(lookahead=lookahead))
    pt = PageTable("vtdss", vasz_lg2=48, top_level=3, features={"dma_incoherent"},
                   executor=machine.executor)
    pt.map(IOVA, PA, 64 << 10, Prot.READ | Prot.WRITE)

    def truth_of(_domain: int, iova: int) -> int | None:
        return pt.iova_to_phys(iova, view="peek")

    iommu = Iommu(machine, {1: "vtdss"}, truth=truth_of if truth else None)
    dev = DmaDevice(machine.env, "dev", domain=1, translator=iommu, dram=machine.dram,
                    workload=s)
    machine.env.run()
    assert dev.records is not None
    periods = dev.pipeline.streams[0].runs.periods if dev.pipeline is not None else 0
    return (machine.env.now, events_processed(machine.env), dev.stats(), machine.iotlb.stats(),
            machine.dram.stats(), list(machine.iotlb._array.items()),
            sorted((r.index, r.iova, r.issue, r.end, r.translation) for r in dev.records),
            [r.index for r in dev.records]), periods


@pytest.mark.parametrize("outstanding", [1, 4, 8])
@pytest.mark.parametrize("pattern", ["sequential", "random"])
@pytest.mark.parametrize("gap", [0, 37, 400])
def test_streams_request_by_request(outstanding: int, pattern: str, gap: int) -> None:
    """Every record (issue and end cycles, translation, completion order), the IOTLB's
    contents in recency order, the clock and the event count; periods were advanced."""
    for is_write in (False, True):
        s = DmaStream(IOVA, 64 << 10, 64, 3000, outstanding=outstanding, gap=gap,
                      pattern=pattern, is_write=is_write)  # type: ignore[arg-type]
        on, periods = stream_run(True, s, truth=is_write)
        off, _ = stream_run(False, s, truth=is_write)
        assert on == off
        assert periods > 0
