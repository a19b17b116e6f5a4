"""CUDA graphs for ONNX Runtime (``-O cuda_graph=true``): one batch shape, replayed.

With ``enable_cuda_graph`` the CUDA execution provider records the kernels of one run
and replays them afterwards as a single graph launch, which saves the launch overhead of
every kernel (a ResNet50 makes a few hundred). A replay reads and writes the addresses
and shapes it recorded, so every run must bind the same device buffers: inputs and
outputs live in persistent OrtValues of one fixed shape, each batch is padded to that
shape and copied in with ``update_inplace``, and outputs are read back from their
buffers. The batch size is fixed too, and the batcher is capped to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from scorepack import Signature
from scorepack.errors import ModelLoadError

__all__ = ["FixedBinding", "graph_shapes"]


def graph_shapes(signature: Signature, batch: int) -> dict[str, tuple[int, ...]]:
    """Every input's and output's shape with the batch dimension set to ``batch``.

    Refuses tensors a graph cannot replay: a dimension other than the batch that the
    model leaves free, or strings (they live on the host).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in (*signature.inputs, *signature.outputs):
        if spec.dtype == "object":
            raise ModelLoadError(
                f"-O cuda_graph=true: {spec.name!r} holds strings, which stay on the host; "
                "CUDA graphs need every input and output on the GPU"
            )
        batched = spec.batched and len(spec.shape) > 0
        dims = spec.shape[1:] if batched else spec.shape
        if any(d is None for d in dims):
            raise ModelLoadError(
                f"-O cuda_graph=true needs fixed shapes, but {spec.name!r} is "
                f"{spec.shape_text()}: a dimension other than the batch is free. A CUDA "
                "graph replays one shape; export the model with fixed sizes except the "
                "batch, or leave the option out."
            )
        head: tuple[int, ...] = (batch,) if batched else ()
        shapes[spec.name] = (*head, *(int(d) for d in dims if d is not None))
    return shapes


class FixedBinding:
    """IOBinding on persistent OrtValues of fixed shapes, bound once, reused every run.

    ``device`` is ``("cuda", index)`` for CUDA graphs; ``("cpu", 0)`` runs the same
    mechanism without a graph (the CPU tests use it).
    """

    def __init__(
        self,
        ort: Any,
        session: Any,
        signature: Signature,
        shapes: Mapping[str, tuple[int, ...]],
        device: tuple[str, int],
    ) -> None:
        kind, index = device
        self._session = session
        self._host = kind == "cpu"
        self._inputs = signature.input_names
        self._outputs = signature.output_names
        self.values: dict[str, Any] = {}
        self._binding = session.io_binding()
        for spec in (*signature.inputs, *signature.outputs):
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                list(shapes[spec.name]), np.dtype(spec.dtype).type, kind, index
            )
            self.values[spec.name] = value
            if spec.name in self._inputs:
                self._binding.bind_ortvalue_input(spec.name, value)
            else:
                self._binding.bind_ortvalue_output(spec.name, value)

    #: ordinary runs before ONNX Runtime's CUDA provider captures (it captures after 2)
    CAPTURE_RUNS = 3

    def capture(self) -> int:
        """Run zeros until the graph is captured; call on the thread that will replay it.

        The CUDA provider records the graph on a run after a few ordinary ones; left to
        live traffic, the first requests pay for that. Returns the runs made.
        """
        for _ in range(self.CAPTURE_RUNS):
            self._session.run_with_iobinding(self._binding)
        return self.CAPTURE_RUNS

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Copy a full-size batch into the bound inputs, run, read the outputs back."""
        for name in self._inputs:
            self.values[name].update_inplace(np.ascontiguousarray(feed[name]))
        self._session.run_with_iobinding(self._binding)
        results = [self.values[name].numpy() for name in self._outputs]
        # a device buffer's numpy() is a fresh host copy; a host one may be a view of the
        # buffer the next run overwrites while this batch's answers are still being sent
        return [r.copy() for r in results] if self._host else results
