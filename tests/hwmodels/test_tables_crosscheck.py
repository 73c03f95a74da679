"""The real page-table operations run unchanged on timed cores.

Three CPUs map and unmap disjoint ranges of one x86_64 DMA-incoherent table while
jitter and interrupts vary the interleaving; replaying the order in which their
transactions took effect with the tables Interleaver gives the same results and the
same memory in both views.
"""

from __future__ import annotations

from iommusim.tables import DirectExecutor, Interleaver, PageTable, Prot
from iommusim.tables.transactions import ALL_KINDS

RW = Prot.READ | Prot.WRITE


def mixed(pt: PageTable, cpu: int):
    base = 0x4000_0000 * (cpu + 1)
    first = yield from pt.map_op(base, 0x1_0000_0000 + base, 2 << 20, RW)
    second = yield from pt.map_op(base + (4 << 20), 0x2_0000_0000, 64 << 10, RW)
    unmapped = yield from pt.unmap_op(base, 2 << 20)
    return first, second, unmapped


def test_map_and_unmap_on_timed_cores_match_the_interleaver(rig):
    for seed in range(3):
        m = rig.machine(
            seed=seed, trace=True,
            cpu={"count": 3, "jitter": 100, "interrupts": {"mean_interval": 2000, "duration": 700}},
            iommu={"write_buffer": {"enabled": True}},
        )
        pt = PageTable("x86_64", features={"dma_incoherent"}, executor=m.executor)
        assert m.invalidation.root(1) == (m.allocator.base, 3)  # attached at set-up
        procs = [core.start(mixed(pt, core.index), "mixed") for core in m.cpus]
        m.env.run()
        schedule = [
            int(r.component[3:])
            for r in m.tracer.records
            if r.component.startswith("cpu") and r.event in ALL_KINDS
        ]
        direct = DirectExecutor(two_views=True)
        twin = PageTable("x86_64", features={"dma_incoherent"}, executor=direct)
        results = Interleaver(direct).run([mixed(twin, i) for i in range(3)], schedule=schedule)
        assert [p.value for p in procs] == results == [(0, 0, 2 << 20)] * 3
        assert m.memory.cpu == direct.memory.cpu
        assert m.memory.hw == direct.memory.hw
        assert m.allocator.live_pages == direct.allocator.live_pages
        for cpu in range(3):
            iova = 0x4000_0000 * (cpu + 1) + (4 << 20) + 0x123
            assert pt.iova_to_phys(iova, view="hw") == 0x2_0000_0123
