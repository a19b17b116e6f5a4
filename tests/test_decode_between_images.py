"""One V2 request of many images (a BYTES input of encoded JPEGs) stops decoding between
two of them once nobody wants it: its deadline has passed (504, as a late model call) or
its client has gone (dropped, as one that leaves while queued). Over V2 REST (the async
path, the binary extension built by tritonclient) and V2 gRPC (the threaded path).

The decode is made slow deterministically: a hook holds the first image's decoding on a
gate (the client leaves meanwhile), or until the request's own deadline has passed. The
model takes one decode thread, so a task queued behind the request's decoding tells the
test that decoding has ended; the decode pool is then idle and every slot given back.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from fixture_backends import EncodedImageBackend
from grpc_helpers import TIMEOUT, GrpcServed, grpc_serving_repository
from hostile import address
from hostile import request as raw_request
from images import jpeg
from scorepack import Scorer
from scorepack.decoding import DecodeSettings
from scorepack.proto.messages import messages
from scorepack.repository import ModelSource, Repository
from scorepack.server.grpc_v2 import GrpcOptions
from serving_helpers import scoring_config, wait_for

httpclient = pytest.importorskip("tritonclient.http")

IMAGES = 8
#: the "late" model's timeout: the first image's decoding outlasts it
LATE_TIMEOUT_MS = 1000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    """img and late: image models (16x16 RGB) the core decodes for, 8 images a request at
    most, one decode thread each; late times out after LATE_TIMEOUT_MS."""
    root = tmp_path_factory.mktemp("images")

    def source(name: str, **batching: Any) -> ModelSource:
        config = scoring_config(warmup=False, max_batch_size=IMAGES, max_delay_ms=0, **batching)
        backend = EncodedImageBackend(root / f"{name}.img", options={"encoded": "false"})
        return ModelSource(
            name,
            None,
            lambda: Scorer(backend, config, name=name, decode=DecodeSettings(threads=1)),
        )

    repository = Repository([source("img"), source("late", timeout_ms=LATE_TIMEOUT_MS)])
    with grpc_serving_repository(repository, grpc_options=GrpcOptions(0)) as served:
        yield served


class Hook:
    """Counts the images a model decodes; the first of a request can be held on a gate
    (or until the request's deadline) before it is decoded."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.real = scorer.decode_image
        self.calls = 0
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.until_deadline = False
        scorer.decode_image = self  # type: ignore[method-assign]

    def __call__(self, body: bytes) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            assert self.gate.wait(60), "the test never opened the gate"
            if self.until_deadline:
                from scorepack import decoding

                deadline = decoding._current.watch.deadline
                # past the request's deadline, for sure: the next checkpoint must see it
                for _ in range(1000):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)
        return self.real(body)

    def remove(self) -> None:
        self.gate.set()
        del self.scorer.decode_image


@pytest.fixture
def hook(served: GrpcServed, request: pytest.FixtureRequest) -> Iterator[Hook]:
    hook = Hook(served.scorer(request.param))
    try:
        yield hook
    finally:
        hook.remove()


def _images(count: int) -> np.ndarray:
    return np.array([jpeg(32, 24, seed=i) for i in range(count)], dtype=object)


def _rest_request(model: str, count: int) -> tuple[str, bytes, dict[str, str]]:
    """tritonclient's own binary request of ``count`` JPEGs in one BYTES input."""
    tensor = httpclient.InferInput("image", [count], "BYTES")
    tensor.set_data_from_numpy(_images(count), binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return f"/v2/models/{model}/infer", body, headers


def _grpc_call(served: GrpcServed, model: str, count: int) -> grpc.Future:
    message = messages.ModelInferRequest(model_name=model)
    message.inputs.add(name="image", datatype="BYTES", shape=[count])
    message.raw_input_contents.append(
        b"".join(len(b).to_bytes(4, "little") + b for b in _images(count))
    )
    return served._infer_call().future(message, timeout=TIMEOUT * 2)


def _answer(served: GrpcServed, protocol: str, model: str, count: int) -> int | str:
    """One request of ``count`` images, answered: its HTTP status or gRPC code's name."""
    if protocol == "grpc":
        try:
            _grpc_call(served, model, count).result(timeout=TIMEOUT * 2)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return "OK"
    path, body, headers = _rest_request(model, count)
    answer = httpx.post(served.url + path, content=body, headers=headers, timeout=TIMEOUT * 2)
    return answer.status_code


def _decoding_done(scorer: Scorer) -> None:
    # one decode thread: a task behind the request's decoding runs once that has ended
    scorer.decoder.run(lambda: None)


def _fail_count(served: GrpcServed, model: str) -> int:
    client = httpclient.InferenceServerClient(served.url.split("://", 1)[1])
    try:
        (stat,) = client.get_inference_statistics(model)["model_stats"]
    finally:
        client.close()
    return int(stat["inference_stats"]["fail"]["count"])


@pytest.mark.parametrize("hook", ["img"], indirect=True)
@pytest.mark.parametrize("protocol", ["v2", "grpc"])
def test_a_client_that_leaves_stops_the_decoding_of_its_images(
    served: GrpcServed, hook: Hook, protocol: str
) -> None:
    scorer = served.scorer("img")
    cancelled, failed = scorer.stats.cancelled, _fail_count(served, "img")
    hook.gate.clear()
    leave: Callable[[], object]
    if protocol == "grpc":
        call = _grpc_call(served, "img", IMAGES)
        leave = call.cancel
    else:
        path, body, headers = _rest_request("img", IMAGES)
        leaver = socket.create_connection(address(served.url), timeout=30)
        leaver.sendall(raw_request(served.url, path=path, body=body, headers=headers))
        leave = leaver.close
    assert hook.started.wait(60), "decoding never began"
    leave()
    wait_for(lambda: scorer.stats.cancelled == cancelled + 1, "the departure noticed", 60)
    hook.gate.set()
    _decoding_done(scorer)
    # one image decoded of eight: the rest were never started
    assert hook.calls == 1
    assert scorer.decoder.in_flight == 0
    assert scorer.batcher.queue_depth == 0
    assert _fail_count(served, "img") == failed + 1
    assert not any(rows == IMAGES for _, rows in served.backend("img").calls)
    # and the model goes on: a request of two images is decoded and answered
    assert _answer(served, protocol, "img", 2) == ("OK" if protocol == "grpc" else 200)
    assert hook.calls == 3


@pytest.mark.parametrize("hook", ["late"], indirect=True)
@pytest.mark.parametrize("protocol", ["v2", "grpc"])
def test_a_request_past_its_deadline_stops_the_decoding_of_its_images(
    served: GrpcServed, hook: Hook, protocol: str
) -> None:
    scorer = served.scorer("late")
    timeouts, failed = scorer.stats.timeouts, _fail_count(served, "late")
    model_calls = len(served.backend("late").calls)
    hook.until_deadline = True
    status = _answer(served, protocol, "late", IMAGES)
    assert status == ("DEADLINE_EXCEEDED" if protocol == "grpc" else 504)
    _decoding_done(scorer)
    assert hook.calls == 1
    assert scorer.stats.timeouts == timeouts + 1
    assert _fail_count(served, "late") == failed + 1
    assert scorer.decoder.in_flight == 0
    assert len(served.backend("late").calls) == model_calls  # no model call took any of it
    hook.until_deadline = False
    assert _answer(served, protocol, "late", 2) == ("OK" if protocol == "grpc" else 200)
    assert hook.calls == 3
