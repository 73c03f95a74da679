"""One machine's hardware, built and wired from a ``HardwareConfig``.

The scenario layer (and the tests) need the same wiring every time: the memory
system over DRAM with its write buffer, the table allocator on it, the IOTLB and walk
cache behind the invalidation queue, the walker's port, the locks and the CPU cores.
DMA devices depend on a workload and a translator (the walker), so they are made
separately with ``DmaDevice``.

Set-up before the clock starts: ``executor`` is a zero-time ``DirectExecutor`` on this
machine's memory and allocator, whose root registers are the invalidation queue's, so
tables built with it (``PageTable(..., executor=machine.executor)`` or
``run_direct(op)``) are attached as soon as they are created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import simpy

from ..tables.executor import DirectExecutor
from .allocator import TableAllocator
from .component import Component, collect_stats
from .config import CpuConfig, HardwareConfig
from .cpu import CpuCore, Operation
from .dram import Dram
from .invalidation import InvalidationQueue
from .iotlb import Iotlb
from .locks import Locks
from .memsys import MemorySystem
from .port import WalkerPort
from .sim import SimEnvironment
from .trace import Tracer
from .walk_cache import WalkCache


class Machine:
    """The hardware blocks of one run, all seeded from ``seed``."""

    def __init__(
        self,
        config: HardwareConfig | None = None,
        *,
        seed: int = 0,
        trace: bool = False,
        env: simpy.Environment | None = None,
        cpu_configs: Mapping[int, CpuConfig] | None = None,
    ) -> None:
        """``cpu_configs`` replaces the CPU config of some cores (e.g. one CPU that
        takes many interrupts)."""
        self.config = config = config if config is not None else HardwareConfig()
        cpu_configs = cpu_configs or {}
        self.seed = seed
        self.env = env = env if env is not None else SimEnvironment()
        self.tracer = tracer = Tracer(env) if trace else None
        iommu = config.iommu
        self.dram = Dram(env, config.dram)
        self.memory = MemorySystem(
            env, config.cache, config.cpu, iommu.write_buffer, seed=seed, tracer=tracer
        )
        self.write_buffer = self.memory.write_buffer
        self.allocator = TableAllocator(self.memory, config.allocator, seed=seed)
        self.iotlb = Iotlb(iommu.iotlb, seed=seed, tracer=tracer)
        self.walk_cache = WalkCache(iommu.walk_cache, tracer=tracer)
        self.invalidation = InvalidationQueue(
            env,
            iommu.invalidation,
            iotlb=self.iotlb,
            walk_cache=self.walk_cache,
            write_buffer=self.write_buffer,
            tracer=tracer,
        )
        self.port = WalkerPort(iommu, self.memory, self.dram, self.allocator, tracer=tracer)
        self.locks = Locks(env)
        self.cpus = [
            CpuCore(
                env,
                i,
                cpu_configs.get(i, config.cpu),
                memory=self.memory,
                allocator=self.allocator,
                queue=self.invalidation,
                locks=self.locks,
                seed=seed,
                tracer=tracer,
            )
            for i in range(config.cpu.count)
        ]
        self.executor = DirectExecutor(self.memory, self.allocator)
        self.executor.roots = self.invalidation.roots

    def run_direct(self, op: Operation) -> Any:
        """Run an operation at once, in zero time, as the boot CPU (table set-up)."""
        return self.executor.run(op)

    def components(self) -> list[Component]:
        blocks: list[Component] = [self.memory, self.dram, self.allocator]
        if self.write_buffer is not None:
            blocks.append(self.write_buffer)
        blocks += [self.iotlb, self.walk_cache, self.invalidation, self.port]
        return blocks + list(self.cpus)

    def stats(self) -> dict[str, float]:
        """Every block's statistics, keyed ``<block name>.<statistic>``."""
        return collect_stats(self.components())
