"""The V2 REST wire format: JSON, and the binary tensor data extension.

A request body is JSON, or — with an ``Inference-Header-Content-Length: N`` header — N
bytes of JSON followed by the raw bytes of the inputs whose ``parameters`` give a
``binary_data_size``, in input order. A response puts an output's raw bytes after the JSON
in the same way when the client asks for it (``"binary_data": true`` on the output, or
``"binary_data_output": true`` on the request); otherwise its ``data`` is a flat JSON list.
Raw bytes are laid out as :mod:`scorepack.v2.datatypes` says (BYTES length-prefixed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..codecs import encode_json, loads_json, plain_numbers, sniff
from ..errors import BadRequestError, EmptyBodyError, InvalidJSONError, InvalidTensorError
from ..signature import Signature
from .datatypes import array_from_bytes, array_from_data, array_to_bytes, datatype_of, numpy_dtype
from .types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

__all__ = [
    "HEADER_LENGTH",
    "decode_infer_request",
    "encode_infer_response",
    "header_length",
    "raw_infer_request",
]

#: the binary extension's header: how many leading body bytes are the JSON part
HEADER_LENGTH = "inference-header-content-length"


def header_length(value: str | None, body_size: int | None = None) -> int | None:
    """The ``Inference-Header-Content-Length`` value checked, or None when absent."""
    if value is None:
        return None
    text = value.strip()
    # ASCII digits only: str.isdigit() also takes "²" and other digits int() refuses, and
    # more than 18 digits would be past any body (and past int()'s 4,300-digit limit)
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadRequestError(
            f"Inference-Header-Content-Length must be a byte count, not {value[:40]!r}."
        )
    length = int(text)
    if body_size is not None and length > body_size:
        raise BadRequestError(
            f"Inference-Header-Content-Length is {length}, but the body has only {body_size} bytes."
        )
    return length


def decode_infer_request(body: bytes, json_length: int | None = None) -> InferRequest:
    """Parse an inference request: all JSON, or ``json_length`` bytes of JSON then binary
    input data. Every malformed part is a 400 that says which."""
    if not body:
        raise EmptyBodyError()
    head = body if json_length is None else body[:json_length]
    document = _json(head)
    # only a head with string values or true/false in it can hide them among numbers
    plain = plain_numbers(head, document)
    binary = memoryview(body)[len(head) :]
    items = document.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidJSONError('"inputs" must be a non-empty list of input tensors.')
    offset = 0
    inputs = []
    for index, item in enumerate(items):
        tensor, offset = _input(item, index, binary, offset, plain)
        inputs.append(tensor)
    if offset != len(binary):
        raise BadRequestError(
            f"The body has {len(binary) - offset} bytes of binary data that no input claims "
            "(binary_data_size)."
        )
    outputs = document.get("outputs")
    requested = None
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidJSONError('"outputs" must be a list of {"name": ...} objects.')
        requested = [_requested(o, i) for i, o in enumerate(outputs)]
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidJSONError('"id" must be a string.')
    parameters = _parameters(document, "the request")
    _flag(parameters, "binary_data_output", "the request")
    return InferRequest(inputs=inputs, outputs=requested, id=request_id, parameters=parameters)


def raw_infer_request(signature: Signature, image_input: str | None, body: bytes) -> InferRequest:
    """A request whose whole body is one input's data (``Inference-Header-Content-Length:
    0``): an encoded JPEG/PNG for an image model, else the raw bytes of the model's one
    input, as many rows as they hold."""
    if not body:
        raise EmptyBodyError()
    if len(signature.inputs) != 1:
        raise BadRequestError(
            "A raw binary body (Inference-Header-Content-Length: 0) is for models with one "
            f"input; this model's inputs are {signature.input_names}. Send a JSON header."
        )
    spec = signature.inputs[0]
    if spec.name == image_input and sniff(body) in ("jpeg", "png"):
        image = np.empty(1, dtype=object)
        image[0] = body
        return InferRequest([InferInput(spec.name, "BYTES", (1,), image)])
    datatype = datatype_of(spec.dtype)
    item = spec.item_shape
    if datatype == "BYTES":
        data = np.empty(1, dtype=object)
        data[0] = body
        return InferRequest([InferInput(spec.name, datatype, (1,), data)])
    if not spec.batched or any(d is None for d in item):
        raise BadRequestError(
            f"A raw binary body cannot say the shape of {spec.name!r} {spec.shape_text()}; "
            "send a JSON header with it."
        )
    row = math.prod(d or 1 for d in item) * numpy_dtype(datatype).itemsize
    if len(body) % row:
        raise InvalidTensorError(
            f"The raw body has {len(body)} bytes, not a whole number of {spec.name!r} rows "
            f"({datatype} {spec.shape_text()}: {row} bytes each). Images must be JPEG or PNG.",
            spec.name,
        )
    shape = (len(body) // row, *(d or 1 for d in item))
    return InferRequest(
        [InferInput(spec.name, datatype, shape, array_from_bytes(spec.name, datatype, shape, body))]
    )


def _json(head: bytes) -> dict[str, Any]:
    # /score's strict parser: a duplicate key anywhere is a 400 naming it, not the last kept
    document = loads_json(head)
    if not isinstance(document, dict):
        raise InvalidJSONError('The inference request must be a JSON object with "inputs".')
    return document


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = item.get("parameters", {})
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidJSONError(f'The "parameters" of {where} must be a JSON object.')
    if _depth(parameters) > _MAX_PARAMETER_DEPTH:
        # the request's parameters are echoed in the response, and orjson writes at most
        # 254 levels: deeper ones would fail after the model ran (a 500)
        raise InvalidJSONError(
            f'The "parameters" of {where} nest more than {_MAX_PARAMETER_DEPTH} levels deep.'
        )
    return parameters


#: parameters are flat in the protocol (strings, numbers, booleans); some nesting is let
#: through, as before, but not past what the response's JSON encoder can write
_MAX_PARAMETER_DEPTH = 64


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > _MAX_PARAMETER_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _input(
    item: Any, index: int, binary: memoryview, offset: int, plain: bool
) -> tuple[InferInput, int]:
    if not isinstance(item, dict):
        raise InvalidJSONError(f"Input {index} must be a JSON object.")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidJSONError(f'Input {index} needs a "name".')
    datatype, shape = item.get("datatype"), item.get("shape")
    if not isinstance(datatype, str):
        raise InvalidJSONError(f'Input {name!r} needs a "datatype" (e.g. "FP32").')
    if not isinstance(shape, list):
        raise InvalidJSONError(f'Input {name!r} needs a "shape" (a list of sizes).')
    parameters = _parameters(item, f"input {name!r}")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidJSONError(f"Input {name!r}: binary_data_size must be a byte count.")
        if "data" in item:
            raise InvalidJSONError(f'Input {name!r} has both "data" and binary_data_size.')
        if offset + size > len(binary):
            raise BadRequestError(
                f"Input {name!r} says binary_data_size {size}, but only "
                f"{len(binary) - offset} bytes of binary data remain."
            )
        array = array_from_bytes(name, datatype, shape, binary[offset : offset + size])
        offset += size
    elif "data" in item:
        array = array_from_data(name, datatype, shape, item["data"], plain=plain)
    else:
        raise InvalidJSONError(f'Input {name!r} has no "data" (and no binary_data_size).')
    return InferInput(name, datatype, tuple(shape), array, parameters), offset


def _requested(item: Any, index: int) -> RequestedOutput:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidJSONError(f'Output {index} must be an object with a "name".')
    where = f"output {item['name']!r}"
    parameters = _parameters(item, where)
    _flag(parameters, "binary_data", where)
    return RequestedOutput(item["name"], parameters)


def _flag(parameters: dict[str, Any], name: str, where: str) -> None:
    # taken by truth otherwise: "false" (a string) would ask for binary data
    if name in parameters and not isinstance(parameters[name], bool):
        raise InvalidJSONError(
            f'The "{name}" parameter of {where} must be true or false, not '
            f"{parameters[name]!r:.40}."
        )


def encode_infer_response(
    response: InferResponse, request: InferRequest
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when binary data follows it (the
    value of ``Inference-Header-Content-Length``), else None (the body is all JSON)."""
    default = bool(request.parameters.get("binary_data_output", False))
    asked = {o.name: o.parameters for o in request.outputs or ()}
    chunks: list[bytes] = []
    outputs = []
    for output in response.outputs:
        binary = bool(asked.get(output.name, {}).get("binary_data", default))
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        parameters = dict(output.parameters)
        if binary:
            raw = array_to_bytes(output.data, output.datatype)
            parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = _json_data(output)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version or "",
        "outputs": outputs,
    }
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    head = encode_json(document)
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def _json_data(output: InferOutput) -> Any:
    flat = output.data.reshape(-1)
    if output.datatype != "BYTES":
        # orjson (encode_json) writes NumPy arrays directly, far faster than Python floats
        return np.ascontiguousarray(flat)
    try:
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in flat]
    except UnicodeDecodeError:
        raise InvalidTensorError(
            f"Output {output.name!r} holds bytes that are not UTF-8 text, which JSON cannot "
            'carry; ask for it as binary data ("binary_data": true).',
            output.name,
        ) from None
