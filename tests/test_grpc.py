"""The V2 gRPC service over real loopback, with NVIDIA's tritonclient as the client.

Health, metadata and the repository index; inference with FP32, INT64, BOOL, FP16 and
BYTES both as raw bytes (what tritonclient sends) and as typed ``contents``; errors as
status codes; keys; deadlines, cancellation, a full queue and size limits; and the same
answer for the same JPEG over ``/score``, V2 REST and V2 gRPC.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from fixture_backends import EchoBackend, SlowBackend
from grpc_helpers import GrpcServed, grpc_serving, raw_stub
from images import jpeg
from serving_helpers import scoring_config, wait_for
from typed_backend import NoHalvesBackend, TypedBackend

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from scorepack.client_v2 import RestV2Client, decode_raw  # noqa: E402
from scorepack.proto.messages import messages  # noqa: E402

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    """echo (x float32 [N, 2] → y), typed (BOOL, INT64, FP16, BYTES) and typed32 (the same
    without FP16) in one server."""
    root = tmp_path_factory.mktemp("grpc_models")
    backends = {
        "echo": EchoBackend(root / "echo.echo"),
        "typed": TypedBackend(root / "t.typed"),
        "typed32": NoHalvesBackend(root / "t32.typed"),
    }
    with grpc_serving(backends) as served:
        yield served


def client(served: GrpcServed) -> tritonclient_grpc.InferenceServerClient:
    return tritonclient_grpc.InferenceServerClient(served.grpc_address)


def infer_input(name: str, array: np.ndarray, datatype: str) -> object:
    tensor = tritonclient_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def status_of(excinfo: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(excinfo.value.status())


# --- health, metadata, repository ------------------------------------------------------


def test_health(echo: GrpcServed) -> None:
    triton = client(echo)
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("echo")
    assert triton.is_model_ready("typed")
    assert triton.is_model_ready("typed", "")
    with pytest.raises(InferenceServerException) as excinfo:
        triton.is_model_ready("nope")
    assert status_of(excinfo) == "StatusCode.NOT_FOUND"
    assert "nope" in excinfo.value.message() and "echo" in excinfo.value.message()


def test_server_metadata(echo: GrpcServed) -> None:
    meta = client(echo).get_server_metadata(as_json=True)
    assert meta["name"] == "scorepack"
    assert "model_repository" in meta["extensions"]


def test_model_metadata(echo: GrpcServed) -> None:
    meta = client(echo).get_model_metadata("typed", as_json=True)
    inputs = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]}
    assert inputs == {
        "flags": ("BOOL", [-1, 3]),
        "counts": ("INT64", [-1, 2]),
        "halves": ("FP16", [-1, 2]),
        "texts": ("BYTES", [-1]),
    }
    rest = httpx.get(echo.url + "/v2/models/typed", timeout=TIMEOUT).json()
    assert meta["name"] == rest["name"] == "typed"
    assert meta["platform"] == rest["platform"]
    assert meta["inputs"] == [
        {**t, "shape": [str(d) for d in t["shape"]]} for t in rest["inputs"]
    ]  # tritonclient's JSON gives int64 fields as strings
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [
        ("not_flags", "BOOL"),
        ("doubled", "INT64"),
        ("halves_out", "FP16"),
        ("texts_out", "BYTES"),
        ("lengths", "INT32"),
    ]


def test_repository_index(echo: GrpcServed) -> None:
    index = client(echo).get_model_repository_index(as_json=True)["models"]
    assert sorted(m["name"] for m in index) == ["echo", "typed", "typed32"]
    assert {m["state"] for m in index} == {"READY"}


# --- inference -------------------------------------------------------------------------


def test_infer_fp32(echo: GrpcServed) -> None:
    x = np.array([[1.5, -2.0], [3.25, 4.0]], dtype=np.float32)
    result = client(echo).infer("echo", [infer_input("x", x, "FP32")], request_id="req-7")
    np.testing.assert_array_equal(result.as_numpy("y"), x)
    response = result.get_response()
    assert response.id == "req-7"
    assert response.model_name == "echo"
    assert response.outputs[0].datatype == "FP32"


def _typed_inputs() -> dict[str, tuple[np.ndarray, str]]:
    return {
        "flags": (np.array([[True, False, True], [False, False, True]]), "BOOL"),
        "counts": (np.array([[1, -2], [2**40, 7]], dtype=np.int64), "INT64"),
        "halves": (np.array([[0.5, 1.25], [-3.0, 0.0]], dtype=np.float16), "FP16"),
        "texts": (np.array([b"abc", "h\u00e9".encode()], dtype=object), "BYTES"),
    }


def _check_typed(outputs: dict[str, np.ndarray]) -> None:
    inputs = {k: v for k, (v, _) in _typed_inputs().items()}
    np.testing.assert_array_equal(outputs["not_flags"], ~inputs["flags"])
    assert outputs["not_flags"].dtype == np.bool_
    np.testing.assert_array_equal(outputs["doubled"], inputs["counts"] * 2)
    assert outputs["doubled"].dtype == np.int64
    np.testing.assert_array_equal(outputs["halves_out"], inputs["halves"] * 2)
    assert outputs["halves_out"].dtype == np.float16
    assert list(outputs["texts_out"]) == [b"ABC", "H\u00e9".encode().upper()]
    np.testing.assert_array_equal(outputs["lengths"], [3, 3])


def test_infer_bool_int64_fp16_bytes_raw(echo: GrpcServed) -> None:
    tensors = [infer_input(n, a, d) for n, (a, d) in _typed_inputs().items()]
    result = client(echo).infer("typed", tensors)
    names = ("not_flags", "doubled", "halves_out", "texts_out", "lengths")
    _check_typed({n: result.as_numpy(n) for n in names})
    datatypes = {o.name: o.datatype for o in result.get_response().outputs}
    assert datatypes == {
        "not_flags": "BOOL",
        "doubled": "INT64",
        "halves_out": "FP16",
        "texts_out": "BYTES",
        "lengths": "INT32",
    }


_FIELDS = {
    "BOOL": "bool_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "BYTES": "bytes_contents",
}


def test_infer_with_typed_contents(echo: GrpcServed) -> None:
    """Inputs in InferTensorContents (tritonclient only sends raw ones): the same answers."""
    request = messages.ModelInferRequest(model_name="typed32")
    for name, (array, datatype) in _typed_inputs().items():
        if datatype == "FP16":
            continue  # typed32 has no FP16 input: FP16 has no contents field
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        getattr(tensor.contents, _FIELDS[datatype]).extend(array.reshape(-1).tolist())
    with raw_stub(echo, "ModelInfer") as call:
        response = call(request, timeout=TIMEOUT)
    outputs = {
        out.name: decode_raw(raw, out.datatype, list(out.shape))
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    inputs = {k: v for k, (v, _) in _typed_inputs().items()}
    np.testing.assert_array_equal(outputs["not_flags"], ~inputs["flags"])
    np.testing.assert_array_equal(outputs["doubled"], inputs["counts"] * 2)
    assert list(outputs["texts_out"]) == [b"ABC", "H\u00e9".encode().upper()]


def test_fp16_in_contents_is_refused_with_the_reason(echo: GrpcServed) -> None:
    request = messages.ModelInferRequest(model_name="typed")
    tensor = request.inputs.add(name="halves", datatype="FP16", shape=[1, 2])
    tensor.contents.fp32_contents.extend([1.0, 2.0])
    with raw_stub(echo, "ModelInfer") as call:
        with pytest.raises(grpc.RpcError) as excinfo:
            call(request, timeout=TIMEOUT)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16" in excinfo.value.details() and "raw" in excinfo.value.details()


def test_requested_outputs_only(echo: GrpcServed) -> None:
    tensors = [infer_input(n, a, d) for n, (a, d) in _typed_inputs().items()]
    wanted = [tritonclient_grpc.InferRequestedOutput("lengths")]
    result = client(echo).infer("typed", tensors, outputs=wanted)
    assert [o.name for o in result.get_response().outputs] == ["lengths"]
    np.testing.assert_array_equal(result.as_numpy("lengths"), [3, 3])


# --- errors ----------------------------------------------------------------------------


_X = np.zeros((1, 2), np.float32)


@pytest.mark.parametrize(
    ("model", "tensor", "code", "words"),
    [
        ("nope", ("x", _X, "FP32"), "NOT_FOUND", ["nope"]),
        ("echo", ("z", _X, "FP32"), "INVALID_ARGUMENT", ["'z'"]),
        ("echo", ("x", np.zeros((1, 3), np.float32), "FP32"), "INVALID_ARGUMENT", ["'x'"]),
        ("echo", ("x", np.array([b"a", b"b"], object), "BYTES"), "INVALID_ARGUMENT", ["'x'"]),
    ],
    ids=["unknown model", "unknown input", "wrong shape", "wrong datatype"],
)
def test_errors_are_status_codes(
    echo: GrpcServed,
    model: str,
    tensor: tuple[str, np.ndarray, str],
    code: str,
    words: list[str],
) -> None:
    tensors = [infer_input(*tensor)]
    with pytest.raises(InferenceServerException) as excinfo:
        client(echo).infer(model, tensors)
    assert status_of(excinfo) == f"StatusCode.{code}"
    for word in words:
        assert word in excinfo.value.message()
    good = client(echo).infer("echo", [infer_input("x", np.ones((1, 2), np.float32), "FP32")])
    np.testing.assert_array_equal(good.as_numpy("y"), [[1, 1]])


def test_an_rpc_not_served_is_unimplemented(echo: GrpcServed) -> None:
    # TraceSetting is in Triton's service but not served here
    with raw_stub(echo, "TraceSetting") as call:
        with pytest.raises(grpc.RpcError) as excinfo:
            call(messages.TraceSettingRequest(model_name="echo"), timeout=TIMEOUT)
    assert excinfo.value.code() == grpc.StatusCode.UNIMPLEMENTED
    np.testing.assert_array_equal(echo.infer("echo", np.ones((1, 2), np.float32)), [[1, 1]])


def test_keys_guard_everything_but_the_probes(tmp_path: Path) -> None:
    with grpc_serving({"echo": EchoBackend(tmp_path / "e.echo")}, auth_keys=("k1",)) as served:
        triton = client(served)
        assert triton.is_server_live() and triton.is_server_ready()
        x = [infer_input("x", np.ones((1, 2), np.float32), "FP32")]
        with pytest.raises(InferenceServerException) as excinfo:
            triton.infer("echo", x)
        assert status_of(excinfo) == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as excinfo:
            triton.infer("echo", x, headers={"authorization": "Bearer wrong"})
        assert status_of(excinfo) == "StatusCode.UNAUTHENTICATED"
        result = triton.infer("echo", x, headers={"authorization": "Bearer k1"})
        np.testing.assert_array_equal(result.as_numpy("y"), [[1, 1]])


# --- deadlines, cancellation, limits ---------------------------------------------------


@pytest.fixture
def held(tmp_path: Path) -> Iterator[GrpcServed]:
    """A slow echo whose model thread a test can hold (its gate)."""
    with grpc_serving({"slow": SlowBackend(tmp_path / "s.slow")}, warmup=False) as served:
        yield served


def _hold_the_model(served: GrpcServed) -> grpc.Future:
    """Close the gate and send a request that the model thread then sits on."""
    backend = served.backend("slow")
    backend.gate.clear()
    backend.entered.clear()
    first = served.future_infer("slow", np.full((1, 2), 1.0, np.float32))
    assert backend.entered.wait(TIMEOUT), "the model never got the first request"
    return first


def _given_up(batcher: Any) -> bool:
    """Whether the server is done with every request but the one in the model: none is
    being decoded (a cancelled one released its place, for good) and whatever is queued
    is cancelled (no model call will take it). Submitting moves a request from decoding
    to queued under one lock, so no request can slip between the two checks."""
    with batcher._cond:
        return batcher._upstream == 0 and all(w.future.cancelled() for w in batcher._queue)


def test_expired_deadline_leaves_the_queue_before_the_model_call(held: GrpcServed) -> None:
    backend, batcher = held.backend("slow"), held.scorer("slow").batcher
    first = _hold_the_model(held)
    # rows marked 7.0: if the model ever sees one, the expired request reached it
    late = held.future_infer("slow", np.full((1, 2), 7.0, np.float32), timeout=2.0)
    wait_for(lambda: batcher.queue_depth >= 1 or late.done(), "the second request queued")
    with pytest.raises(grpc.RpcError) as excinfo:
        late.result(timeout=TIMEOUT)
    assert excinfo.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # the server gives up on it too (a moment after the client may), while the model thread
    # is still busy with the first request
    wait_for(lambda: _given_up(batcher), "the server to cancel the expired request")
    wait_for(lambda: held.scorer("slow").stats.cancelled == 1, "the call to be let go")
    backend.gate.set()
    first.result(timeout=TIMEOUT)
    after = held.infer("slow", np.full((1, 2), 2.0, np.float32))
    np.testing.assert_array_equal(after, [[2.0, 2.0]])
    assert (7.0, 7.0) not in backend.seen
    assert batcher.queue_depth == 0


def test_cancelled_call_leaves_the_queue_before_the_model_call(held: GrpcServed) -> None:
    backend, batcher = held.backend("slow"), held.scorer("slow").batcher
    first = _hold_the_model(held)
    cancelled = held.future_infer("slow", np.full((1, 2), 9.0, np.float32))
    # in the queue itself, not only admitted (queue_depth counts requests still being
    # decoded): otherwise the check below passes on an empty queue and the gate opens early
    wait_for(lambda: len(batcher._queue) >= 1, "the second request queued")
    assert cancelled.cancel()
    # the server learns of it while the model thread is still busy with the first request,
    # and the call's thread stops waiting for it
    wait_for(lambda: _given_up(batcher), "the server to cancel the queued request")
    wait_for(lambda: held.scorer("slow").stats.cancelled == 1, "the call to be let go")
    backend.gate.set()
    first.result(timeout=TIMEOUT)
    after = held.infer("slow", np.full((1, 2), 3.0, np.float32))
    np.testing.assert_array_equal(after, [[3.0, 3.0]])
    assert (9.0, 9.0) not in backend.seen


def test_cancelled_call_waiting_to_be_decoded_gives_up_its_place(tmp_path: Path) -> None:
    # one row a batch: two decode slots, one for the model call, one for the next batch
    config = scoring_config(warmup=False, max_batch_size=1)
    with grpc_serving({"slow": SlowBackend(tmp_path / "s.slow")}, config=config) as served:
        scorer = served.scorer("slow")
        batcher, stage = scorer.batcher, scorer.decoder
        first = _hold_the_model(served)
        second = served.future_infer("slow", np.full((1, 2), 2.0, np.float32))
        wait_for(lambda: len(batcher._queue) >= 1, "the second request queued")
        third = served.future_infer("slow", np.full((1, 2), 9.0, np.float32))
        wait_for(lambda: stage.waiting == 1, "the third request to wait for a decode slot")
        assert third.cancel()
        # it leaves while the model is still held: no slot, no place in the queue
        wait_for(lambda: stage.waiting == 0, "the cancelled request to stop waiting")
        wait_for(lambda: scorer.stats.cancelled == 1, "the call to be let go")
        wait_for(lambda: batcher.queue_depth == 1, "its place in the queue to be given up")
        served.backend("slow").gate.set()
        first.result(timeout=TIMEOUT)
        second.result(timeout=TIMEOUT)
        assert (9.0, 9.0) not in served.backend("slow").seen
        wait_for(lambda: stage.in_flight == 0, "every decode slot to be given back")


def test_full_queue_is_unavailable_with_retry_after(tmp_path: Path) -> None:
    config = scoring_config(warmup=False, max_queue_size=1)
    with grpc_serving({"slow": SlowBackend(tmp_path / "s.slow")}, config=config) as served:
        batcher = served.scorer("slow").batcher
        first = _hold_the_model(served)
        queued = served.future_infer("slow", np.ones((1, 2), np.float32))
        wait_for(lambda: batcher.queue_depth >= 1, "the second request queued")
        refused = served.future_infer("slow", np.ones((1, 2), np.float32))
        with pytest.raises(grpc.RpcError) as excinfo:
            refused.result(timeout=TIMEOUT)
        error = excinfo.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "queue" in error.details()
        assert int(dict(error.trailing_metadata())["retry-after"]) >= 1
        served.backend("slow").gate.set()
        first.result(timeout=TIMEOUT)
        queued.result(timeout=TIMEOUT)
        # the refused call never reached the model; the next one is answered
        after = served.infer("slow", np.full((1, 2), 5.0, np.float32))
        np.testing.assert_array_equal(after, [[5.0, 5.0]])


def test_message_over_the_body_limit_is_resource_exhausted(tmp_path: Path) -> None:
    config = scoring_config(max_body_bytes=64 * 1024)
    with grpc_serving({"echo": EchoBackend(tmp_path / "e.echo")}, config=config) as served:
        big = np.zeros((10_000, 2), np.float32)  # 80 kB of raw data
        with pytest.raises(InferenceServerException) as excinfo:
            client(served).infer("echo", [infer_input("x", big, "FP32")])
        assert status_of(excinfo) == "StatusCode.RESOURCE_EXHAUSTED"
        small = np.ones((1000, 2), np.float32)
        result = client(served).infer("echo", [infer_input("x", small, "FP32")])
        np.testing.assert_array_equal(result.as_numpy("y"), small)


# --- one answer, three protocols -------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    """The ONNX conv classifier: image [N, 3, 8, 8] → probs [N, 4], from JPEGs."""
    pytest.importorskip("onnxruntime")
    from onnx_models import conv_classifier
    from scorepack_onnx import OnnxBackend

    path = conv_classifier(tmp_path_factory.mktemp("grpc_onnx") / "conv.onnx")
    with grpc_serving({"conv": OnnxBackend(path, device="cpu")}) as served:
        yield served


def test_a_jpeg_gives_the_same_answer_on_every_protocol(classifier: GrpcServed) -> None:
    image = jpeg(40, 30, seed=5)
    over_score = httpx.post(
        classifier.url + "/score",
        content=image,
        headers={"content-type": "image/jpeg"},
        params={"raw": "true"},
        timeout=TIMEOUT,
    )
    assert over_score.status_code == 200, over_score.text
    expected = np.asarray(over_score.json()["outputs"]["probs"], dtype=np.float32)
    encoded = np.array([image], dtype=object)
    with RestV2Client(classifier.url) as rest:
        over_rest = rest.infer("conv", {"image": encoded}).outputs["probs"]
    over_grpc = client(classifier).infer("conv", [infer_input("image", encoded, "BYTES")])
    probs = over_grpc.as_numpy("probs")
    assert expected.shape == over_rest.shape == probs.shape == (1, 4)
    # the same bytes through the same decoder and model: the same float32s, whatever the
    # protocol (/score's JSON holds them as shortest round-trip decimals)
    np.testing.assert_array_equal(probs, over_rest)
    np.testing.assert_array_equal(probs, expected)
