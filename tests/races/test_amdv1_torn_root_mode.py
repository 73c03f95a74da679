"""amdv1-torn-root-mode: AMD v1's torn root/mode read (legacy_pt.md 2.10 item 1), fixed by
the 2025 seqcount (``amdv1_seqcount``) and absent from genpt.

io-pgtable AMD v1: ``increase_address_space`` stores the domain's root word, then its
mode word; ``alloc_pte`` reads mode, then root, with no lock. A mapper that loads the
old mode, is preempted, and loads the new root walks the new top as if it were the old
one: its page lands at the wrong level (the map returns 0, the hardware cannot
translate it, the device's DMA faults) or the walk meets the old top's pointer where it
expects another level and the map fails with -ENOMEM. With the seqcount the reader
retries; genpt amdv1 keeps top and level in one word read once.
"""

from __future__ import annotations

NAME = "amdv1-torn-root-mode"
SWITCH = "amdv1_seqcount"
COSTS = (("cpu.map.latency.mean", "cycles per map"),)


def check_clean(out) -> None:
    for metric in ("dma.faults", "cpu.map.invisible", "cpu.map.errors", "table.leaked_pages",
                   "table.bad_frees"):
        assert out.holding(metric, "> 0") == [], (out.sets, metric)


def test_torn_root_mode_read(races, seeds, record_property) -> None:
    """Fix off: the symptom; the seqcount on: clean; genpt amdv1 (which ignores the
    io-pgtable switch, so the file's ``amdv1_seqcount: false`` stays): clean."""
    off = races.run(NAME, seeds=seeds)
    on = races.run(NAME, [races.fix_on(SWITCH)], seeds=seeds)
    genpt = races.run(NAME, [races.genpt], seeds=seeds)
    races.report(record_property, SWITCH, off, on, COSTS)
    print(f"[{NAME}] table.implementation=genpt: symptom on "
          f"{len(genpt.symptomatic())}/{genpt.seeds} seeds")
    record_property("symptomatic_seeds_genpt", len(genpt.symptomatic()))
    races.assert_symptom(off)
    # The faults are DMAs to pages whose map returned 0 but sits at the wrong level.
    faulty = off.holding("dma.faults", "> 0")
    assert set(off.holding("cpu.map.invisible", "> 0")) >= set(faulty)
    assert off.holding("dma.faults.not_present", "> 0") == faulty
    # The other face of the same read: a legal map fails with -ENOMEM.
    assert off.holding("cpu.map.errors", "> 0")
    for side in (on, genpt):
        races.assert_clean(side)
        check_clean(side)
