"""Tensor descriptions that lie, over V2 REST and V2 gRPC: shapes NumPy cannot hold, BYTES
shapes that ask for terabytes before the data is read, JSON nested past what a recursive
parser takes, echoed parameters nested past what the response encoder writes,
Inference-Header-Content-Length values that ``str.isdigit`` takes but ``int`` does not, and
gRPC messages that do not parse (grpcio's own INTERNAL before).

Each was a 500 (NumPy's ValueError or MemoryError, RecursionError, orjson's TypeError or
int's ValueError); each is now a 400 saying what was wrong, and a good request follows it
on the same server. Inputs that would allocate ask for impossible amounts (terabytes), so
a regression fails fast instead of eating memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from fixture_backends import EchoBackend
from grpc_helpers import TIMEOUT, GrpcServed, grpc_serving, raw_stub
from scorepack.proto.messages import SERVICE, messages

MODEL = "echo"
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def served() -> Iterator[GrpcServed]:
    with grpc_serving({MODEL: EchoBackend("m")}) as s:
        yield s


@pytest.fixture(scope="module")
def client(served: GrpcServed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=60.0) as c:
        yield c


def still_serves(served: GrpcServed, client: httpx.Client) -> None:
    """A good request over REST and over gRPC after the bad one."""
    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    got = client.post(INFER, json=good)
    assert got.status_code == 200, got.text
    assert got.json()["outputs"][0]["data"] == [1.0, 2.0]
    np.testing.assert_array_equal(served.infer(MODEL, np.array([[3, 4]], "f4")), [[3, 4]])


def rest_refused(
    served: GrpcServed,
    client: httpx.Client,
    body: bytes,
    *words: str,
    headers: dict[str, str] | None = None,
) -> None:
    got = client.post(INFER, content=body, headers=headers or {})
    assert got.status_code == 400, got.text
    message = got.json()["error"]
    for word in words:
        assert word in message, (word, message)
    still_serves(served, client)


def binary_body(head: dict[str, Any], raw: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(head).encode()
    return header + raw, {"inference-header-content-length": str(len(header))}


def one_input(shape: list[int], datatype: str, **fields: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, **fields}]}


# --- shapes ---------------------------------------------------------------------------------


IMPOSSIBLE_SHAPES = [
    pytest.param([2**62, 2**62], id="2^62 x 2^62"),
    pytest.param([0, 2**63 - 1], id="0 x 2^63-1"),
    pytest.param([0, 2**62, 2**62], id="0 x 2^62 x 2^62"),
    pytest.param([1] * 65, id="65 dimensions"),
]


@pytest.mark.parametrize("shape", IMPOSSIBLE_SHAPES)
@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_rest_shape_numpy_cannot_hold(
    served: GrpcServed, client: httpx.Client, shape: list[int], datatype: str
) -> None:
    data: list[Any] = [] if 0 in shape else ["a"] if datatype == "BYTES" else [1.0]
    body = json.dumps(one_input(shape, datatype, data=data)).encode()
    rest_refused(served, client, body, "'x'", "larger than any tensor")


@pytest.mark.parametrize("shape", IMPOSSIBLE_SHAPES)
def test_rest_binary_shape_numpy_cannot_hold(
    served: GrpcServed, client: httpx.Client, shape: list[int]
) -> None:
    body, headers = binary_body(
        one_input(shape, "FP32", parameters={"binary_data_size": 4}), b"\0" * 4
    )
    rest_refused(served, client, body, "larger than any tensor", headers=headers)


@pytest.mark.parametrize("shape", [[10**12], [2**20, 2**20], [2**59]])
def test_rest_bytes_shape_asks_for_terabytes(
    served: GrpcServed, client: httpx.Client, shape: list[int]
) -> None:
    """A BYTES input's element count was allocated from its shape before its data was
    read: 10**12 elements asked NumPy for 7 TiB (a 500). Each element takes at least its
    4-byte length, so the data's size bounds the count first."""
    raw = (1).to_bytes(4, "little") + b"a"
    body, headers = binary_body(
        one_input(shape, "BYTES", parameters={"binary_data_size": len(raw)}), raw
    )
    rest_refused(served, client, body, "'x'", "BYTES", "4-byte length", headers=headers)


# --- nesting --------------------------------------------------------------------------------


def test_bytes_data_nested_a_thousand_deep(served: GrpcServed, client: httpx.Client) -> None:
    """BYTES data was flattened by recursion: 1,000 nested lists (orjson takes 1,024) were
    a RecursionError."""
    data = "[" * 1000 + '"a"' + "]" * 1000
    body = '{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ' + data
    body += "}]}"
    rest_refused(served, client, body.encode(), "'x'")


def test_deep_json_with_a_colon_in_a_string(served: GrpcServed, client: httpx.Client) -> None:
    """A colon inside a string sends the body to the standard library's parser (the
    duplicate-key check), which recursed past Python's limit: a RecursionError."""
    data = "[" * 1000 + "]" * 1000
    body = (
        b'{"id": "a:b", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": '
        + data.encode()
        + b"}]}"
    )
    rest_refused(served, client, body, "nested too deeply")
    score = client.post("/score", content=body.replace(b'"id": "a:b", ', b'"a:b": 1, '))
    assert score.status_code == 400, score.text
    still_serves(served, client)


def test_parameters_nested_past_what_the_response_can_carry(
    served: GrpcServed, client: httpx.Client
) -> None:
    """The request's parameters are echoed in the response, and orjson writes 254 levels
    at most: 300 were scored, then failed to encode (a 500 after the model ran)."""
    nested = '{"a": ' * 300 + "1" + "}" * 300
    body = (
        b'{"parameters": '
        + nested.encode()
        + b', "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}'
    )
    rest_refused(served, client, body, "parameters", "levels deep")
    shallow = {"parameters": {"a": {"b": [1, {"c": "d"}]}}, **one_input([1, 2], "FP32")}
    shallow["inputs"][0]["data"] = [1, 2]
    got = client.post(INFER, json=shallow)
    assert got.status_code == 200, got.text
    assert got.json()["parameters"] == {"a": {"b": [1, {"c": "d"}]}}


# --- Inference-Header-Content-Length --------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"\xb2", id="superscript two"),
        pytest.param(b"1\xb9", id="one superscript one"),
        pytest.param(b"9" * 5000, id="5000 digits"),
        pytest.param(b"1" * 19, id="19 digits"),
    ],
)
def test_header_length_that_int_refuses(
    served: GrpcServed, client: httpx.Client, value: bytes
) -> None:
    """Header bytes are read as Latin-1: ``"²".isdigit()`` is true and ``int("²")``
    raises; so does ``int`` of more than 4,300 digits: both were a ValueError (a 500)."""
    body = json.dumps(one_input([1, 2], "FP32", data=[1, 2])).encode()
    headers = {"inference-header-content-length": value}
    got = client.post(INFER, content=body, headers=headers)
    assert got.status_code == 400, got.text
    assert "Inference-Header-Content-Length" in got.json()["error"]
    still_serves(served, client)


# --- gRPC -----------------------------------------------------------------------------------


def grpc_refused(served: GrpcServed, client: httpx.Client, request: Any, *words: str) -> None:
    with raw_stub(served, "ModelInfer") as call:
        with pytest.raises(grpc.RpcError) as excinfo:
            call(request, timeout=TIMEOUT)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT, excinfo.value.details()
    for word in words:
        assert word in excinfo.value.details(), (word, excinfo.value.details())
    still_serves(served, client)


@pytest.mark.parametrize("shape", IMPOSSIBLE_SHAPES)
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_grpc_shape_numpy_cannot_hold(
    served: GrpcServed, client: httpx.Client, shape: list[int], raw: bool
) -> None:
    request = messages.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=shape)
    if raw:
        request.raw_input_contents.append(b"\0" * 4)
    else:
        tensor.contents.fp32_contents.append(1.0)
    grpc_refused(served, client, request, "larger than any tensor")


@pytest.mark.parametrize("shape", [[10**12], [2**20, 2**20]])
def test_grpc_bytes_shape_asks_for_terabytes(
    served: GrpcServed, client: httpx.Client, shape: list[int]
) -> None:
    request = messages.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="BYTES", shape=shape)
    request.raw_input_contents.append((1).to_bytes(4, "little") + b"a")
    grpc_refused(served, client, request, "4-byte length")


def _valid_infer() -> bytes:
    request = messages.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.array([1, 2], "<f4").tobytes())
    return bytes(request.SerializeToString())


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        pytest.param("ModelInfer", lambda: _valid_infer().replace(b"echo", b"ech\xff"), id="name"),
        pytest.param("ModelInfer", lambda: _valid_infer()[:-3], id="truncated"),
        pytest.param("ModelInfer", lambda: b"\xff\xff\xff\xff", id="garbage"),
        pytest.param("ModelReady", lambda: b"\x0a\x04ech\xff", id="ModelReady"),
        pytest.param("ModelMetadata", lambda: b"\x0a\x04ech\xff", id="ModelMetadata"),
        pytest.param("ServerLive", lambda: b"\xff\xff", id="ServerLive"),
    ],
)
def test_grpc_message_that_does_not_parse(
    served: GrpcServed, client: httpx.Client, method: str, payload: Any
) -> None:
    """Bytes that are not the RPC's message (a string field that is not UTF-8, a message
    cut short) were grpcio's INTERNAL "Exception deserializing request!"."""
    with grpc.insecure_channel(served.grpc_address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as excinfo:
            call(payload(), timeout=TIMEOUT)
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT, excinfo.value.details()
        assert "not a valid inference." in excinfo.value.details()
    still_serves(served, client)


@pytest.mark.parametrize(
    "document",
    [
        {"parameters": {"binary_data_output": "false"}},
        {"parameters": {"binary_data_output": 0}},
        {"outputs": [{"name": "y", "parameters": {"binary_data": "false"}}]},
        {"outputs": [{"name": "y", "parameters": {"binary_data": None}}]},
    ],
    ids=["request string", "request number", "output string", "output null"],
)
def test_binary_data_flags_that_are_not_booleans(
    served: GrpcServed, client: httpx.Client, document: dict[str, Any]
) -> None:
    """They were taken by truth: "false" asked for binary data, and got it."""
    body = {**one_input([1, 2], "FP32", data=[1, 2]), **document}
    rest_refused(served, client, json.dumps(body).encode(), "binary_data", "true or false")
    asked = {"parameters": {"binary_data_output": False}}
    got = client.post(INFER, json={**one_input([1, 2], "FP32", data=[1, 2]), **asked})
    assert got.status_code == 200 and got.json()["outputs"][0]["data"] == [1.0, 2.0], got.text


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("classification", 2), ("shared_memory_region", "out0")],
)
def test_output_parameters_of_extensions_not_offered(
    served: GrpcServed, client: httpx.Client, parameter: str, value: Any
) -> None:
    """tritonclient's class_count and shared-memory outputs were ignored: the client got
    plain numbers where it asked for class labels, or nothing where it looked."""
    body = one_input([1, 2], "FP32", data=[1, 2])
    body["outputs"] = [{"name": "y", "parameters": {parameter: value}}]
    rest_refused(served, client, json.dumps(body).encode(), parameter, "extension")
    request = messages.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.array([1, 2], "<f4").tobytes())
    output = request.outputs.add(name="y")
    if isinstance(value, int):
        output.parameters[parameter].int64_param = value
    else:
        output.parameters[parameter].string_param = value
    grpc_refused(served, client, request, parameter, "extension")


@pytest.mark.parametrize("ready", ["false", 0, [True]])
def test_repository_index_ready_that_is_not_a_boolean(
    served: GrpcServed, client: httpx.Client, ready: Any
) -> None:
    """Taken by truth, {"ready": "false"} listed only the ready models."""
    got = client.post("/v2/repository/index", json={"ready": ready})
    assert got.status_code == 400, got.text
    assert '"ready" must be true or false' in got.json()["error"]
    listed = client.post("/v2/repository/index", json={"ready": False})
    assert listed.status_code == 200 and [m["name"] for m in listed.json()] == [MODEL]
    still_serves(served, client)
