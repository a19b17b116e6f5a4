"""Triton's model configuration and statistics extensions, driven by NVIDIA's tritonclient
(http and grpc) over loopback: the configuration against the real models (ONNX graphs
that batch and one that does not), the statistics' counts before and after known traffic,
and the REST and gRPC answers against each other."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from google.protobuf import json_format

from fixture_backends import EchoBackend
from grpc_helpers import GrpcServed, grpc_serving_repository
from scorepack import Scorer
from scorepack.proto.messages import messages
from scorepack.repository import ModelSource, Repository
from serving_helpers import scoring_config

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("scorepack_onnx")
from tritonclient.utils import InferenceServerException  # noqa: E402

#: the batching model's settings, checked in its configuration
CONV_BATCH, CONV_DELAY_MS, CONV_QUEUE = 8, 3.0, 64
#: the echo model batches up to 4 and waits for company (the concurrency test)
ECHO_BATCH = 4


def _source(name: str, version: str | None, make: Any, **batching: Any) -> ModelSource:
    config = scoring_config(**batching)
    return ModelSource(name, version, lambda: Scorer(make(), config, name=name, version=version))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    """conv (ONNX, image [N, 3, 8, 8] → probs [N, 4], batches up to 8), single (the same
    graph with its batch fixed at 1: does not batch), echo versions 1 and 2 (a fixture
    backend that records its calls; batches up to 4)."""
    from onnx_models import conv_classifier
    from scorepack_onnx import OnnxBackend

    root = tmp_path_factory.mktemp("triton_ext")
    conv = conv_classifier(root / "conv.onnx")
    single = conv_classifier(root / "single.onnx", batch=1)
    sources = [
        _source(
            "conv",
            None,
            lambda: OnnxBackend(conv, device="cpu"),
            max_batch_size=CONV_BATCH,
            max_delay_ms=CONV_DELAY_MS,
            max_queue_size=CONV_QUEUE,
        ),
        _source("single", None, lambda: OnnxBackend(single, device="cpu")),
        *(
            _source(
                "echo",
                v,
                lambda v=v: EchoBackend(root / f"echo{v}.echo"),
                max_batch_size=ECHO_BATCH,
                max_delay_ms=200.0,
            )
            for v in ("1", "2")
        ),
    ]
    with grpc_serving_repository(Repository(sources)) as served:
        yield served


@pytest.fixture(scope="module")
def clients(served: GrpcServed) -> Iterator[tuple[Any, Any]]:
    http = httpclient.InferenceServerClient(served.url.split("://", 1)[1], network_timeout=60)
    grpc = grpcclient.InferenceServerClient(served.grpc_address)
    try:
        yield http, grpc
    finally:
        http.close()
        grpc.close()


def _config_message(document: dict[str, Any]) -> Any:
    # parsing checks the JSON against model_config.proto: every key a field of
    # inference.ModelConfig, every value of its type, enums by their names
    return json_format.ParseDict(document, messages.ModelConfig())


def test_extensions_listed_on_both_protocols(clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    for metadata in (http.get_server_metadata(), grpc.get_server_metadata(as_json=True)):
        assert {"model_configuration", "statistics"} <= set(metadata["extensions"])


def test_config_of_a_model_that_batches(clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    config = http.get_model_config("conv")
    assert config["name"] == "conv"
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == CONV_BATCH
    # the batch dimension is left out when max_batch_size > 0 (Triton's rule)
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("image", "TYPE_FP32", [3, 8, 8])
    ]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("probs", "TYPE_FP32", [4])
    ]
    batching = config["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == int(CONV_DELAY_MS * 1000)
    assert batching["default_queue_policy"]["max_queue_size"] == CONV_QUEUE
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    # gRPC says the same, as tritonclient reads it (as_json, and the message itself)
    answer = grpc.get_model_config("conv", as_json=True)["config"]
    assert _config_message(answer) == _config_message(config)
    message = grpc.get_model_config("conv").config
    assert message.max_batch_size == CONV_BATCH and list(message.input[0].dims) == [3, 8, 8]


def test_config_of_a_model_that_does_not_batch(clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    config = http.get_model_config("single")
    assert config["max_batch_size"] == 0
    # no implicit batch dimension: dims are the whole shape, the fixed 1 included
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("image", "TYPE_FP32", [1, 3, 8, 8])
    ]
    assert [(t["data_type"], t["dims"]) for t in config["output"]] == [("TYPE_FP32", [1, 4])]
    assert "dynamic_batching" not in config
    answer = grpc.get_model_config("single", as_json=True)["config"]
    assert _config_message(answer) == _config_message(config)


def test_config_of_a_version(clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    for version in ("1", "2", ""):
        config = http.get_model_config("echo", version)
        assert config["max_batch_size"] == ECHO_BATCH
        assert config["version_policy"] == {"all": {}}
        assert [(t["name"], t["dims"]) for t in config["input"]] == [("x", [2])]
        assert _config_message(grpc.get_model_config("echo", version, as_json=True)["config"]) == (
            _config_message(config)
        )


def test_config_errors(served: GrpcServed, clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    with pytest.raises(InferenceServerException) as excinfo:
        http.get_model_config("nope")
    assert excinfo.value.status() == "404" and "nope" in excinfo.value.message()
    with pytest.raises(InferenceServerException) as excinfo:
        http.get_model_config("echo", "7")
    assert excinfo.value.status() == "404"
    with pytest.raises(InferenceServerException) as excinfo:
        grpc.get_model_config("nope")
    assert excinfo.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as excinfo:
        grpc.get_inference_statistics("nope")
    assert excinfo.value.status() == "StatusCode.NOT_FOUND"
    response = httpx.get(f"{served.url}/v2/models/nope/stats", timeout=30)
    assert response.status_code == 404 and "nope" in response.json()["error"]


def _stat(stats: dict[str, Any], name: str, version: str | None = None) -> dict[str, Any]:
    found = [
        s
        for s in stats["model_stats"]
        if s["name"] == name and (version is None or s.get("version") == version)
    ]
    assert len(found) == 1, stats
    return found[0]


def _counts(stat: dict[str, Any]) -> dict[str, int]:
    # gRPC's JSON (protobuf's) leaves zeros out
    infer = stat["inference_stats"]
    counts = {
        "inference_count": int(stat.get("inference_count", 0)),
        "execution_count": int(stat.get("execution_count", 0)),
    }
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        counts[key] = int(infer[key].get("count", 0))
    return counts


def _batches(stat: dict[str, Any]) -> dict[int, int]:
    return {
        int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stat.get("batch_stats", [])
    }


def _image_input(module: Any, rows: int, datatype: str = "FP32") -> Any:
    dtype = np.float32 if datatype == "FP32" else np.float64
    x = np.random.default_rng(rows).random((rows, 3, 8, 8)).astype(dtype)
    tensor = module.InferInput("image", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


@pytest.mark.parametrize(
    ("model", "protocol"), [("conv", "http"), ("single", "grpc"), ("conv", "grpc")]
)
def test_statistics_move_by_exactly_the_requests(
    clients: tuple[Any, Any], model: str, protocol: str
) -> None:
    http, grpc = clients
    client, module = (http, httpclient) if protocol == "http" else (grpc, grpcclient)
    started_ms = int(time.time() * 1000)
    before = _stat(http.get_inference_statistics(model), model)
    requests = 5
    for _ in range(requests):
        result = client.infer(model, [_image_input(module, 1)])
        assert result.as_numpy("probs").shape == (1, 4)
    # a bad request (FP64 where the model takes FP32) is neither a success nor a failure:
    # Triton checks a request's inputs before its statistics begin (test_statistics_refused)
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer(model, [_image_input(module, 1, "FP64")])
    assert "FP64" in excinfo.value.message()
    after = _stat(http.get_inference_statistics(model), model)
    moved = {k: v - _counts(before)[k] for k, v in _counts(after).items()}
    # one request at a time: each is one model call of one row
    assert moved == {
        "inference_count": requests,
        "execution_count": requests,
        "success": requests,
        "fail": 0,
        "queue": requests,
        "compute_input": requests,
        "compute_infer": requests,
        "compute_output": requests,
    }
    batches_moved = {size: n - _batches(before).get(size, 0) for size, n in _batches(after).items()}
    assert {s: n for s, n in batches_moved.items() if n} == {1: requests}
    assert int(after["last_inference"]) >= started_ms
    infer = after["inference_stats"]
    for key in ("success", "compute_input", "compute_infer", "compute_output"):
        assert int(infer[key]["ns"]) > int(before["inference_stats"][key].get("ns", 0)), key
    assert infer["fail"] == before["inference_stats"]["fail"]
    # the whole time of the requests is more than any of its parts
    parts = ("queue", "compute_input", "compute_infer", "compute_output")
    assert int(infer["success"]["ns"]) >= max(int(infer[p]["ns"]) for p in parts)
    assert int(infer["cache_hit"]["count"]) == 0
    # the same numbers over gRPC, as long as nothing else runs
    grpc_stats = grpc.get_inference_statistics(model, as_json=True)
    assert _counts(_stat(grpc_stats, model)) == _counts(after)
    assert _stats_message(grpc_stats) == _stats_message(http.get_inference_statistics(model))


def _stats_message(document: dict[str, Any]) -> Any:
    return json_format.ParseDict(document, messages.ModelStatisticsResponse())


def test_execution_count_is_the_model_calls(served: GrpcServed, clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    backend = served.repository.get("echo", "2").backend
    before = _stat(grpc.get_inference_statistics("echo", "2", as_json=True), "echo", "2")
    calls_before = len(backend.calls)
    other_before = _counts(_stat(http.get_inference_statistics("echo", "1"), "echo", "1"))
    x = np.array([[1.0, 2.0]], dtype=np.float32)

    def one(i: int) -> None:
        tensor = grpcclient.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(x * i)
        result = grpc.infer("echo", [tensor], model_version="2")
        np.testing.assert_array_equal(result.as_numpy("y"), x * i)

    requests = 12
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(requests)))
    # and one request of three rows: three inferences, one request
    tensor = httpclient.InferInput("x", [3, 2], "FP32")
    tensor.set_data_from_numpy(np.ones((3, 2), np.float32))
    http.infer("echo", [tensor], model_version="2")
    after = _stat(http.get_inference_statistics("echo", "2"), "echo", "2")
    calls = backend.calls[calls_before:]
    moved = {k: v - _counts(before)[k] for k, v in _counts(after).items()}
    assert moved["success"] == requests + 1 and moved["fail"] == 0
    assert moved["inference_count"] == requests + 3 == sum(calls)
    assert moved["execution_count"] == len(calls)
    sizes: dict[int, int] = {}
    for rows in calls:
        sizes[rows] = sizes.get(rows, 0) + 1
    batches_moved = {s: n - _batches(before).get(s, 0) for s, n in _batches(after).items()}
    assert {s: n for s, n in batches_moved.items() if n} == sizes
    # version 1 saw none of it
    assert _counts(_stat(http.get_inference_statistics("echo", "1"), "echo", "1")) == other_before


def test_statistics_of_every_model(served: GrpcServed, clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    everything = http.get_inference_statistics()
    listed = {(s["name"], s.get("version")) for s in everything["model_stats"]}
    assert listed == {("conv", None), ("single", None), ("echo", "1"), ("echo", "2")}
    # the same route by hand, and a model's every version
    assert httpx.get(f"{served.url}/v2/models/stats", timeout=30).json()["model_stats"]
    versions = http.get_inference_statistics("echo")["model_stats"]
    assert sorted(s["version"] for s in versions) == ["1", "2"]
    answer = grpc.get_inference_statistics(as_json=True)
    assert {(s["name"], s.get("version") or None) for s in answer["model_stats"]} == listed
    json.dumps(everything)  # plain JSON numbers and strings


def test_a_model_not_ready_has_no_config_or_statistics(tmp_path: Path) -> None:
    source = _source("echo", None, lambda: EchoBackend(tmp_path / "e.echo"))
    other = _source("other", None, lambda: EchoBackend(tmp_path / "o.echo"))
    repository = Repository([source, other], model_control="explicit")
    with grpc_serving_repository(repository) as served:
        http = httpclient.InferenceServerClient(served.url.split("://", 1)[1])
        grpc = grpcclient.InferenceServerClient(served.grpc_address)
        try:
            http.unload_model("echo")
            with pytest.raises(InferenceServerException) as excinfo:
                http.get_model_config("echo")
            assert excinfo.value.status() == "503" and "unloaded" in excinfo.value.message()
            with pytest.raises(InferenceServerException) as excinfo:
                grpc.get_model_config("echo")
            assert excinfo.value.status() == "StatusCode.UNAVAILABLE"
            with pytest.raises(InferenceServerException) as excinfo:
                http.get_inference_statistics("echo")
            assert excinfo.value.status() == "503"
            with pytest.raises(InferenceServerException) as excinfo:
                grpc.get_inference_statistics("echo")
            assert excinfo.value.status() == "StatusCode.UNAVAILABLE"
            names = [s["name"] for s in http.get_inference_statistics()["model_stats"]]
            assert names == ["other"]
            http.load_model("echo")
            assert http.get_model_config("echo")["max_batch_size"] > 0
            fresh = _stat(http.get_inference_statistics("echo"), "echo")
            assert _counts(fresh)["success"] == 0  # a reload starts from zero
        finally:
            http.close()
            grpc.close()
