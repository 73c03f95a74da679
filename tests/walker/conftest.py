"""Shared helpers for the walker tests: one machine, one page table, one IOMMU.

``Sim`` wires a ``Machine`` (hardware config overrides as nested dicts), a
``PageTable`` built in the machine's memory at cycle 0 and attached to the
invalidation queue's root registers, and an ``Iommu`` whose ``truth`` is the CPU
view of that table (``iova_to_phys(view="peek")``). Every helper runs the simulation
to quiescence (``env.run()``: nothing left but the idle invalidation queue), so a
test reads as a sequence of steps, each starting at ``env.now``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any

import pytest
import simpy

from iommusim.hwmodels.config import HardwareConfig
from iommusim.hwmodels.dma import DmaDevice, DmaRecord, DmaRequest, DmaStream
from iommusim.hwmodels.machine import Machine
from iommusim.tables import DriverPolicy, PageTable, Prot
from iommusim.tables.walk import WalkStep
from iommusim.walker import Iommu

RW = Prot.READ | Prot.WRITE
DOMAIN = 1


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A deep merge of nested config dicts (``over`` wins)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


class Sim:
    """A machine with one domain (``DOMAIN``) of format ``fmt`` behind the IOMMU."""

    def __init__(
        self,
        fmt: str,
        *,
        coherent: bool = True,
        hw: Mapping[str, Any] | None = None,
        features: Iterable[str] = (),
        fixes: Mapping[str, bool] | None = None,
        vasz: int | None = None,
        top_level: int | None = None,
        driver: DriverPolicy | None = None,
        trace: bool = False,
        seed: int = 1,
    ) -> None:
        config = merge({"iommu": {"coherent_walk": coherent}}, hw or {})
        self.config = HardwareConfig.model_validate(config)
        self.m = Machine(self.config, seed=seed, trace=trace)
        self.env = self.m.env
        self.pt = PageTable(
            fmt,
            vasz_lg2=vasz,
            top_level=top_level,
            features=features,
            fixes=fixes,
            executor=self.m.executor,
            domain=DOMAIN,
            driver=driver,
        )
        self.iommu = Iommu(self.m, {DOMAIN: fmt}, truth=self.truth)
        self._devices = 0

    # --- the software side ---------------------------------------------------------------
    def truth(self, domain: int, iova: int) -> int | None:
        return self.pt.iova_to_phys(iova, view="peek")

    def cpu(self, op: Generator[Any, Any, Any], label: str = "op", cpu: int = 0) -> Any:
        """Run a table operation on a CPU core to completion, then to quiescence."""
        proc = self.m.cpus[cpu].start(op, label)
        self.env.run()
        assert proc.triggered
        return proc.value

    def map(self, iova: int, pa: int, size: int, prot: int = RW) -> None:
        ret = self.cpu(self.pt.map_op(iova, pa, size, prot), "map")
        assert ret == 0, f"map {iova:#x}+{size:#x} -> {ret}"

    def unmap(self, iova: int, size: int) -> int:
        return self.cpu(self.pt.unmap_op(iova, size), "unmap")

    def steps(self, iova: int) -> list[WalkStep]:
        """The software walk of ``iova`` in the CPU view, top to leaf."""
        return self.pt.walk(iova, view="peek")

    # --- the device side -----------------------------------------------------------------
    def device(self, workload: Sequence[DmaRequest] | DmaStream, seed: int = 0) -> DmaDevice:
        """A new DMA device of the domain, started now (not run)."""
        self._devices += 1
        return DmaDevice(
            self.env,
            f"dev{self._devices}",
            domain=DOMAIN,
            translator=self.iommu,
            dram=self.m.dram,
            workload=workload,
            seed=seed,
            tracer=self.m.tracer,
        )

    def dmas(self, requests: Sequence[DmaRequest]) -> list[DmaRecord]:
        """Issue requests from one device, run to quiescence; records in request order."""
        dev = self.device(requests)
        self.env.run()
        assert dev.done.triggered
        return sorted(dev.records, key=lambda r: r.index)

    def dma(self, iova: int, write: bool = False, size: int = 8) -> DmaRecord:
        return self.dmas([DmaRequest(iova, size, write)])[0]

    def walked(self, iova: int, write: bool = False) -> DmaRecord:
        """A DMA with an empty IOTLB (so the walker decodes the items)."""
        self.m.iotlb.invalidate_all()
        return self.dma(iova, write)

    # --- observation ---------------------------------------------------------------------
    def port_reads(self) -> list[int]:
        """The addresses the walker read, in order (needs ``trace=True``)."""
        assert self.m.tracer is not None
        return [rec.fields["pa"] for rec in self.traced("iommu.port", "read")]

    def at(self, cycle: int, fn: Callable[[], Any]) -> simpy.Process:
        """Call ``fn`` at ``cycle`` (a process)."""

        def proc() -> Generator[simpy.Event, Any, Any]:
            yield self.env.timeout(cycle - self.env.now)
            return fn()

        return self.env.process(proc())

    def when(
        self, cond: Callable[[], bool], fn: Callable[[], Any], limit: int = 100_000
    ) -> simpy.Process:
        """Call ``fn`` in the first cycle at which ``cond()`` holds (polled every cycle,
        for at most ``limit`` cycles)."""

        def proc() -> Generator[simpy.Event, Any, Any]:
            end = self.env.now + limit
            while not cond():
                assert self.env.now < end, "condition never held"
                yield self.env.timeout(1)
            return fn()

        return self.env.process(proc())

    def on_trace(
        self, component: str, event: str, fn: Callable[[Any], Any], **match: Any
    ) -> simpy.Process:
        """Call ``fn(record)`` once, on the first trace record of ``component``/``event``
        whose fields include ``match`` (polled every cycle, for at most 100000 cycles;
        needs ``trace=True``)."""
        tracer = self.m.tracer
        assert tracer is not None

        def proc() -> Generator[simpy.Event, Any, Any]:
            seen = 0
            end = self.env.now + 100_000
            while True:
                assert self.env.now < end, f"no {component} {event} record"
                records = tracer.records
                for rec in records[seen:]:
                    if (
                        rec.component == component
                        and rec.event == event
                        and all(rec.fields.get(k) == v for k, v in match.items())
                    ):
                        return fn(rec)
                seen = len(records)
                yield self.env.timeout(1)

        return self.env.process(proc())

    def traced(self, component: str, event: str, **match: Any) -> list[Any]:
        """The trace records of ``component``/``event`` whose fields include ``match``."""
        assert self.m.tracer is not None
        return [
            rec
            for rec in self.m.tracer.records
            if rec.component == component
            and rec.event == event
            and all(rec.fields.get(k) == v for k, v in match.items())
        ]


@pytest.fixture
def sim() -> type[Sim]:
    return Sim
