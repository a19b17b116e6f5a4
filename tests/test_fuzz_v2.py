"""Property-based fuzzing of the embedded server's Open Inference Protocol (V2) inference,
over REST (JSON, the binary tensor extension, raw bodies) and gRPC (ModelInfer).

The requests (tests/v2_fuzz.py) start good for one of four models — several inputs and
outputs of FP32, INT64, BOOL, BYTES (``types``), FP16, UINT8, UINT64 and BYTES in and
out (``wide``), one FP32 input that a raw body fills (``echo``), and an image model that
takes encoded images as BYTES and decodes JPEGs itself (``image``) — and are then
mutated. Whatever comes in, the answer is a 2xx whose outputs are well formed (and, while
no mutation touched the inputs, it must be a 2xx with the model's answer for them), or a
4xx with ``{"error": "message"}`` (gRPC: a client-side status code with a message); never
a 5xx, INTERNAL or UNKNOWN, and nothing logged as an error. A good request to the same
model, over the same protocol, is sent beside each one (the two may share a model call)
and after it, and both are answered correctly. Bounded: a fixed number of examples,
derandomized (the same examples every run, so it cannot flake), no deadline per example.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from grpc_helpers import GrpcServed, grpc_serving_repository  # noqa: E402
from scorepack.proto.messages import SERVICE, messages, method_types  # noqa: E402
from v2_fuzz import (  # noqa: E402
    ANY,
    GOOD_IMAGE,
    MODELS,
    OUTPUTS,
    Sent,
    expected_outputs,
    fuzz_repository,
    grpc_requests,
    rest_requests,
    to_raw,
)

TIMEOUT = 60.0
#: examples per protocol; a longer hunt: FUZZ_V2_EXAMPLES=5000 FUZZ_V2_RANDOM=1 (new
#: examples each run; hypothesis prints the seed of a failure to rerun it)
EXAMPLES = int(os.environ.get("FUZZ_V2_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("FUZZ_V2_RANDOM"),
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
#: what a gRPC call may end with other than OK: the client's fault, or the server busy
ALLOWED_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
}
_NUMPY = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2",
    "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    with grpc_serving_repository(fuzz_repository(tmp_path_factory.mktemp("fuzz_v2"))) as s:
        yield s


@pytest.fixture(scope="module")
def client(served: GrpcServed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as c:
        yield c


# --- answers ---------------------------------------------------------------------------------


def _from_raw(raw: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            size = int.from_bytes(raw[offset : offset + 4], "little")
            items.append(raw[offset + 4 : offset + 4 + size])
            offset += 4 + size
        array = np.empty(len(items), dtype=object)
        array[:] = items
    else:
        array = np.frombuffer(raw, _NUMPY[datatype])
    assert array.size == math.prod(shape), (datatype, shape, len(raw))
    return array.reshape(shape)


def _rest_outputs(got: httpx.Response) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A 200's JSON document and its outputs as arrays (binary parts checked for size).
    JSON has no inf or NaN: the server writes null (README), read back as NaN."""
    content = got.content
    length = got.headers.get("inference-header-content-length")
    head = content if length is None else content[: int(length)]
    document = json.loads(head)
    offset, outputs = len(head), {}
    for out in document["outputs"]:
        datatype, shape = out["datatype"], out["shape"]
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            array = _from_raw(content[offset : offset + size], datatype, shape)
            offset += size
        elif datatype == "BYTES":
            array = np.array([t.encode("utf-8") for t in out["data"]], dtype=object)
            array = array.reshape(shape)
        else:
            array = np.array(out["data"], dtype=_NUMPY[datatype]).reshape(shape)
        assert out["name"] not in outputs, document
        outputs[out["name"]] = array
    assert offset == len(content), (offset, len(content))
    return document, outputs


def _check_outputs(sent: Sent, outputs: dict[str, np.ndarray]) -> None:
    """A 200 for a request aimed at a served model: the outputs it asked for, and the
    model's values for its inputs when no mutation touched them."""
    if not sent.model or sent.outputs is ANY:
        return
    wanted = sent.outputs if sent.outputs is not None else list(OUTPUTS[sent.model])
    if sent.outputs == []:
        wanted = list(OUTPUTS[sent.model])  # an empty list asks for them all
    assert list(outputs) == wanted, (list(outputs), wanted)
    if sent.expect is None:
        return
    rows = len(next(iter(sent.expect.values())))
    for array in outputs.values():
        assert array.shape[:1] == (rows,), (array.shape, rows)
    reference = expected_outputs(sent.model, sent.expect)
    if reference is None:  # the image model: a row of pixels per image
        for array in outputs.values():
            assert array.shape == (rows, 16, 16, 3), array.shape
        return
    for name, array in outputs.items():
        if name not in reference:
            continue
        want = reference[name]
        if want.dtype.kind == "f" and array.dtype == want.dtype:
            # JSON carries inf as null (NaN here); binary data carries it as it is
            nulled = np.isnan(array) & ~np.isfinite(want)
            want = np.where(nulled, np.nan, want).astype(want.dtype)
        _same(name, array, want)


def _same(name: str, array: np.ndarray, want: np.ndarray) -> None:
    if name == "mean":  # a mean of 192 floats: its rounding is NumPy's business
        np.testing.assert_allclose(array, want, rtol=1e-5, err_msg=name)
    else:
        np.testing.assert_array_equal(array, want, err_msg=name)


#: the statuses of an accepted request, REST and gRPC
OK = ("200", "OK")


def _outcome(sent: Sent, status: str, message: str) -> str:
    checked = "checked" if sent.expect is not None else "-"
    return f"{sent.model or '-'} {status} {checked} {message[:70]}"


def _pieces(body: bytes, count: int) -> Iterator[bytes]:
    step = -(-len(body) // count) or 1
    return (body[at : at + step] for at in range(0, len(body), step))


def check_rest(client: httpx.Client, sent: Sent, tally: Counter[str]) -> None:
    args = dict(sent.protocol_args)
    if sent.chunks:
        args["content"] = _pieces(args["content"], sent.chunks)
    got = client.request(**args)
    status = got.status_code
    tally[_outcome(sent, str(status), got.text if status >= 300 else "")] += 1
    assert 200 <= status < 300 or 400 <= status < 500, (status, got.text[:500])
    assert status == 200 or not sent.accept, ("a good request refused", got.text[:500])
    if status >= 300:
        assert got.headers["content-type"] == "application/json", got.headers
        body = got.json()
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        assert body["error"].strip(), body
        return
    document, outputs = _rest_outputs(got)
    if isinstance(sent.request_id, str):
        assert document.get("id") == sent.request_id, document
    _check_outputs(sent, outputs)


def _grpc_call(served: GrpcServed) -> Any:
    channel = grpc.insecure_channel(served.grpc_address)
    return channel, channel.unary_unary(
        f"/{SERVICE}/ModelInfer", response_deserializer=messages.ModelInferResponse.FromString
    )


def check_grpc(call: Any, sent: Sent, tally: Counter[str]) -> None:
    message = sent.protocol_args["message"]
    wire = sent.protocol_args["wire"]
    try:
        response = call(message.SerializeToString() if wire is None else wire, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        tally[_outcome(sent, exc.code().name, exc.details() or "")] += 1
        assert not sent.accept, ("a good request refused", exc.code(), exc.details())
        assert exc.code() in ALLOWED_CODES, (exc.code(), exc.details())
        assert exc.details() and exc.details().strip(), exc.code()
        return
    assert len(response.raw_output_contents) == len(response.outputs), response
    outputs = {
        out.name: _from_raw(raw, out.datatype, list(out.shape))
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    tally[_outcome(sent, "OK", "")] += 1
    if wire is None:
        assert response.id == message.id
    _check_outputs(sent, outputs)


# --- good requests ---------------------------------------------------------------------------

GOOD_INPUTS: dict[str, dict[str, tuple[str, np.ndarray]]] = {
    "types": {
        "f": ("FP32", np.array([[1.5, -2]], "<f4")),
        "i": ("INT64", np.array([[1, 2, 2**40]], "<i8")),
        "b": ("BOOL", np.array([[True]])),
    },
    "wide": {
        "h": ("FP16", np.array([[0.5, -1]], "<f2")),
        "u": ("UINT8", np.array([[1, 2, 250]], "<u1")),
        "q": ("UINT64", np.array([[2**64 - 1]], "<u8")),
        "s": ("BYTES", np.array([b"\xffnot text"], dtype=object)),
    },
    "echo": {"x": ("FP32", np.array([[3, 4]], "<f4"))},
    "image": {"image": ("BYTES", np.array([GOOD_IMAGE], dtype=object))},
    "scaled": {
        "image": ("BYTES", np.array([GOOD_IMAGE], dtype=object)),
        "scale": ("FP32", np.array([[2]], "<f4")),
    },
}


def good_rest(client: httpx.Client, model: str) -> dict[str, np.ndarray]:
    """A good binary request (every output in binary: ``wide``'s ``s`` is not text)."""
    inputs, chunks = [], []
    for name, (datatype, array) in GOOD_INPUTS[model].items():
        raw = to_raw(array, datatype)
        chunks.append(raw)
        inputs.append(
            {"name": name, "datatype": datatype, "shape": list(array.shape),
             "parameters": {"binary_data_size": len(raw)}}
        )  # fmt: skip
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    got = client.post(
        f"/v2/models/{model}/infer",
        content=head + b"".join(chunks),
        headers={"inference-header-content-length": str(len(head))},
    )
    assert got.status_code == 200, got.text
    return _rest_outputs(got)[1]


def good_grpc(call: Any, model: str) -> dict[str, np.ndarray]:
    request = messages.ModelInferRequest(model_name=model)
    for name, (datatype, array) in GOOD_INPUTS[model].items():
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(to_raw(array, datatype))
    response = call(request.SerializeToString(), timeout=TIMEOUT)
    return {
        out.name: _from_raw(raw, out.datatype, list(out.shape))
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def _reference(model: str) -> dict[str, np.ndarray] | None:
    inputs = {name: array for name, (_, array) in GOOD_INPUTS[model].items()}
    return expected_outputs(model, inputs)


class StillServing:
    """Checks a good request's answer: the model's own, and for outputs that come from
    decoding an image, the first answer it gave."""

    def __init__(self) -> None:
        self.answers = {model: _reference(model) or {} for model in MODELS}

    def check(self, model: str, outputs: dict[str, np.ndarray]) -> None:
        assert list(outputs) == list(OUTPUTS[model])
        want = self.answers[model]
        for name, array in outputs.items():
            want.setdefault(name, array)
            _same(name, array, want[name])
        if model == "image":
            assert outputs["pixels"].shape == (1, 16, 16, 3)


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]


def _report(tally: Counter[str]) -> None:
    """Check the fuzzing went deep: each model accepted good requests (their answers
    checked by value) and refused bad ones. FUZZ_TALLY=1 prints every kind of answer."""
    if os.environ.get("FUZZ_TALLY"):
        for line, count in sorted(tally.items()):
            print(f"{count:4d} {line}")
    answers = [key.split(" ", 3) for key in tally]
    checked = {model for model, status, how, _ in answers if status in OK and how == "checked"}
    refused = {model for model, status, _, _ in answers if status not in OK}
    assert checked >= set(MODELS) and refused >= set(MODELS), sorted(tally)


# --- the fuzzing -----------------------------------------------------------------------------


def test_fuzz_v2_rest_infer(
    served: GrpcServed, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    serving = StillServing()
    tally: Counter[str] = Counter()
    beside = httpx.Client(base_url=served.url, timeout=TIMEOUT)

    @FUZZ
    @given(rest_requests())
    def one(sent: Sent) -> None:
        model = sent.model or "types"
        # a good request at the same moment, which may share a model call with the fuzzed
        # one: it still gets its own answer, whatever happens to the other
        twin = pool.submit(good_rest, beside, model)
        check_rest(client, sent, tally)
        serving.check(model, twin.result(timeout=TIMEOUT))
        serving.check(model, good_rest(client, model))

    with beside, ThreadPoolExecutor(1, thread_name_prefix="fuzz-twin") as pool:
        with caplog.at_level(logging.ERROR):
            one()
    _no_errors_logged(caplog)
    _report(tally)


def test_fuzz_v2_grpc_model_infer(served: GrpcServed, caplog: pytest.LogCaptureFixture) -> None:
    serving = StillServing()
    tally: Counter[str] = Counter()
    channel, call = _grpc_call(served)

    @FUZZ
    @given(grpc_requests())
    def one(sent: Sent) -> None:
        model = sent.model or "types"
        twin = pool.submit(good_grpc, call, model)  # as over REST
        check_grpc(call, sent, tally)
        serving.check(model, twin.result(timeout=TIMEOUT))
        serving.check(model, good_grpc(call, model))

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="fuzz-twin") as pool:
            with caplog.at_level(logging.ERROR):
                one()
    finally:
        channel.close()
    _no_errors_logged(caplog)
    _report(tally)


def test_the_fuzz_models_answer_over_both_protocols(
    served: GrpcServed, client: httpx.Client
) -> None:
    # the fuzzing's own yardstick: each good request is answered as the model computes
    serving = StillServing()
    channel, call = _grpc_call(served)
    with channel:
        for model in MODELS:
            serving.check(model, good_rest(client, model))
            serving.check(model, good_grpc(call, model))


#: the other RPCs of the service, with the fields their requests have
_RPC_FIELDS = {
    "ServerLive": (),
    "ServerReady": (),
    "ServerMetadata": (),
    "ModelReady": ("name", "version"),
    "ModelMetadata": ("name", "version"),
    "ModelConfig": ("name", "version"),
    "ModelStatistics": ("name", "version"),
    "RepositoryIndex": ("repository_name", "ready"),
    "RepositoryModelLoad": ("repository_name", "model_name", "parameters"),
    "RepositoryModelUnload": ("repository_name", "model_name", "parameters"),
}
_NAME = st.sampled_from([*MODELS, "", "nope", "types/1", "ÄÖ"]) | st.text(max_size=8)
_VERSION = st.sampled_from(["", "1", "2", "3", "01", "-1", "x"]) | st.text(max_size=4)
_REPOSITORY_PARAMETER = st.one_of(
    st.tuples(st.just("bool_param"), st.booleans()),
    st.tuples(st.just("int64_param"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("string_param"), st.text(max_size=8)),
    st.tuples(st.just("bytes_param"), st.binary(max_size=8)),
)


@st.composite
def other_rpcs(draw: Any) -> tuple[str, Any]:
    method = draw(st.sampled_from(sorted(_RPC_FIELDS)))
    request_type, _ = method_types(method)
    request = request_type()
    for name in _RPC_FIELDS[method]:
        if name == "ready":
            request.ready = draw(st.booleans())
        elif name == "parameters":
            for key, (kind, value) in draw(
                st.dictionaries(st.text(max_size=6), _REPOSITORY_PARAMETER, max_size=2)
            ).items():
                setattr(request.parameters[key], kind, value)
        elif name == "version":
            setattr(request, name, draw(_VERSION))
        else:
            setattr(request, name, draw(_NAME))
    return method, request


def test_fuzz_v2_grpc_other_rpcs(served: GrpcServed, caplog: pytest.LogCaptureFixture) -> None:
    # the repository is not in explicit model control: load and unload are refused
    # (FAILED_PRECONDITION), and no model goes away under the other tests
    allowed = ALLOWED_CODES | {grpc.StatusCode.FAILED_PRECONDITION}
    channel = grpc.insecure_channel(served.grpc_address)

    @settings(FUZZ, max_examples=max(100, EXAMPLES // 3))
    @given(other_rpcs())
    def one(case: tuple[str, Any]) -> None:
        method, request = case
        _, response_type = method_types(method)
        call = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            call(request, timeout=TIMEOUT)
        except grpc.RpcError as exc:
            assert exc.code() in allowed, (method, exc.code(), exc.details())
            assert exc.details() and exc.details().strip(), (method, exc.code())

    try:
        with caplog.at_level(logging.ERROR):
            one()
        call = channel.unary_unary(
            f"/{SERVICE}/RepositoryIndex",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=method_types("RepositoryIndex")[1].FromString,
        )
        index = call(messages.RepositoryIndexRequest(ready=True), timeout=TIMEOUT)
        assert sorted({m.name for m in index.models}) == sorted(MODELS)
    finally:
        channel.close()
    _no_errors_logged(caplog)
