"""DRAM timing: read and write latency, optionally a limited number of channels.

The words themselves live in the memory system's hardware view (``MemorySystem.hw``);
this block only says how long an access takes and lets walker reads and DMA data
accesses contend for channels.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from .config import DramConfig
from .sim import advance


class Dram:
    """One access costs ``read`` or ``write`` cycles.

    With ``channels`` > 0, an access first waits for a free channel (first come, first
    served) and holds it for the first ``occupancy`` cycles of its latency, so at most
    ``channels`` accesses start every ``occupancy`` cycles. With ``channels`` = 0 there
    is no contention.
    """

    def __init__(
        self,
        env: simpy.Environment,
        cfg: DramConfig,
        *,
        name: str = "dram",
    ) -> None:
        self.env = env
        self.cfg = cfg
        self.name = name
        self._channels = simpy.Resource(env, cfg.channels) if cfg.channels else None
        self.reads = 0
        self.writes = 0
        self.channel_waits = 0
        self.channel_wait_cycles = 0

    def access(self, is_write: bool) -> Generator[simpy.Event, Any, None]:
        """Wait for one access to complete (``yield from dram.access(False)``)."""
        latency = self.cfg.write if is_write else self.cfg.read
        if is_write:
            self.writes += 1
        else:
            self.reads += 1
        env = self.env
        if self._channels is None:
            wait = advance(env, latency)
            if wait is not None:
                yield wait
            return
        occupancy = min(self.cfg.occupancy, latency)
        with self._channels.request() as granted:
            start = env.now
            yield granted
            if env.now > start:
                self.channel_waits += 1
                self.channel_wait_cycles += env.now - start
            yield env.timeout(occupancy)
        if latency > occupancy:
            yield env.timeout(latency - occupancy)

    def uncontended(self, is_write: bool, times: int = 1) -> int | None:
        """Without channels an access cannot wait: count ``times`` accesses as
        ``access`` does and return their latency, for a caller that waits itself (a
        device pipeline). With channels: None, nothing counted (use ``access``)."""
        if self._channels is not None:
            return None
        if is_write:
            self.writes += times
            return self.cfg.write
        self.reads += times
        return self.cfg.read

    def stats(self) -> dict[str, float]:
        return {
            "reads": self.reads,
            "writes": self.writes,
            "channel_waits": self.channel_waits,
            "channel_wait_cycles": self.channel_wait_cycles,
        }
