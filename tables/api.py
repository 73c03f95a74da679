"""The synchronous table API, written once over an implementation's ``*_op`` generators.

``PageTable`` (genpt) and ``LegacyTable`` (the io-pgtable code it replaced) each say
how to build their operation generators; running them on the direct executor and
turning kernel return values into Python results is the same for both.
"""

from __future__ import annotations

from typing import Any

from .errors import PTError
from .executor import DirectExecutor
from .iter import Gen


class SyncTableApi:
    """map / unmap / dirty / teardown run to completion on ``self.executor``."""

    executor: DirectExecutor

    def attach_op(self) -> Gen:
        raise NotImplementedError

    def map_op(self, iova: int, pa: int, size: int, prot: int) -> Gen:
        raise NotImplementedError

    def unmap_op(self, iova: int, size: int) -> Gen:
        raise NotImplementedError

    def iova_to_phys_op(self, iova: int) -> Gen:
        raise NotImplementedError

    def read_and_clear_dirty_op(self, iova: int, size: int, no_clear: bool = False) -> Gen:
        raise NotImplementedError

    def deinit_op(self) -> Gen:
        raise NotImplementedError

    def run(self, op: Gen) -> Any:
        return self.executor.run(op)

    def attach(self) -> None:
        """Program the hardware with the current root (the driver attaching the domain)."""
        self.run(self.attach_op())

    def map(self, iova: int, pa: int, size: int, prot: int) -> None:
        ret = self.run(self.map_op(iova, pa, size, prot))
        if ret:
            raise PTError(ret, f"map {iova:#x}+{size:#x}")

    def unmap(self, iova: int, size: int) -> int:
        return self.run(self.unmap_op(iova, size))

    def kernel_iova_to_phys(self, iova: int) -> int:
        """iova_to_phys exactly as the kernel returns it (0, or a cast errno)."""
        return self.run(self.iova_to_phys_op(iova))

    def read_and_clear_dirty(
        self, iova: int, size: int, no_clear: bool = False
    ) -> list[tuple[int, int]]:
        ret, runs = self.run(self.read_and_clear_dirty_op(iova, size, no_clear))
        if ret:
            raise PTError(ret, "read_and_clear_dirty")
        return runs

    def deinit(self) -> None:
        self.run(self.deinit_op())

    @property
    def live_table_pages(self) -> int:
        return self.executor.allocator.live_pages
