"""Protocol-neutral Open Inference Protocol (V2) requests and responses.

Each protocol adapter (REST JSON and binary, gRPC) turns its wire format into these and
back; :func:`scorepack.v2.infer` works on them alone. Tensors are NumPy arrays in their
V2 shape (BYTES as object arrays of ``bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InferInput", "InferOutput", "InferRequest", "InferResponse", "RequestedOutput"]


@dataclass
class InferInput:
    """One named input tensor of a request."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestedOutput:
    """An output the client asks for (with its parameters, e.g. ``binary_data``)."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    """An inference request: inputs, the outputs wanted (None or empty: all), id and
    parameters."""

    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferOutput:
    """One named output tensor of a response."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferResponse:
    """An inference response: which model answered, the request's id, the outputs."""

    model_name: str
    model_version: str | None
    outputs: list[InferOutput]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    #: rows in the model call this request rode in (sent as ``x-scorepack-batch-size``, as
    #: ``/score`` does; not part of the V2 body)
    batch_size: int | None = None
    #: seconds the request waited in the queue for its model call (access lines)
    queue_seconds: float | None = None
