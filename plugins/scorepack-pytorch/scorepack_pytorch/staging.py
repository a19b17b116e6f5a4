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
        rows = array.shape[0]
        dtype = _torch_dtype(torch, array.dtype)
        buffer = self.buffers.get(name)
        fits = buffer is not None and buffer.dtype == dtype and buffer.shape[1:] == array.shape[1:]
        if buffer is None or not fits or buffer.shape[0] < rows:
            capacity = max(rows, buffer.shape[0] if fits and buffer is not None else 0)
            buffer = torch.empty((capacity, *array.shape[1:]), dtype=dtype, pin_memory=self.pin)
            self.buffers[name] = buffer
        staged = buffer[:rows]
        # one copy, NumPy to the pinned buffer: the batcher's arrays may be read-only
        # views, which torch.from_numpy refuses; copying them to writable memory first
        # (np.require) and then into the buffer moved every batch twice
        np.copyto(staged.numpy(), array, casting="no")
        return staged.to(self.device, non_blocking=True)


def _torch_dtype(torch: Any, dtype: np.dtype) -> Any:
    """The torch dtype of a NumPy dtype (torch.from_numpy's own table, on an empty array)."""
    return torch.from_numpy(np.empty((0,), dtype=dtype)).dtype
