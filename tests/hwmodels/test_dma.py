"""DMA devices: explicit request lists, streams, outstanding limits, records."""

from __future__ import annotations

import random

import pytest

from iommusim.hwmodels.dma import FAULT, OK, DmaDevice, DmaRequest, DmaStream


def device(rig, m, workload, pages=None, latency=30, name="dev0"):
    pages = {p: p + 0x100 for p in range(64)} if pages is None else pages
    tr = rig.StubTranslator(m.env, pages, latency)
    return DmaDevice(m.env, name, domain=1, translator=tr, dram=m.dram, workload=workload), tr


def test_explicit_requests_at_cycles_and_after_an_event(rig):
    m = rig.machine()
    go = m.env.event()
    reqs = [
        DmaRequest(0x1008, 64),
        DmaRequest(0x2000, 64, is_write=True, at=100),
        DmaRequest(0x9_9000, 8, at=50),  # not mapped: faults, no DRAM access
        DmaRequest(0x3000, 64, after=go, at=10),
    ]
    dev, tr = device(rig, m, reqs, pages={1: 0x101, 2: 0x102, 3: 0x103})

    def trigger():
        yield m.env.timeout(500)
        go.succeed()

    m.env.process(trigger())
    m.env.run()
    got = [(r.index, r.issue, r.end, r.translation.outcome, r.translation.pa) for r in dev.records]
    assert got == [
        (2, 50, 80, FAULT, None),
        (0, 0, 280, OK, 0x10_1008),
        (1, 100, 380, OK, 0x10_2000),
        (3, 500, 780, OK, 0x10_3000),
    ]
    assert tr.calls[1] == ("dev0", 1, 0x9_9000, 8, False)
    assert dev.records[0].translation.reason == "not_present"
    assert (m.dram.reads, m.dram.writes) == (2, 1)
    assert dev.done.triggered
    stats = dev.stats()
    assert (stats["requests"], stats["ok"], stats["faults"]) == (4, 3, 1)
    assert (stats["fault.not_present"], stats["path.iotlb"], stats["latency_max"]) == (1, 3, 280)


def test_stream_respects_outstanding_and_gap(rig):
    m = rig.machine()
    s = DmaStream(base=0x1000, length=0x1000, size=64, count=4, outstanding=2, gap=10, start=5)
    dev, _ = device(rig, m, s)
    m.env.run()
    got = sorted((r.index, r.iova, r.issue, r.end) for r in dev.records)
    # two in flight: 0 and 1 issue 10 apart; 2 waits for 0's slot, 3 for 1's
    assert got == [
        (0, 0x1000, 5, 285),
        (1, 0x1040, 15, 295),
        (2, 0x1080, 285, 565),
        (3, 0x10C0, 295, 575),
    ]


def test_sequential_stream_wraps_and_random_stream_is_seeded(rig):
    m = rig.machine()
    seq, _ = device(rig, m, DmaStream(base=0, length=128, size=64, count=3, outstanding=3))
    rnd, _ = device(
        rig, m, DmaStream(base=0x4000, length=0x4000, size=256, count=5, outstanding=5,
                          pattern="random"), name="dev1",
    )
    m.env.run()
    assert sorted((r.index, r.iova) for r in seq.records) == [(0, 0), (1, 64), (2, 0)]
    rng = random.Random("0/dev1")
    expected = [0x4000 + rng.randrange(64) * 256 for _ in range(5)]
    assert [r.iova for r in sorted(rnd.records, key=lambda r: r.index)] == expected


def test_stream_parameters_are_checked():
    with pytest.raises(ValueError):
        DmaStream(base=0, length=100, size=64, count=1)
    with pytest.raises(ValueError):
        DmaStream(base=0, length=128, size=64, count=1, outstanding=0)


def test_dma_and_walker_reads_contend_for_dram_channels(rig):
    m = rig.machine(dram={"channels": 1, "occupancy": 200})
    ends = []

    def walker():
        yield from m.port.read(0x8000)
        ends.append(m.env.now)

    m.env.process(walker())  # takes the channel at cycle 0, holds it until 200
    dev, _ = device(rig, m, [DmaRequest(0x1000, 64)], latency=0)
    m.env.run()
    assert ends == [250]
    assert dev.records[0].latency == 200 + 250
    assert (m.dram.channel_waits, m.dram.channel_wait_cycles) == (1, 200)
