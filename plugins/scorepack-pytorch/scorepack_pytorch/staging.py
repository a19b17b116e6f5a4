"""Page-locked host buffers for copies to the GPU (on by default on CUDA; ``-O pinned=false``).

A copy to the GPU from ordinary (pageable) host memory goes through a driver bounce
buffer and blocks the calling thread; from page-locked memory it is one DMA transfer that
can be queued asynchronously. Page-locking is slow, so it is done once: each input gets
one staging buffer, sized for the largest batch seen (the warm-up runs the largest batch
at startup) and reused for every batch after.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PinnedStaging"]


class PinnedStaging:
    """One reusable host buffer per input; :meth:`to_device` stages a batch through it.

    Reuse is safe because the backend reads every output back to the host before
    ``predict`` returns: that copy synchronises with the stream, so the device has
    finished reading the buffer before the next batch overwrites it. ``pin=False`` keeps
    the same logic with ordinary memory (the CPU tests use it).
    """

    def __init__(self, torch: Any, device: Any, *, pin: bool = True) -> None:
        self._torch = torch
        self.device = device
        self.pin = pin
        self.buffers: dict[str, Any] = {}

    def to_device(self, name: str, array: np.ndarray) -> Any:
        """Copy ``array`` (first dimension: batch) into the input's buffer, then queue the
        copy to the device without waiting for it."""
        torch = self._torch
        # the batcher's arrays may be read-only views; torch wants writable memory
        source = torch.from_numpy(np.require(array, requirements=["C", "W"]))
        rows = source.shape[0]
        buffer = self.buffers.get(name)
        fits = (
            buffer is not None
            and buffer.dtype == source.dtype
            and buffer.shape[1:] == source.shape[1:]
        )
        if buffer is None or not fits or buffer.shape[0] < rows:
            capacity = max(rows, buffer.shape[0] if fits and buffer is not None else 0)
            buffer = torch.empty(
                (capacity, *source.shape[1:]), dtype=source.dtype, pin_memory=self.pin
            )
            self.buffers[name] = buffer
        staged = buffer[:rows]
        staged.copy_(source)
        return staged.to(self.device, non_blocking=True)
