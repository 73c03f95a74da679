"""Timed hardware models on SimPy: one small block per module, wired by ``machine``.

``memsys`` (CPU caches over DRAM, the two memory views), ``write_buffer`` (VT-d RWBF),
``dram``, ``allocator`` (table pages), ``iotlb`` and ``walk_cache`` (on ``assoc``),
``invalidation`` (the command queue and root registers), ``port`` (what the walker
reads), ``cpu`` and ``locks`` (cores running ``tables`` operations), ``dma`` (devices
and the translator interface), ``trace``, ``alarm`` and ``component`` (shared plumbing).
"""
