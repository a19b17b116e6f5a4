"""Tensors on the V2 gRPC wire ↔ NumPy arrays.

An input arrives either typed, in ``InferInputTensor.contents`` (one repeated field per
datatype family), or as bytes, in ``ModelInferRequest.raw_input_contents`` (one entry per
input, in order: little-endian elements, row-major; BYTES elements each prefixed with a
4-byte little-endian length). A request uses one form for all its inputs, as Triton
requires. FP16 has no typed field: it travels raw only. Outputs always go back raw, in
``raw_output_contents``: tritonclient reads nothing else.

The datatype table and the raw layout are :mod:`scorepack.v2`'s, shared with V2 REST.
Errors here are the client's: :class:`~scorepack.errors.InvalidTensorError`, which the
service answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import InvalidTensorError
from ...v2 import (
    InferInput,
    InferOutput,
    InferRequest,
    RequestedOutput,
    array_from_bytes,
    array_from_data,
    array_to_bytes,
    numpy_dtype,
)

__all__ = ["read_parameters", "read_request", "write_outputs", "write_parameters"]

#: datatype → the InferTensorContents field that carries it typed (FP16, BF16: none, raw only)
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def read_request(request: Any) -> InferRequest:
    """A ``ModelInferRequest`` as the protocol-neutral :class:`~scorepack.v2.InferRequest`."""
    return InferRequest(
        inputs=read_inputs(request),
        outputs=[
            RequestedOutput(name=o.name, parameters=read_parameters(o.parameters))
            for o in request.outputs
        ]
        or None,
        id=request.id or None,
        parameters=read_parameters(request.parameters),
    )


def read_inputs(request: Any) -> list[InferInput]:
    """The inputs of a ``ModelInferRequest`` as arrays, checked against their shapes."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidTensorError(
            f"The request has {len(request.inputs)} inputs but {len(raw)} "
            "raw_input_contents entries: send one raw entry per input, in order, "
            "or none and use each input's contents."
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        name, datatype = tensor.name, tensor.datatype
        numpy_dtype(datatype)  # an unknown datatype is a 400 that lists the known ones
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidTensorError(
                f"Input {name!r} has a negative dimension in its shape {list(shape)}.", name
            )
        if raw:
            if tensor.HasField("contents") and tensor.contents.ByteSize():
                raise InvalidTensorError(
                    f"Input {name!r} has contents while the request carries "
                    "raw_input_contents: use one form (raw for all inputs, or contents).",
                    name,
                )
            data = array_from_bytes(name, datatype, shape, raw[index])
        else:
            data = _from_contents(name, datatype, shape, tensor.contents)
        inputs.append(InferInput(name, datatype, shape, data, read_parameters(tensor.parameters)))
    return inputs


def _from_contents(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> Any:
    field_name = _CONTENTS_FIELD.get(datatype)
    if field_name is None:
        raise InvalidTensorError(
            f"Input {name!r} is {datatype}, which has no typed contents field: send it in "
            "raw_input_contents.",
            name,
        )
    others = [f.name for f, _ in contents.ListFields() if f.name != field_name]
    if others:
        raise InvalidTensorError(
            f"Input {name!r} is {datatype}, whose data goes in contents.{field_name}, but "
            f"the request fills contents.{others[0]}.",
            name,
        )
    # each typed field holds only its own type: no boolean or string can hide among
    # numbers (a BOOL field for an FP32 input is refused above): no per-element look
    values = list(getattr(contents, field_name))
    return array_from_data(name, datatype, shape, values, plain=True)


def write_outputs(response: Any, outputs: Sequence[InferOutput]) -> None:
    """Append ``outputs`` to a ``ModelInferResponse``: metadata in ``outputs``, the data in
    ``raw_output_contents`` (the only place tritonclient reads it)."""
    for tensor in outputs:
        out = response.outputs.add(name=tensor.name, datatype=tensor.datatype)
        out.shape.extend(tensor.shape)
        write_parameters(out.parameters, tensor.parameters)
        response.raw_output_contents.append(array_to_bytes(tensor.data, tensor.datatype))


def read_parameters(parameters: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as plain values."""
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def write_parameters(target: Any, values: dict[str, Any]) -> None:
    """Plain values into a protobuf ``map<string, InferParameter>``."""
    for key, value in values.items():
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if value >= 2**63:
                slot.uint64_param = value
            else:
                slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        else:
            slot.string_param = str(value)
