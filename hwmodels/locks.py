"""Spinlocks keyed by name, shared by the CPU cores.

Each lock is a capacity-one SimPy resource, so waiters are served first come, first
served (like a ticket or queued spinlock) and a held lock blocks. The lock word's cache
line is modelled by its last holder: acquiring costs ``cmpxchg_local`` if this CPU held
the lock last (or nobody has yet), ``cmpxchg_remote`` otherwise.
"""

from __future__ import annotations

import simpy
from simpy.resources.resource import Request


class Locks:
    """The named spinlocks of one machine."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._resources: dict[str, simpy.Resource] = {}
        self._held: dict[str, tuple[int, Request]] = {}
        self._last: dict[str, int] = {}

    def holder(self, name: str) -> int | None:
        held = self._held.get(name)
        return held[0] if held is not None else None

    def request(self, name: str, cpu: int) -> Request:
        """Ask for a lock; the returned event fires when ``cpu`` holds it."""
        if self.holder(name) == cpu:
            raise RuntimeError(f"CPU {cpu} takes lock {name!r}, which it already holds")
        resource = self._resources.get(name)
        if resource is None:
            resource = self._resources[name] = simpy.Resource(self.env, 1)
        return resource.request()

    def granted(self, name: str, cpu: int, req: Request) -> bool:
        """Record that ``cpu`` now holds the lock; True if another CPU held it last."""
        self._held[name] = (cpu, req)
        last = self._last.get(name, cpu)
        self._last[name] = cpu
        return last != cpu

    def release(self, name: str, cpu: int) -> None:
        held = self._held.get(name)
        if held is None or held[0] != cpu:
            raise RuntimeError(f"CPU {cpu} unlocks {name!r}, which it does not hold")
        del self._held[name]
        self._resources[name].release(held[1])
