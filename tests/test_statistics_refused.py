"""Which refused requests Triton's statistics extension counts, over ``/score``, V2 REST
and V2 gRPC alike, read with NVIDIA's tritonclient.

As Triton does (triton-inference-server/core: ``InferenceRequest::PrepareForInference``
checks a request's inputs before its statistics start; a full queue is an error of
``DynamicBatchScheduler::Enqueue``, before any; requests its scheduler drops for a
timeout or a cancellation are failures, REJECTED and CANCELED), a request refused at
admission (queue full) or as bad input while it is decoded counts nowhere; one that
timed out or was cancelled while it waited counts in ``fail``, and so does one the model
itself refused (Triton's BACKEND failures). Each scenario checks that the counts move by
exactly the requests it sent.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from fixture_backends import ErrorBackend, SlowBackend
from grpc_helpers import TIMEOUT, GrpcServed, grpc_serving_repository
from hostile import address, request
from scorepack import Scorer
from scorepack.proto.messages import messages
from scorepack.repository import ModelSource, Repository
from scorepack.server.grpc_v2 import GrpcOptions
from serving_helpers import scoring_config, wait_for

httpclient = pytest.importorskip("tritonclient.http")

PROTOCOLS = ("score", "v2", "grpc")
#: the "late" model's timeout: its requests held behind a busy model get their 504
LATE_TIMEOUT_MS = 1000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    """held: a slow echo, one request a call, room for one queued request; late: the
    same with a short timeout; error: an echo whose model refuses rows with x[0] < 0."""
    root = tmp_path_factory.mktemp("refused")

    def source(name: str, backend: Any, **batching: Any) -> ModelSource:
        config = scoring_config(warmup=False, max_batch_size=1, max_delay_ms=0, **batching)
        return ModelSource(name, None, lambda: Scorer(backend, config, name=name))

    repository = Repository(
        [
            source("held", SlowBackend(root / "h.slow"), max_queue_size=1),
            source("late", SlowBackend(root / "l.slow"), timeout_ms=LATE_TIMEOUT_MS),
            source("error", ErrorBackend(root / "e.error")),
        ]
    )
    with grpc_serving_repository(repository, grpc_options=GrpcOptions(0)) as served:
        yield served


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


def _counts(served: GrpcServed, model: str) -> dict[str, int]:
    client = httpclient.InferenceServerClient(served.url.split("://", 1)[1])
    try:
        (stat,) = client.get_inference_statistics(model)["model_stats"]
    finally:
        client.close()
    infer = stat["inference_stats"]
    return {
        "success": int(infer["success"]["count"]),
        "fail": int(infer["fail"]["count"]),
        "queue": int(infer["queue"]["count"]),
        "inference_count": int(stat["inference_count"]),
    }


def _moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in before}


def _http_request(
    protocol: str, model: str, x: list[list[float]], datatype: str = "FP32"
) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of one request of rows ``x`` over /score or V2 REST."""
    if protocol == "score":
        return f"/score?model={model}", {"inputs": {"x": x}}
    rows = len(x)
    tensor = {"name": "x", "datatype": datatype, "shape": [rows, 2], "data": x}
    return f"/v2/models/{model}/infer", {"inputs": [tensor]}


def _status(protocol: str, outcome: Any) -> int | str:
    """An HTTP status, or a gRPC status code's name."""
    if protocol == "grpc":
        if isinstance(outcome, grpc.RpcError):
            return str(outcome.code().name)
        return "OK"
    assert isinstance(outcome, httpx.Response)
    return outcome.status_code


def _send(
    served: GrpcServed,
    pool: ThreadPoolExecutor,
    protocol: str,
    model: str,
    x: list[list[float]],
    datatype: str = "FP32",
) -> Callable[[], int | str]:
    """Send one request without waiting; returns a function that waits for its status."""
    if protocol == "grpc":
        call = _grpc_infer(served, model, x, datatype)

        def grpc_status() -> int | str:
            try:
                call.result(timeout=TIMEOUT * 2)
            except grpc.RpcError as exc:
                return _status(protocol, exc)
            return "OK"

        return grpc_status
    path, body = _http_request(protocol, model, x, datatype)
    future: Future[httpx.Response] = pool.submit(
        httpx.post, served.url + path, json=body, timeout=TIMEOUT * 2
    )
    return lambda: _status(protocol, future.result(TIMEOUT * 2))


def _grpc_infer(
    served: GrpcServed, model: str, x: list[list[float]], datatype: str = "FP32"
) -> grpc.Future:
    array = np.array(x, "<f8" if datatype == "FP64" else "<f4")
    message = messages.ModelInferRequest(model_name=model)
    message.inputs.add(name="x", datatype=datatype, shape=list(array.shape))
    message.raw_input_contents.append(array.tobytes())
    return served._infer_call().future(message, timeout=TIMEOUT * 2)


def _hold(
    served: GrpcServed, pool: ThreadPoolExecutor, protocol: str, model: str
) -> Callable[[], int | str]:
    """Close the model's gate and send a request its model thread then sits on."""
    backend = served.backend(model)
    backend.gate.clear()
    backend.entered.clear()
    first = _send(served, pool, protocol, model, [[1.0, 1.0]])
    assert backend.entered.wait(TIMEOUT), "the model never got the first request"
    return first


def _queued(served: GrpcServed, model: str, count: int = 1) -> None:
    batcher = served.scorer(model).batcher
    # in the queue itself (queue_depth also counts requests being decoded)
    wait_for(lambda: len(batcher._queue) >= count, "the request to queue", timeout=60)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_full_queue_is_counted_nowhere(
    served: GrpcServed, pool: ThreadPoolExecutor, protocol: str
) -> None:
    before = _counts(served, "held")
    first = _hold(served, pool, protocol, "held")
    try:
        second = _send(served, pool, protocol, "held", [[2.0, 2.0]])
        _queued(served, "held")
        refused = _send(served, pool, protocol, "held", [[3.0, 3.0]])()
        assert refused == ("UNAVAILABLE" if protocol == "grpc" else 503)
    finally:
        served.backend("held").gate.set()
    ok = "OK" if protocol == "grpc" else 200
    assert (first(), second()) == (ok, ok)
    # the two answered, and nothing for the refused one: it never reached the model
    assert _moved(before, _counts(served, "held")) == {
        "success": 2,
        "fail": 0,
        "queue": 2,
        "inference_count": 2,
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_input_is_counted_nowhere_but_the_models_own_refusal_fails(
    served: GrpcServed, pool: ThreadPoolExecutor, protocol: str
) -> None:
    before = _counts(served, "error")
    bad = 400 if protocol != "grpc" else "INVALID_ARGUMENT"
    # refused while decoded: three columns where the model takes two, then FP64 for FP32
    # (the one check /score has no twin of: its JSON has no datatypes)
    assert _send(served, pool, protocol, "error", [[1.0, 2.0, 3.0]])() == bad
    if protocol != "score":
        assert _send(served, pool, protocol, "error", [[1.0, 2.0]], "FP64")() == bad
    assert _moved(before, _counts(served, "error"))["fail"] == 0
    # a row the model itself refuses (the framework's own check): a failure of the model,
    # as Triton counts a backend's
    assert _send(served, pool, protocol, "error", [[-1.0, 2.0]])() == bad
    assert _send(served, pool, protocol, "error", [[1.0, 2.0]])() == (
        "OK" if protocol == "grpc" else 200
    )
    assert _moved(before, _counts(served, "error")) == {
        "success": 1,
        "fail": 1,
        "queue": 1,
        "inference_count": 1,
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_that_times_out_waiting_fails(
    served: GrpcServed, pool: ThreadPoolExecutor, protocol: str
) -> None:
    before = _counts(served, "late")
    first = _hold(served, pool, protocol, "late")
    try:
        second = _send(served, pool, protocol, "late", [[2.0, 2.0]])
        late = "DEADLINE_EXCEEDED" if protocol == "grpc" else 504
        # the queued one times out; the held one too, its deadline came first
        assert second() == late
        assert first() == late
        failed = _moved(before, _counts(served, "late"))
    finally:
        served.backend("late").gate.set()
    assert failed == {"success": 0, "fail": 2, "queue": 0, "inference_count": 0}
    ok = "OK" if protocol == "grpc" else 200
    assert _send(served, pool, protocol, "late", [[4.0, 4.0]])() == ok


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_whose_client_leaves_while_queued_fails(
    served: GrpcServed, pool: ThreadPoolExecutor, protocol: str
) -> None:
    scorer = served.scorer("held")
    before, cancelled = _counts(served, "held"), scorer.stats.cancelled
    first = _hold(served, pool, protocol, "held")
    try:
        if protocol == "grpc":
            call = _grpc_infer(served, "held", [[9.0, 9.0]])
            _queued(served, "held")
            assert call.cancel()
        else:
            path, body = _http_request(protocol, "held", [[9.0, 9.0]])
            leaver = socket.create_connection(address(served.url), timeout=30)
            raw = json.dumps(body).encode()
            headers = {"Content-Type": "application/json"}
            leaver.sendall(request(served.url, path=path, body=raw, headers=headers))
            _queued(served, "held")
            leaver.close()
        wait_for(
            lambda: scorer.stats.cancelled == cancelled + 1, "the departure noticed", timeout=60
        )
    finally:
        served.backend("held").gate.set()
    assert first() == ("OK" if protocol == "grpc" else 200)
    assert (9.0, 9.0) not in served.backend("held").seen
    assert _moved(before, _counts(served, "held")) == {
        "success": 1,
        "fail": 1,
        "queue": 1,
        "inference_count": 1,
    }
