"""Bad input of every kind: exit code 2, one located message per mistake, all of them
at once, and no output directory.

Each case is a scenario file (and possibly extra files or ``--set`` options) and the
exact problems expected: ``(file, line, key path, message fragment)``. The file may
be ``--set`` (no line) for command-line mistakes. The number of problems reported
must match, so nothing is missing and nothing is reported twice.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from iommusim.hwmodels.config import HardwareConfig, IommuConfig
from iommusim.scenarios import resolve
from iommusim.scenarios.schema import MapSpec, Op, Scenario

D = textwrap.dedent


def keys(model) -> str:
    """The "valid keys" list of a message (the schema may grow)."""
    return ", ".join(sorted(model.model_fields))


HEAD = """\
name: t
hardware: vtd-incoherent
table: {format: vtdss, vasz_lg2: 48, top_level: 3, features: [dma_incoherent]}
"""

CASES: dict[str, dict] = {
    # --- YAML itself ------------------------------------------------------------------
    "malformed-yaml": {
        "text": "name: t\ntable: {format: vtdss\ncpus: []\n",
        "problems": [("bad.yaml", 3, "", "invalid YAML: ")],
    },
    "malformed-yaml-indent": {
        "text": "name: t\n  table: x\n",
        "problems": [("bad.yaml", 2, "", "invalid YAML: mapping values are not allowed here")],
    },
    "top-level-list": {
        "text": "- name: t\n- table: {}\n",
        "problems": [("bad.yaml", 1, "", "the file must be a YAML mapping of keys")],
    },
    "top-level-scalar": {
        "text": "just some words\n",
        "problems": [("bad.yaml", 1, "", "the file must be a YAML mapping of keys")],
    },
    "empty-file": {
        "text": "",
        "problems": [("bad.yaml", 1, "", "the file must be a YAML mapping of keys")],
    },
    "duplicate-keys": {
        "text": HEAD + "name: u\ncpus:\n  - name: cpu0\n    start: 1\n    start: 2\n",
        "problems": [
            ("bad.yaml", 4, "name", "duplicate key"),
            ("bad.yaml", 8, "cpus[0].start", "duplicate key"),
        ],
    },
    # --- structure --------------------------------------------------------------------
    "unknown-keys-at-every-depth": {
        "text": D("""\
            name: t
            tabel: {format: vtdss}
            table: {format: vtdss, vasz_lg2: 48, top_levle: 3, features: [dma_incoherent]}
            kernel:
              fixes: {flush_done_sw_bit: false, flush_done_sw_bti: true}
              alloc_fault: {fail_nth: 3}
            cpus:
              - name: cpu0
                strat: 4
                ops:
                  - map: {iova: 0x40000000, pa: 0x100000000, size: 4K, prto: rw}
                  - repeat: {count: 2, stride: 4K, ops: [{delay: 3, dleay: 4}]}
            devices:
              - name: d
                stream: {region: {base: 0, size: 4K, szie: 3}, count: 1}
            run: {seed: 3}
            """),
        "problems": [
            ("bad.yaml", 2, "tabel", "unknown key 'tabel' (did you mean 'table'?); valid keys: "
             + keys(Scenario)),
            ("bad.yaml", 3, "table.top_levle", "unknown key 'top_levle' (did you mean "
             "'top_level'?)"),
            ("bad.yaml", 5, "kernel.fixes.flush_done_sw_bti", "(did you mean "
             "'flush_done_sw_bit'?)"),
            ("bad.yaml", 6, "kernel.alloc_fault", "(did you mean 'alloc_faults'?)"),
            ("bad.yaml", 9, "cpus[0].strat", "(did you mean 'start'?)"),
            ("bad.yaml", 11, "cpus[0].ops[0].map.prto", "(did you mean 'prot'?); valid keys: "
             + keys(MapSpec)),
            ("bad.yaml", 12, "cpus[0].ops[1].repeat.ops[0].dleay", "(did you mean 'delay'?)"),
            ("bad.yaml", 15, "devices[0].stream.region.szie", "(did you mean 'size'?)"),
            ("bad.yaml", 16, "run.seed", "(did you mean 'seeds'?)"),
        ],
    },
    "unknown-op-kinds": {
        "text": HEAD + D("""\
            cpus:
              - name: cpu0
                ops:
                  - frobnicate: 3
                  - mapp: {iova: 0, pa: 0, size: 4K}
                  - {}
                  - {map: {iova: 0, pa: 0, size: 4K}, unmap: {iova: 0, size: 4K}}
            """),
        "problems": [
            ("bad.yaml", 7, "cpus[0].ops[0].frobnicate", "unknown key 'frobnicate'; valid keys: "
             + keys(Op)),
            ("bad.yaml", 8, "cpus[0].ops[1].mapp", "unknown key 'mapp' (did you mean 'map'?)"),
            ("bad.yaml", 9, "cpus[0].ops[2]", "an operation needs exactly one of: map, unmap"),
            ("bad.yaml", 10, "cpus[0].ops[3]", "an operation needs exactly one of"),
        ],
    },
    "wrong-types": {
        "text": D("""\
            name: [t]
            hardware: 42
            table: {format: vtdss, vasz_lg2: "48", features: dma_incoherent}
            kernel: {debug: "yes"}
            cpus: {name: cpu0}
            devices:
              - name: d
                dma: [{iova: "0x1000", access: rw}]
                follow: {cpu: 3}
            run: {seeds: "3"}
            """),
        "problems": [
            ("bad.yaml", 1, "name", "input should be a valid string (got ['t'])"),
            ("bad.yaml", 2, "hardware", "input should be a valid string (got 42)"),
            ("bad.yaml", 2, "hardware",
             "no such hardware file; presets: amd-v1, i7-12700, riscv-iommu"),
            ("bad.yaml", 3, "table.vasz_lg2", "input should be a valid integer (got '48')"),
            ("bad.yaml", 3, "table.features", "input should be a valid list"),
            ("bad.yaml", 4, "kernel.debug", "input should be a valid boolean (got 'yes')"),
            ("bad.yaml", 5, "cpus", "input should be a valid list"),
            ("bad.yaml", 8, "devices[0].dma[0].iova", "input should be a valid integer"),
            ("bad.yaml", 8, "devices[0].dma[0].access", "'rw' is not one of read, write"),
            ("bad.yaml", 9, "devices[0].follow.cpu", "input should be a valid string (got 3)"),
            ("bad.yaml", 10, "run.seeds", "input should be a valid list"),
        ],
    },
    "impossible-values": {
        "text": HEAD + D("""\
            kernel: {alloc_faults: {fail_nth: 0, probability: 2}}
            cpus:
              - name: cpu0
                start: -5
                ops:
                  - map: {iova: 0x40000000, pa: 0x100000000, size: 0}
                  - map: {iova: 0x40000000, pa: 0x100000000, size: -4096}
                  - map: {iova: 0x40000000, pa: 0x100000000, size: 4Q}
                  - map: {iova: -1, pa: 0x100000000, size: 4K, prot: rwx}
                  - delay: -3
            devices:
              - name: d
                stream: {region: {base: 0, size: 4K}, count: 0, outstanding: 0, pattern: zigzag}
            run: {seeds: 0, until: 0}
            """),
        "problems": [
            ("bad.yaml", 4, "kernel.alloc_faults.fail_nth", "greater than or equal to 1 (got 0)"),
            ("bad.yaml", 4, "kernel.alloc_faults.probability", "less than or equal to 1 (got 2)"),
            ("bad.yaml", 7, "cpus[0].start", "greater than or equal to 0 (got -5)"),
            ("bad.yaml", 9, "cpus[0].ops[0].map.size", "greater than 0 (got 0)"),
            ("bad.yaml", 10, "cpus[0].ops[1].map.size", "greater than 0 (got -4096)"),
            ("bad.yaml", 11, "cpus[0].ops[2].map.size", "'4Q' is not a size; use an integer or "
             "4K, 2M, 1G"),
            ("bad.yaml", 12, "cpus[0].ops[3].map.iova", "greater than or equal to 0 (got -1)"),
            ("bad.yaml", 12, "cpus[0].ops[3].map.prot", "'rwx' is not a protection"),
            ("bad.yaml", 13, "cpus[0].ops[4].delay", "greater than or equal to 0 (got -3)"),
            ("bad.yaml", 16, "devices[0].stream.pattern", "'zigzag' is not one of sequential, "
             "random"),
            ("bad.yaml", 16, "devices[0].stream.count", "greater than or equal to 1 (got 0)"),
            ("bad.yaml", 16, "devices[0].stream.outstanding", "greater than or equal to 1"),
            ("bad.yaml", 17, "run.seeds", "seeds must be at least 1, got 0"),
            ("bad.yaml", 17, "run.until", "greater than or equal to 1 (got 0)"),
        ],
    },
    # --- names the table knows --------------------------------------------------------
    "unknown-format": {
        "text": "name: t\ntable: {format: vtds}\n",
        "problems": [("bad.yaml", 2, "table.format", "'vtds' is not one of amdv1, amdv1_mock, "
                      "x86_64, vtdss, riscv64, armv8 (did you mean 'vtdss'?)")],
    },
    "unknown-feature": {
        "text": "name: t\ntable: {format: vtdss, features: [dma_incoherent, flush_rnage]}\n",
        "problems": [("bad.yaml", 2, "table.features[1]", "unknown feature 'flush_rnage'; "
                      "valid features: dma_incoherent, dynamic_top, flush_range")],
    },
    "unknown-fix": {
        "text": HEAD + "kernel: {fixes: {flush_done: false}}\n",
        "problems": [("bad.yaml", 4, "kernel.fixes.flush_done", "unknown key 'flush_done' (did "
                      "you mean 'flush_done_sw_bit'?); valid keys: amdv1_seqcount, cache_flush")],
    },
    "table-cannot-be-created": {
        "text": "name: t\ntable: {format: x86_64, top_level: 2}\n",
        "problems": [("bad.yaml", 2, "table", "the x86_64 table cannot be created")],
    },
    # --- addresses and sizes ----------------------------------------------------------
    "addresses-and-page-sizes": {
        "text": HEAD + D("""\
            cpus:
              - name: cpu0
                ops:
                  - map: {iova: 0x40000800, pa: 0x100000100, size: 6K}
                  - map: {iova: 0x1000000000000, pa: 0x100000000, size: 4K}
                  - map: {iova: 0xfffffffff000, pa: 0x100000000, size: 8K}
                  - unmap: {iova: 0x40000800, size: 4K}
                  - map_range_random: {count: 2, sizes: [4K, 12K, 8K],
                                       region: {base: 0x40000100, size: 1M}}
                  - map_range_random: {count: 2, sizes: [4K], region: {base: 0xfffff0000000,
                                                                         size: 1G}}
                  - repeat: {count: 3, stride: 6K, ops: [{unmap: {iova: 0, size: 4K}}]}
                  - repeat:
                      count: 2
                      stride: 0x1000000000000
                      ops: [{map: {iova: 0x40000000, pa: 0, size: 4K}}]
            devices:
              - name: d
                dma: [{iova: 0x40000ff0, size: 64}]
                stream: {region: {base: 0x40000000, size: 1M}, count: 3, size: 96}
            """),
        "problems": [
            ("bad.yaml", 7, "cpus[0].ops[0].map.iova", "0x40000800 is not aligned to the "
             "smallest page (0x1000)"),
            ("bad.yaml", 7, "cpus[0].ops[0].map.pa", "0x100000100 is not aligned"),
            ("bad.yaml", 7, "cpus[0].ops[0].map.size", "0x1800 is not aligned"),
            ("bad.yaml", 8, "cpus[0].ops[1].map", "0x1000000000000+0x1000 lies outside the "
             "table (last IOVA 0xffffffffffff)"),
            ("bad.yaml", 9, "cpus[0].ops[2].map", "0xfffffffff000+0x2000 lies outside"),
            ("bad.yaml", 10, "cpus[0].ops[3].unmap.iova", "0x40000800 is not aligned"),
            ("bad.yaml", 11, "cpus[0].ops[4].map_range_random.sizes[1]", "0x3000 is not a page "
             "size of this table"),
            ("bad.yaml", 11, "cpus[0].ops[4].map_range_random.sizes[2]", "0x2000 is not a page "
             "size of this table"),
            ("bad.yaml", 12, "cpus[0].ops[4].map_range_random.region.base", "0x40000100 is "
             "not aligned"),
            ("bad.yaml", 13, "cpus[0].ops[5].map_range_random.region", "0xfffff0000000+"
             "0x40000000 lies outside the table"),
            ("bad.yaml", 15, "cpus[0].ops[6].repeat.stride", "0x1800 is not aligned"),
            # the second repetition is outside, the first is not
            ("bad.yaml", 19, "cpus[0].ops[7].repeat.ops[0].map", "0x1000040000000+0x1000 lies "
             "outside"),
            ("bad.yaml", 22, "devices[0].dma[0]", "a DMA must not cross a page boundary"),
            ("bad.yaml", 23, "devices[0].stream.size", "a request size must be a power of two "
             "<= 0x1000"),
            ("bad.yaml", 23, "devices[0].stream.region", "the region must be aligned to the "
             "request size"),
        ],
    },
    "no-dirty-tracking": {
        "text": "name: t\ntable: {format: x86_64}\ncpus:\n  - name: c\n    ops:\n"
                "      - read_and_clear_dirty: {iova: 0, size: 4K}\n",
        "problems": [("bad.yaml", 6, "cpus[0].ops[0].read_and_clear_dirty", "the x86_64 format "
                      "has no dirty tracking")],
    },
    # --- events and names -------------------------------------------------------------
    "events-nobody-signals": {
        "text": HEAD + D("""\
            cpus:
              - name: cpu0
                after: nobody
                ops:
                  - wait: warmed
                  - repeat: {count: 2, stride: 4K, ops: [{wait: inner}]}
                  - signal: warm
            devices:
              - name: d
                after: wram
                dma: [{iova: 0, after: mapped}]
                stream: {after: x, region: {base: 0, size: 4K}, count: 1}
            """),
        "problems": [
            ("bad.yaml", 6, "cpus[0].after", "nobody signals 'nobody'"),
            ("bad.yaml", 8, "cpus[0].ops[0].wait", "nobody signals 'warmed' (did you mean "
             "'warm'?)"),
            ("bad.yaml", 9, "cpus[0].ops[1].repeat.ops[0].wait", "nobody signals 'inner'"),
            ("bad.yaml", 13, "devices[0].after", "nobody signals 'wram' (did you mean 'warm'?)"),
            ("bad.yaml", 14, "devices[0].dma[0].after", "nobody signals 'mapped'"),
            ("bad.yaml", 15, "devices[0].stream.after", "nobody signals 'x'"),
        ],
    },
    "duplicate-names": {
        "text": HEAD + D("""\
            cpus:
              - name: cpu0
              - name: cpu1
              - name: cpu0
            devices:
              - name: cpu1
                follow: {cpu: cpu7}
            """),
        "problems": [
            ("bad.yaml", 10, "devices[0].follow.cpu", "no CPU named 'cpu7'"),
            ("bad.yaml", 7, "cpus[2].name", "'cpu0' is already the name of cpus[0]"),
            ("bad.yaml", 9, "devices[0].name", "'cpu1' is already the name of cpus[1]"),
        ],
    },
    "more-cpus-than-the-hardware": {
        "text": HEAD + "cpus: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}]\n",
        "problems": [("bad.yaml", 4, "cpus", "5 CPUs in the scenario, the hardware has 4")],
    },
    "more-cpus-than-the-hardware-after-set": {
        "text": HEAD + "cpus: [{name: a}, {name: b}]\n",
        "args": ["--set", "cpu.count=1"],
        "problems": [("bad.yaml", 4, "cpus", "2 CPUs in the scenario, the hardware has 1")],
    },
    # --- expectations -----------------------------------------------------------------
    "bad-expect": {
        "text": HEAD + D("""\
            expect:
              dma.fault: "> 0"
              dma.faults: "about 3"
              iotlb.hits: {condition: "> 1", seeds: most}
              iotlb.misses: {seeds: any}
              walker.walks: {condition: "> 1", seeds: 150%}
              walker.merged: {condition: "> 1", seeds: 50}
              cpu.mapp.count: "> 1"
            """),
        "problems": [
            ("bad.yaml", 7, "expect.iotlb.hits.seeds", "'most' is not a number of seeds; use "
             "all, any or a percentage such as 50%"),
            ("bad.yaml", 8, "expect.iotlb.misses.condition", "missing required key 'condition'"),
            ("bad.yaml", 9, "expect.walker.walks.seeds", "'150%' is not a number of seeds"),
            ("bad.yaml", 10, "expect.walker.merged.seeds", "input should be a valid string "
             "(got 50)"),
        ],
    },
    "bad-expect-metric-and-condition": {
        "text": HEAD + D("""\
            expect:
              dma.fault: "> 0"
              dma.faults: "about 3"
              cpu.mapp.count: "> 1"
              dma.latency.p99: "=> 1"
            """),
        "problems": [
            ("bad.yaml", 5, "expect.dma.fault", "unknown metric 'dma.fault' (did you mean "
             "'dma.faults'?)"),
            ("bad.yaml", 6, "expect.dma.faults", "'about 3' is not a condition; write an "
             "operator and a number, e.g. \"> 0\" (operators: == != <= >= < >)"),
            ("bad.yaml", 7, "expect.cpu.mapp.count", "unknown metric 'cpu.mapp.count' (did "
             "you mean 'cpu.map.count'?)"),
            ("bad.yaml", 8, "expect.dma.latency.p99", "'=> 1' is not a condition"),
        ],
    },
    # --- --set ------------------------------------------------------------------------
    "set-without-equals": {
        "text": HEAD,
        "args": ["--set", "iommu.iotlb.entries"],
        "problems": [("--set", None, "", "expected KEY=VALUE, got 'iommu.iotlb.entries'")],
    },
    "set-unknown-keys-and-wrong-types": {
        "text": HEAD + "cpus: [{name: cpu0}]\n",
        "args": [
            "--set", "iommu.iotlb.entires=128",
            "--set", "nme=x",
            "--set", "iommu.iotlb.entries=many",
            "--set", "cpus.0.start=-1",
            "--set", "cpus.3.start=1",
            "--set", "devices.0.start=1",
            "--set", "kernel.fixes.flush_done_sw_bit=maybe",
            "--set", "expect.dma.faults=> x",
        ],
        "problems": [
            ("--set", None, "iommu.iotlb.entires=128", "unknown key 'entires' (did you mean "
             "'entries'?)"),
            ("--set", None, "nme=x", "unknown key 'nme' (did you mean 'name'?)"),
            ("--set", None, "iommu.iotlb.entries=many", "input should be a valid integer "
             "(got 'many')"),
            ("--set", None, "cpus.0.start=-1", "greater than or equal to 0 (got -1)"),
            ("--set", None, "cpus.3.start=1", "no list item '3' at cpus"),
            ("--set", None, "devices.0.start=1", "no list item '0' at devices"),
            ("--set", None, "kernel.fixes.flush_done_sw_bit=maybe", "input should be a valid "
             "boolean (got 'maybe')"),
        ],
    },
    "set-into-a-value": {
        "text": HEAD,
        "args": ["--set", "iommu.link.x=1", "--set", "table.format.x=1"],
        "problems": [
            ("--set", None, "table.format.x=1", "table.format is not a mapping"),
            ("--set", None, "iommu.link.x=1", "iommu.link is not a mapping"),
        ],
    },
    "set-bad-condition": {
        "text": HEAD + "expect: {dma.faults: '== 0'}\n",
        "args": ["--set", "expect.dma.faults.seeds=most"],
        "problems": [("--set", None, "expect.dma.faults.seeds=most", "expect.dma.faults is "
                      "not a mapping")],
    },
    "set-causes-semantic-problems": {
        "text": HEAD + D("""\
            cpus:
              - name: cpu0
                ops:
                  - map: {iova: 0x40000000, pa: 0x100000000, size: 4K}
                  - signal: mapped
            expect: {dma.faults: "== 0"}
            """),
        "args": [
            "--set", "expect.dma.faults=> x",
            "--set", "expect.dma.fault=> 1",
            "--set", "cpus.0.after=nobody",
            "--set", "cpus.0.ops.0.map.iova=0x40000800",
        ],
        "problems": [
            ("--set", None, "cpus.0.ops.0.map.iova=0x40000800", "0x40000800 is not aligned"),
            ("--set", None, "cpus.0.after=nobody", "nobody signals 'nobody'"),
            ("--set", None, "expect.dma.faults=> x", "'> x' is not a condition"),
            ("--set", None, "expect.dma.fault=> 1", "unknown metric 'dma.fault' (did you "
             "mean 'dma.faults'?)"),
        ],
    },
    "set-unknown-feature": {
        "text": HEAD,
        "args": ["--set", "table.features=[dma_incoherent, flush_rnage]"],
        "problems": [("--set", None, "table.features=[dma_incoherent, flush_rnage]",
                      "unknown feature 'flush_rnage'")],
    },
    # --- overrides: and sweep: ----------------------------------------------------------
    "bad-overrides": {
        "text": D("""\
            name: t
            overrides:
              iommu.iotlb.entrys: 128
              cpu.jitter: -3
              cpu.count.x: 1
              iommu.link: "20"
              run.seeds: 3
            table: {format: vtdss}
            """),
        "problems": [
            ("bad.yaml", 5, "overrides.cpu.count.x", "cpu.count is not a mapping"),
            ("bad.yaml", 4, "overrides.cpu.jitter", "greater than or equal to 0 (got -3)"),
            ("bad.yaml", 3, "overrides.iommu.iotlb.entrys", "unknown key 'entrys' (did you "
             "mean 'entries'?)"),
            ("bad.yaml", 6, "overrides.iommu.link", "input should be a valid integer (got "
             "'20')"),
            ("bad.yaml", 7, "overrides.run.seeds", "unknown key 'run'; valid keys: "
             + keys(HardwareConfig)),
        ],
    },
    "set-into-overrides": {
        "text": HEAD,
        "args": ["--set", "overrides.cpu.jitter=-2"],
        "problems": [("--set", None, "overrides.cpu.jitter=-2", "greater than or equal to 0")],
    },
    "bad-sweep-values": {
        "text": HEAD + D("""\
            cpus: [{name: cpu0}]
            sweep:
              iommu.iotlb.entries: [64, -1, 100]
              iommu.iotlb.ways: [0, 8]
              kernel.fixes.flush_done_sw_bit: [true, maybe]
              cpus.3.start: [1]
              cpus.0.strat: [1]
            """),
        "problems": [
            ("bad.yaml", 9, "sweep.cpus.3.start", "no list item '3' at cpus"),
            ("bad.yaml", 10, "sweep.cpus.0.strat", "unknown key 'strat' (did you mean 'start'?)"),
            ("bad.yaml", 8, "sweep.kernel.fixes.flush_done_sw_bit", "input should be a valid "
             "boolean (got 'maybe')"),
            ("bad.yaml", 6, "sweep.iommu.iotlb.entries", "greater than or equal to 1 (got -1)"),
            ("bad.yaml", 6, "sweep.iommu.iotlb.entries", "entries (100) must be a multiple "
             "of ways (8)"),
        ],
    },
    "sweep-causes-semantic-problems": {
        "text": HEAD + D("""\
            cpus:
              - name: cpu0
                ops:
                  - map: {iova: 0x40000000, pa: 0x100000000, size: 4K}
            sweep:
              cpus.0.ops.0.map.size: [4K, 6K]
              cpus.0.after: [nobody]
            """),
        "problems": [
            ("bad.yaml", 9, "sweep.cpus.0.ops.0.map.size", "0x1800 is not aligned"),
            ("bad.yaml", 10, "sweep.cpus.0.after", "nobody signals 'nobody'"),
        ],
    },
    "empty-sweep-list": {
        "text": HEAD + "sweep: {iommu.iotlb.entries: []}\n",
        "problems": [("bad.yaml", 4, "sweep.iommu.iotlb.entries", "at least 1 item")],
    },
    # --- files ------------------------------------------------------------------------
    "missing-hardware-preset": {
        "text": "name: t\ndescription: x\nhardware: vtd-incohernet\ntable: {format: vtdss}\n",
        "problems": [("bad.yaml", 3, "hardware", "no such hardware file; presets: amd-v1, "
                      "i7-12700, riscv-iommu, smmuv3-noncoherent, vtd-coherent, "
                      "vtd-incoherent")],
    },
    "missing-hardware-file": {
        "text": "name: t\nhardware: hw/mine.yaml\ntable: {format: vtdss}\n",
        "problems": [("bad.yaml", 2, "hardware", "no such hardware file")],
    },
    "bad-hardware-file": {
        "text": "name: t\nhardware: hw.yaml\noverrides: {dram.read: -1}\ntable: {format: vtdss}\n",
        "files": {"hw.yaml": """\
            clock_ghz: 0
            cpu: {count: 0, laod_hit: 3}
            cache: {line_bytes: 48}
            iommu:
              iotlb: {entries: 10, ways: 4, replacement: fifo}
              walk_cache: {entries: {3: 4, 7: 2}}
            """},
        "problems": [
            ("hw.yaml", 1, "clock_ghz", "input should be greater than 0 (got 0)"),
            ("hw.yaml", 2, "cpu.count", "greater than or equal to 1 (got 0)"),
            ("hw.yaml", 2, "cpu.laod_hit", "unknown key 'laod_hit' (did you mean 'load_hit'?)"),
            ("hw.yaml", 3, "cache.line_bytes", "48 is not one of 32, 64, 128"),
            ("hw.yaml", 5, "iommu.iotlb.replacement", "'fifo' is not one of lru, rr, random"),
            ("hw.yaml", 6, "iommu.walk_cache.entries[7].[key]", "less than or equal to 5"),
            ("bad.yaml", 3, "overrides.dram.read", "greater than or equal to 0 (got -1)"),
        ],
    },
    "duplicate-key-in-hardware-file": {
        "text": "name: t\nhardware: ./hw.yaml\ntable: {format: vtdss}\n",
        "files": {"hw.yaml": "clock_ghz: 2.5\nclock_ghz: 3\n"},
        "problems": [("hw.yaml", 2, "clock_ghz", "duplicate key")],
    },
    # --- everything at once -------------------------------------------------------------
    "all-problems-at-once": {
        "text": D("""\
            name: t
            overrides: {iommu.walker_slots: 0}
            table: {format: vtdss, vasz_lg2: 480}
            kernel: {fixes: {cache_flsh: false}}
            cpus:
              - name: cpu0
                ops:
                  - map: {iova: 0x40000000, pa: 0x100000000, size: 4K, prot: x}
            devices:
              - name: nic0
                stream: {region: {base: 0, size: 1M}, count: 1, sise: 64}
            run: {until: -1}
            """),
        "args": ["--set", "cpu.jitter=-1", "--set", "name=", "--set", "novel=1"],
        "problems": [
            ("bad.yaml", 3, "table.vasz_lg2", "less than or equal to 64 (got 480)"),
            ("bad.yaml", 4, "kernel.fixes.cache_flsh", "(did you mean 'cache_flush'?)"),
            ("bad.yaml", 8, "cpus[0].ops[0].map.prot", "'x' is not a protection"),
            ("bad.yaml", 11, "devices[0].stream.sise", "(did you mean 'size'?)"),
            ("bad.yaml", 12, "run.until", "greater than or equal to 1 (got -1)"),
            ("--set", None, "name=", "at least 1 character"),
            ("--set", None, "novel=1", "unknown key 'novel'"),
            ("bad.yaml", 2, "overrides.iommu.walker_slots", "greater than or equal to 1"),
            ("--set", None, "cpu.jitter=-1", "greater than or equal to 0 (got -1)"),
        ],
    },
}


def problem_matches(line: str, source: str, lineno: int | None, path: str, text: str) -> bool:
    where = f"{source}:{lineno}" if lineno else source
    head = f"{where}: {path}: " if path else f"{where}: "
    return line.startswith(head) and text in line[len(head) :]


def check_problems(lines: list[str], expected: list[tuple], folder: Path) -> None:
    # Sources are printed as the path given on the command line (or found from it).
    def shown(source: str) -> str:
        return source if source == "--set" else str(folder / source)

    assert len(lines) == len(expected), "\n".join(lines)
    for source, lineno, path, text in expected:
        matching = [ln for ln in lines if problem_matches(ln, shown(source), lineno, path, text)]
        assert matching, f"no problem {source}:{lineno}: {path}: ...{text}... in\n" + "\n".join(
            lines
        )


def write_case(case: dict, folder: Path) -> Path:
    folder.mkdir()
    for name, text in case.get("files", {}).items():
        (folder / name).write_text(textwrap.dedent(text))
    path = folder / "bad.yaml"
    path.write_text(case["text"])
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_file_run(name, cli, tmp_path):
    case = CASES[name]
    path = write_case(case, tmp_path / "case")
    out = tmp_path / "out"
    r = cli("run", path, *case.get("args", []), "--out", out, "--jobs", "1", "--quiet")
    assert r.rc == 2, r.err
    assert r.out == ""
    assert "Traceback" not in r.err
    problems = r.problems()
    assert r.err.startswith(f"iommusim: {len(problems)} problem(s) in the input:\n")
    check_problems(problems, case["problems"], tmp_path / "case")
    assert not out.exists()
    assert not (tmp_path / "results").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


@pytest.mark.parametrize("name", [n for n in CASES if "args" not in CASES[n]])
def test_bad_file_validate(name, cli, tmp_path):
    """``validate`` reports exactly what ``run`` reports."""
    case = CASES[name]
    path = write_case(case, tmp_path / "case")
    r = cli("validate", path)
    assert r.rc == 2
    assert "valid scenario file" not in r.out
    check_problems(r.problems(), case["problems"], tmp_path / "case")


def test_missing_scenario_file(cli, tmp_path):
    r = cli("run", tmp_path / "nope.yaml", "--out", tmp_path / "out")
    assert r.rc == 2
    assert r.problems() == [f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"]
    assert not (tmp_path / "out").exists()
    r = cli("validate", "nope.yaml")
    assert (r.rc, r.problems()) == (2, ["nope.yaml: cannot read: No such file or directory"])


def test_unknown_catalog_name(cli, tmp_path):
    r = cli("run", "no-such-scenario")
    assert r.rc == 2
    (problem,) = r.problems()
    assert problem.startswith("no-such-scenario: no such file or catalog scenario (catalog: ")
    assert "shared-level-flush" in problem
    assert list(tmp_path.iterdir()) == []


def test_scenario_file_is_a_directory(cli, tmp_path):
    (tmp_path / "d.yaml").mkdir()
    r = cli("validate", tmp_path / "d.yaml")
    assert r.rc == 2
    assert "cannot read" in r.problems()[0]


def test_bad_preset_file(cli, tmp_path, monkeypatch):
    """A broken preset in the presets folder: its own lines are blamed."""
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "broken.yaml").write_text("# a broken preset\niommu:\n  walker_slot: 8\n")
    monkeypatch.setattr(resolve, "preset_dir", lambda: presets)
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nhardware: broken\ntable: {format: vtdss}\n")
    r = cli("run", path, "--out", tmp_path / "out")
    assert r.rc == 2
    assert r.problems() == [
        f"{presets / 'broken.yaml'}:3: iommu.walker_slot: unknown key 'walker_slot' (did you "
        f"mean 'walker_slots'?); valid keys: {keys(IommuConfig)}"
    ]
    assert not (tmp_path / "out").exists()
    r = cli("show-config", "broken")
    assert r.rc == 2 and "walker_slot" in r.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
        (["run", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        (["run", "--seed", "1", "--seeds", "2"], "not allowed with argument"),
        (["run", "--jobs", "0"], "argument --jobs: must be at least 1, got 0"),
        (["run", "--jobs", "x"], "argument --jobs: invalid positive_int value: 'x'"),
        (["schema", "plots"], "argument kind: invalid choice: 'plots'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_command_line(args, message, cli, tmp_path):
    r = cli(*args)
    assert r.rc == 2
    assert message in r.err
    assert list(tmp_path.iterdir()) == []
