"""Model metadata, readiness and the model repository RPCs over V2 gRPC, with NVIDIA's
tritonclient.grpc as the client, against the same answers over V2 REST.

ModelMetadata lists every version of a model, as ``GET /v2/models/NAME`` does. A model that
is not ready (failed to load, unloaded) answers ModelMetadata UNAVAILABLE with its state
and reason in the message (the gRPC message has no fields for them; REST answers 200 with
``state`` and ``reason``), and ModelReady ``ready=false`` with both in trailing metadata.
RepositoryModelLoad/Unload/Index in ``--model-control explicit`` mode, and load and unload
of one model while others drive another with no failed request.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fixture_backends import EchoBackend
from grpc_helpers import GrpcServed, grpc_serving, grpc_serving_repository, raw_stub
from metrics_helpers import labelled, scrape, value
from scorepack import Scorer
from scorepack.repository import ModelSource, Repository
from serving_helpers import wait_for

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from scorepack.proto.messages import messages  # noqa: E402

TIMEOUT = 30.0
INFER = "/inference.GRPCInferenceService/ModelInfer"
X = np.array([[1.5, -2.0]], dtype=np.float32)


def echo_source(tmp: Path, name: str, version: str | None = None, **options: Any) -> ModelSource:
    def create() -> Scorer:
        path = tmp / f"{name}{version or ''}.echo"
        return Scorer(EchoBackend(path, options=options or None), name=name, version=version)

    return ModelSource(name, version, create)


def client(served: GrpcServed) -> Any:
    return tritonclient_grpc.InferenceServerClient(served.grpc_address)


def infer(triton: Any, model: str, x: np.ndarray = X) -> np.ndarray:
    tensor = tritonclient_grpc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return np.asarray(triton.infer(model, [tensor], client_timeout=TIMEOUT).as_numpy("y"))


def refused(call: Any, status: str, *words: str) -> str:
    with pytest.raises(InferenceServerException) as excinfo:
        call()
    assert str(excinfo.value.status()) == f"StatusCode.{status}", excinfo.value.message()
    message = str(excinfo.value.message())
    for word in words:
        assert word in message, (word, message)
    return message


def rest_metadata(served: GrpcServed, model: str, version: str | None = None) -> Any:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    response = httpx.get(served.url + path, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def model_ready_trailer(served: GrpcServed, model: str) -> tuple[bool, dict[str, str]]:
    """ModelReady's answer and its trailing metadata (tritonclient hides the latter)."""
    with raw_stub(served, "ModelReady") as call:
        response, rpc = call.with_call(messages.ModelReadyRequest(name=model), timeout=TIMEOUT)
    return bool(response.ready), dict(rpc.trailing_metadata() or ())


# --- metadata: the same answer as REST ----------------------------------------------------


def test_model_metadata_lists_every_version_as_rest_does(tmp_path: Path) -> None:
    repository = Repository([echo_source(tmp_path, "m", "1"), echo_source(tmp_path, "m", "2")])
    with grpc_serving_repository(repository) as served:
        triton = client(served)
        for version in ("", "1", "2"):
            meta = triton.get_model_metadata("m", version, as_json=True)
            rest = rest_metadata(served, "m", version)
            assert meta["versions"] == rest["versions"] == ["1", "2"]
            assert meta["name"] == rest["name"] == "m"
            assert meta["platform"] == rest["platform"]
            assert meta["inputs"] == [
                {**t, "shape": [str(d) for d in t["shape"]]} for t in rest["inputs"]
            ]  # tritonclient's JSON gives int64 fields as strings
        refused(lambda: triton.get_model_metadata("m", "3"), "NOT_FOUND", "'3'", "1, 2")
        refused(lambda: triton.get_model_metadata("nope"), "NOT_FOUND", "'nope'")
        np.testing.assert_array_equal(infer(triton, "m"), X)


def test_a_failed_model_is_unavailable_with_its_reason(tmp_path: Path) -> None:
    repository = Repository(
        [
            echo_source(tmp_path, "bad", load_delay="not a number"),
            # a reason longer than gRPC clients take in metadata (8 KiB), and not ASCII
            echo_source(tmp_path, "long", load_delay="é" * 20_000),
            echo_source(tmp_path, "good"),
        ]
    )
    with grpc_serving_repository(repository, wait_ready=False) as served:
        wait_for(
            lambda: repository.state("bad").state == "UNAVAILABLE", "the load to fail", TIMEOUT
        )
        wait_for(lambda: repository.state("good").state == "READY", "the good model", TIMEOUT)
        triton = client(served)
        rest = rest_metadata(served, "bad")
        assert rest["state"] == "UNAVAILABLE" and "not a number" in rest["reason"]
        message = refused(
            lambda: triton.get_model_metadata("bad"), "UNAVAILABLE", "'bad'", "UNAVAILABLE"
        )
        assert rest["reason"] in message
        assert not triton.is_model_ready("bad")
        ready, trailer = model_ready_trailer(served, "bad")
        assert not ready
        assert trailer["scorepack-model-state"] == "UNAVAILABLE"
        assert "not a number" in trailer["scorepack-model-reason"]
        refused(lambda: infer(triton, "bad"), "UNAVAILABLE", "not a number")
        wait_for(lambda: repository.state("long").state == "UNAVAILABLE", "the load to fail")
        assert not triton.is_model_ready("long")
        ready, trailer = model_ready_trailer(served, "long")
        reason = trailer["scorepack-model-reason"]
        assert not ready and len(reason) <= 2000 and reason.endswith("...") and "??" in reason
        # errors quoting it are cut too: the client gets the status meant, not a dropped call
        for call in (lambda: triton.get_model_metadata("long"), lambda: infer(triton, "long")):
            message = refused(call, "UNAVAILABLE", "'long'", "could not convert")
            assert len(message.encode()) <= 2000 and message.endswith("...")
        # the other model serves, and says nothing in ModelReady's trailer
        assert triton.is_model_ready("good")
        assert model_ready_trailer(served, "good") == (True, {})
        assert triton.get_model_metadata("good", as_json=True)["inputs"][0]["name"] == "x"
        np.testing.assert_array_equal(infer(triton, "good"), X)


# --- the repository RPCs ------------------------------------------------------------------


def test_load_unload_and_index_in_explicit_mode(tmp_path: Path) -> None:
    repository = Repository(
        [echo_source(tmp_path, "a"), echo_source(tmp_path, "b")], model_control="explicit"
    )
    with grpc_serving_repository(repository) as served:
        triton = client(served)
        np.testing.assert_array_equal(infer(triton, "a"), X)

        triton.unload_model("a")
        assert not triton.is_model_ready("a")
        assert model_ready_trailer(served, "a") == (
            False,
            {"scorepack-model-state": "UNAVAILABLE", "scorepack-model-reason": "unloaded"},
        )
        refused(lambda: infer(triton, "a"), "UNAVAILABLE", "'a'", "unloaded")
        refused(lambda: triton.get_model_metadata("a"), "UNAVAILABLE", "unloaded")
        assert rest_metadata(served, "a")["reason"] == "unloaded"
        index = triton.get_model_repository_index(as_json=True)["models"]
        assert index == [
            {"name": "a", "state": "UNAVAILABLE", "reason": "unloaded"},
            {"name": "b", "state": "READY"},  # proto3 JSON leaves the empty reason out
        ]
        assert triton.is_server_ready()  # an unloaded model is not waited for
        np.testing.assert_array_equal(infer(triton, "b"), X)

        triton.load_model("a")
        assert triton.is_model_ready("a")
        assert {m["state"] for m in triton.get_model_repository_index(as_json=True)["models"]} == {
            "READY"
        }
        np.testing.assert_array_equal(infer(triton, "a", 2 * X), 2 * X)

        refused(lambda: triton.load_model("zzz"), "NOT_FOUND", "'zzz'", "a, b")
        refused(lambda: triton.unload_model("zzz"), "NOT_FOUND", "'zzz'")
        np.testing.assert_array_equal(infer(triton, "a"), X)


def test_load_and_unload_need_explicit_mode(tmp_path: Path) -> None:
    with grpc_serving({"a": EchoBackend(tmp_path / "a.echo")}) as served:
        triton = client(served)
        refused(lambda: triton.unload_model("a"), "INVALID_ARGUMENT", "--model-control explicit")
        refused(lambda: triton.load_model("a"), "INVALID_ARGUMENT", "--model-control explicit")
        assert triton.is_model_ready("a")
        np.testing.assert_array_equal(infer(triton, "a"), X)


def test_load_and_unload_while_other_clients_drive_another_model(tmp_path: Path) -> None:
    repository = Repository(
        [echo_source(tmp_path, "steady"), echo_source(tmp_path, "swapped")],
        model_control="explicit",
    )
    clients, cap = 4, 3000  # requests per client at most: the loop is bounded either way
    with grpc_serving_repository(repository) as served:
        stop = threading.Event()
        lock = threading.Lock()
        answered: list[int] = []  # per client, how many answers it checked

        def drive(index: int) -> int:
            triton = client(served)
            x = np.array([[float(index), 1.0]], dtype=np.float32)
            count = 0
            try:
                while not stop.is_set() and count < cap:
                    # any failure raises out of the thread and fails the test below
                    np.testing.assert_array_equal(infer(triton, "steady", x), x)
                    count += 1
                    with lock:
                        answered[index] += 1
            finally:
                triton.close()
            return count

        def total() -> int:
            with lock:
                return sum(answered)

        def answers_while(what: str) -> None:
            # some "steady" answers arrive in this state: the swap overlapped real traffic
            before = total()
            wait_for(lambda: total() >= before + clients, f"steady answers while {what}", 60)

        answered.extend([0] * clients)
        control = client(served)
        with ThreadPoolExecutor(clients) as pool:
            workers = [pool.submit(drive, i) for i in range(clients)]
            try:
                answers_while("starting")
                for _ in range(3):
                    control.unload_model("swapped")
                    assert not control.is_model_ready("swapped")
                    answers_while("swapped is unloaded")
                    control.load_model("swapped")
                    assert control.is_model_ready("swapped")
                    answers_while("swapped is loaded")
            finally:
                stop.set()
            counts = [w.result(timeout=120) for w in workers]  # a failed request raises here
        np.testing.assert_array_equal(infer(control, "swapped"), X)
        control.close()
        with httpx.Client(base_url=served.url, timeout=TIMEOUT) as http:
            samples = scrape(http)
    assert sum(counts) == total() > 0
    # the server's own count: every ModelInfer on "steady" answered OK, none refused
    statuses = {
        labels["status"]: value(samples, "scorepack_requests_total", **labels)
        for labels in labelled(samples, "scorepack_requests_total")
        if labels.get("model") == "steady" and labels.get("route") == INFER
    }
    assert statuses == {"OK": sum(counts)}
