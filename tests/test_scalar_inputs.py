"""A model with an input that has no batch dimension (a scalar, as an ONNX graph may
take beside its rows). Before, the warm-up gave the scalar a value per row, so such an
ONNX graph failed to load ("Attempting to broadcast an axis..."), and with the warm-up
off every request was a 500 (``IndexError``: the core's batch-size check read the
scalar's shape[0]) on ``/score``, V2 REST and V2 gRPC. Now the scalar says nothing about
the batch size, the warm-up gives it one value, and only requests with the same value
share a model call (each gets its own value's answer).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from fixture_backends import ScalarBackend
from grpc_helpers import TIMEOUT, GrpcServed, grpc_serving, raw_stub
from scorepack.proto.messages import messages
from serving_helpers import wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    backend = ScalarBackend(tmp_path_factory.mktemp("scalar") / "s.m")
    with grpc_serving({"s": backend}) as s:  # warmed up: the warm-up's k is a scalar too
        yield s


@pytest.fixture(scope="module")
def client(served: GrpcServed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as c:
        yield c


def v2_document(x: list[list[float]], k: float) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [len(x), 2], "data": x},
            {"name": "k", "datatype": "FP32", "shape": [], "data": [k]},
        ]
    }


def test_a_scalar_input_over_every_protocol(served: GrpcServed, client: httpx.Client) -> None:
    got = client.post("/v2/models/s/infer", json=v2_document([[1, 2], [3, 4]], 3))
    assert got.status_code == 200, got.text
    assert got.json()["outputs"][0]["data"] == [3, 6, 9, 12]
    got = client.post("/score", params={"raw": "true"}, json={"inputs": {"x": [[1, 2]], "k": 2}})
    assert got.status_code == 200, got.text
    assert got.json()["outputs"]["y"] == [[2, 4]]
    request = messages.ModelInferRequest(model_name="s")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.inputs.add(name="k", datatype="FP32", shape=[])
    request.raw_input_contents.extend(
        [np.array([[1, 2]], "<f4").tobytes(), np.array(5, "<f4").tobytes()]
    )
    with raw_stub(served, "ModelInfer") as call:
        response = call(request, timeout=TIMEOUT)
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4"), [5, 10])
    assert [o.shape for o in response.outputs] == [[1, 2]]


def test_a_scalar_given_rows_is_refused(client: httpx.Client) -> None:
    document = v2_document([[1, 2]], 3)
    document["inputs"][1].update(shape=[1], data=[3])  # type: ignore[index]
    got = client.post("/v2/models/s/infer", json=document)
    assert got.status_code == 400, got.text
    assert "'k'" in got.json()["error"]


def test_only_requests_with_the_same_scalar_share_a_call(
    served: GrpcServed, client: httpx.Client
) -> None:
    backend: ScalarBackend = served.backend("s")
    backend.calls.clear()
    backend.entered.clear()
    backend.gate.clear()  # the model thread is held by the first request
    answers: dict[str, list[float]] = {}

    def send(tag: str, x: list[list[float]], k: float) -> None:
        got = client.post("/v2/models/s/infer", json=v2_document(x, k))
        assert got.status_code == 200, got.text
        answers[tag] = got.json()["outputs"][0]["data"]

    first = threading.Thread(target=send, args=("first", [[1, 1]], 1))
    first.start()
    try:
        assert backend.entered.wait(TIMEOUT)
        queued = [
            threading.Thread(target=send, args=(tag, [[1, 2]], k))
            for tag, k in (("two", 2), ("three", 3), ("two again", 2))
        ]
        for thread in queued:
            thread.start()
        scorer = served.scorer("s")
        wait_for(lambda: scorer.batcher.queued == 3, "three requests queued", TIMEOUT)
    finally:
        backend.gate.set()
    for thread in [first, *queued]:
        thread.join(TIMEOUT)
    assert answers == {
        "first": [1, 1], "two": [2, 4], "three": [3, 6], "two again": [2, 4]
    }  # fmt: skip
    # k=2 twice in one call (two rows), k=3 in its own
    assert sorted(backend.calls) == [(1, 1.0), (1, 3.0), (2, 2.0)]
    with raw_stub(served, "ServerLive") as call:
        assert call(messages.ServerLiveRequest(), timeout=TIMEOUT).live


def test_an_onnx_graph_with_a_scalar_input(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from onnx_models import times_scalar
    from scorepack_onnx import OnnxBackend

    backend = OnnxBackend(times_scalar(tmp_path / "times.onnx"), device="cpu")
    with grpc_serving({"times": backend}) as served:
        assert served.scorer("times").signature.input("k").batched is False
        with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:
            got = client.post("/v2/models/times/infer", json=v2_document([[1, 2], [3, 4]], 0.5))
            assert got.status_code == 200, got.text
            assert got.json()["outputs"][0]["data"] == [0.5, 1, 1.5, 2]
            got = client.post(
                "/score", params={"raw": "true"}, json={"inputs": {"x": [[2, 2]], "k": 4}}
            )
            assert got.status_code == 200, got.text
            assert got.json()["outputs"]["y"] == [[8, 8]]
