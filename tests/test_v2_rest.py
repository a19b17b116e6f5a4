"""V2 REST over real HTTP with httpx: every route, JSON and binary tensors both ways, raw
binary bodies, errors as {"error": "message"}, the repository extension, and /score and
V2 side by side on one port. (tests/test_v2_clients.py drives the same server with
NVIDIA's and KServe's clients.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fixture_backends import EchoBackend, EncodedImageBackend, SlowBackend, TypesBackend
from images import jpeg, png
from scorepack import Scorer
from scorepack.repository import ModelSource, Repository
from scorepack.v2 import array_from_bytes, array_to_bytes
from serving_helpers import scoring_config, serving_repository, wait_for

TYPES_INPUTS = [
    {"name": "f", "datatype": "FP32", "shape": [2, 2], "data": [1.5, 2, 3, 4]},
    {"name": "i", "datatype": "INT64", "shape": [2, 3], "data": [[1, 2, 3], [2**40, 0, 1]]},
    {"name": "b", "datatype": "BOOL", "shape": [2, 1], "data": [True, False]},
]


def source(
    tmp_path: Path, name: str, backend: type, version: str | None = None, **kw: Any
) -> ModelSource:
    def create() -> Scorer:
        options = kw.pop("options", None)
        config = kw.get("config")
        return Scorer(
            backend(tmp_path / f"{name}.m", options=options), config, name=name, version=version
        )

    return ModelSource(name, version, create)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("v2rest")
    repo = Repository(
        [
            source(tmp, "types", TypesBackend, "1"),
            source(tmp, "types", TypesBackend, "2"),
            source(tmp, "echo", EchoBackend),
            source(
                tmp,
                "image",
                EncodedImageBackend,
                options={"encoded": "false"},
                config=scoring_config(max_image_pixels=200 * 200, max_body_bytes=256 * 1024),
            ),
        ]
    )
    with serving_repository(repo) as (_, client):
        yield client


def v2_error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], (word, body["error"])
    return body["error"]


# --- health and metadata ---------------------------------------------------------------


def test_health_and_server_metadata(served: httpx.Client) -> None:
    assert served.get("/v2/health/live").json() == {"live": True}
    assert served.get("/v2/health/ready").json() == {"ready": True}
    meta = served.get("/v2").json()
    assert meta["name"] == "scorepack" and "binary_tensor_data" in meta["extensions"]
    assert served.get("/v2/models").json() == {"models": ["echo", "image", "types"]}


def test_model_metadata_and_readiness(served: httpx.Client) -> None:
    meta = served.get("/v2/models/types").json()
    assert meta["name"] == "types" and meta["versions"] == ["1", "2"]
    assert meta["inputs"][1] == {"name": "i", "datatype": "INT64", "shape": [-1, 3]}
    assert served.get("/v2/models/types/versions/1").json()["inputs"] == meta["inputs"]
    assert served.get("/v2/models/types/ready").json() == {"name": "types", "ready": True}
    assert served.get("/v2/models/types/versions/2/ready").status_code == 200
    v2_error(served.get("/v2/models/nope"), 404, "'nope'", "echo, image, types")
    v2_error(served.get("/v2/models/types/versions/7"), 404, "'7'", "1, 2")
    v2_error(served.get("/v2/models/nope/ready"), 404, "'nope'")
    v2_error(served.post("/v2/models/nope/infer", json={}), 404, "'nope'")
    v2_error(served.get("/v2/nothing"), 404, "/v2/nothing")
    v2_error(served.get("/v2/models/types/infer"), 405, "POST")


# --- inference -------------------------------------------------------------------------


def test_json_in_json_out_with_id_and_outputs(served: httpx.Client) -> None:
    body = {
        "id": "abc",
        "parameters": {"tag": "x"},
        "inputs": TYPES_INPUTS,
        "outputs": [{"name": "total"}, {"name": "word"}, {"name": "negated"}],
    }
    reply = served.post("/v2/models/types/infer", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    got = reply.json()
    assert (got["model_name"], got["model_version"], got["id"]) == ("types", "2", "abc")
    assert got["parameters"] == {"tag": "x"}
    assert got["outputs"] == [
        {"name": "total", "datatype": "INT64", "shape": [2], "data": [6, 2**40 + 1]},
        {"name": "word", "datatype": "BYTES", "shape": [2], "data": ["yes", "no"]},
        {"name": "negated", "datatype": "BOOL", "shape": [2, 1], "data": [False, True]},
    ]
    pinned = served.post("/v2/models/types/versions/1/infer", json=body).json()
    assert pinned["model_version"] == "1"


def binary_request(
    inputs: list[tuple[str, str, list[int], np.ndarray]], **document: Any
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: JSON header, then each input's raw bytes."""
    chunks = [array_to_bytes(a, dt) for _, dt, _, a in inputs]
    head = {
        **document,
        "inputs": [
            {"name": n, "datatype": dt, "shape": s, "parameters": {"binary_data_size": len(c)}}
            for (n, dt, s, _), c in zip(inputs, chunks, strict=True)
        ],
    }
    header = json.dumps(head).encode()
    return header + b"".join(chunks), {"inference-header-content-length": str(len(header))}


def split_binary(reply: httpx.Response) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    length = int(reply.headers["inference-header-content-length"])
    head = json.loads(reply.content[:length])
    arrays, offset = {}, length
    for out in head["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        raw = reply.content[offset : offset + size]
        arrays[out["name"]] = array_from_bytes(out["name"], out["datatype"], out["shape"], raw)
        offset += size
    assert offset == len(reply.content)
    return head, arrays


def test_binary_in_binary_out(served: httpx.Client) -> None:
    f = np.array([[1.5, 2.0], [3.0, 4.0]], dtype=np.float32)
    i = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    b = np.array([[True], [False]])
    body, headers = binary_request(
        [("f", "FP32", [2, 2], f), ("i", "INT64", [2, 3], i), ("b", "BOOL", [2, 1], b)],
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "twice"},
            {"name": "word"},
            {"name": "total", "parameters": {"binary_data": False}},
        ],
    )
    reply = served.post("/v2/models/types/infer", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/octet-stream"
    head, arrays = split_binary(reply)
    np.testing.assert_array_equal(arrays["twice"], f * 2)
    assert arrays["word"].tolist() == [b"yes", b"no"]
    assert head["outputs"][2] == {
        "name": "total",
        "datatype": "INT64",
        "shape": [2],
        "data": [6, 15],
    }


def test_a_datatype_other_than_the_models_is_refused_as_triton_does(
    served: httpx.Client,
) -> None:
    # FP16 for a float32 input, UINT8 for an int64 one: Triton answers 400 "unexpected
    # datatype" rather than casting, and so does scorepack, in binary and in JSON
    f = np.array([[0.5, 2.0]], dtype=np.float16)
    i = np.array([[1, 2, 3]], dtype=np.uint8)
    b = np.array([[True]])
    body, headers = binary_request(
        [
            ("f", "FP16", [1, 2], f),
            ("i", "INT64", [1, 3], i.astype(np.int64)),
            ("b", "BOOL", [1, 1], b),
        ]
    )
    reply = served.post("/v2/models/types/infer", content=body, headers=headers)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert all(w in error for w in ("'f'", "FP16", "FP32", "unexpected datatype")), error
    document = {
        "inputs": [
            {"name": "f", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 2.0]},
            {"name": "i", "datatype": "UINT8", "shape": [1, 3], "data": [1, 2, 3]},
            {"name": "b", "datatype": "BOOL", "shape": [1, 1], "data": [True]},
        ]
    }
    reply = served.post("/v2/models/types/infer", json=document)
    assert reply.status_code == 400, reply.text
    assert "'i'" in reply.json()["error"] and "INT64" in reply.json()["error"]
    # the model's own datatypes, in binary: served
    body, headers = binary_request(
        [
            ("f", "FP32", [1, 2], f.astype(np.float32)),
            ("i", "INT64", [1, 3], i.astype(np.int64)),
            ("b", "BOOL", [1, 1], b),
        ]
    )
    reply = served.post("/v2/models/types/infer", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    outs = {o["name"]: o["data"] for o in reply.json()["outputs"]}
    assert outs["twice"] == [1.0, 4.0] and outs["total"] == [6]
    # the one documented exception: BF16 where the model takes FP32 (NumPy has no
    # bfloat16; the value widens to float32 exactly)
    body, headers = binary_request(
        [
            ("f", "BF16", [1, 2], np.array([[0.5, 2.0]], np.float32)),
            ("i", "INT64", [1, 3], i.astype(np.int64)),
            ("b", "BOOL", [1, 1], b),
        ]
    )
    reply = served.post("/v2/models/types/infer", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["data"] == [1.0, 4.0]


def test_image_as_bytes_and_as_a_raw_body(served: httpx.Client) -> None:
    picture = jpeg(40, 30, seed=3)
    expected = served.post("/score", params={"model": "image", "raw": "true"}, content=picture)
    assert expected.status_code == 200, expected.text
    pixels = np.asarray(expected.json()["outputs"]["pixels"], dtype=np.float32)

    images = np.array([picture, png(20, 20, seed=4)], dtype=object)
    body, headers = binary_request(
        [("image", "BYTES", [2], images)], parameters={"binary_data_output": True}
    )
    reply = served.post("/v2/models/image/infer", content=body, headers=headers)
    _, arrays = split_binary(reply)
    assert arrays["pixels"].shape == (2, 16, 16, 3)
    np.testing.assert_allclose(arrays["pixels"][:1], pixels, atol=1e-6)

    raw = served.post(
        "/v2/models/image/infer", content=picture, headers={"inference-header-content-length": "0"}
    )
    assert raw.status_code == 200, raw.text
    np.testing.assert_allclose(
        np.asarray(raw.json()["outputs"][0]["data"]).reshape(1, 16, 16, 3), pixels, atol=1e-6
    )


def test_raw_body_of_tensor_bytes(served: httpx.Client) -> None:
    x = np.array([[1, 2], [3, 4]], dtype=np.float32)
    reply = served.post(
        "/v2/models/echo/infer",
        content=x.tobytes(),
        headers={"inference-header-content-length": "0"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["shape"] == [2, 2]
    v2_error(
        served.post(
            "/v2/models/echo/infer",
            content=b"\x00" * 5,
            headers={"inference-header-content-length": "0"},
        ),
        400,
        "5 bytes",
        "8 bytes each",
    )
    v2_error(
        served.post(
            "/v2/models/types/infer",
            content=b"\x00" * 8,
            headers={"inference-header-content-length": "0"},
        ),
        400,
        "one input",
    )


GOOD_X = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}'
CLAIMS_8 = (
    b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], '
    b'"parameters": {"binary_data_size": 8}}]}'
)


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"", {}, 400, ["empty"]),
        (b"{nope", {}, 400, ["not valid JSON"]),
        (b"[1]", {}, 400, ["JSON object"]),
        (b'{"inputs": []}', {}, 400, ["inputs"]),
        (b'{"inputs": [{"name": "x", "shape": [1, 2], "data": [1, 2]}]}', {}, 400, ["datatype"]),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "data": [1, 2]}]}', {}, 400, ["shape"]),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2]}]}',
            {},
            400,
            ['no "data"'],
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}',
            {},
            400,
            ["FP99"],
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}]}',
            {},
            400,
            ["2 values"],
        ),
        (
            b'{"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}',
            {},
            400,
            ["'y'", "'x'"],
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}',
            {},
            400,
            ["[1, 3]"],
        ),
        (
            GOOD_X[:-1] + b', "outputs": [{"name": "z"}]}',
            {},
            400,
            ["'z'"],
        ),
        (CLAIMS_8, {"inference-header-content-length": str(len(CLAIMS_8))}, 400, ["8", "0 bytes"]),
        (b"{}", {"inference-header-content-length": "99"}, 400, ["99", "2 bytes"]),
        (b"{}", {"inference-header-content-length": "x"}, 400, ["byte count"]),
        (
            GOOD_X + b"xx",
            {"inference-header-content-length": str(len(GOOD_X))},
            400,
            ["2 bytes", "no input claims"],
        ),
        (b"<xml/>", {"content-type": "application/xml"}, 415, ["application/xml"]),
        # an image without the raw-body header: what to send, not "send image/jpeg"
        (
            b"\xff\xd8\xff\xe0",
            {"content-type": "image/jpeg"},
            415,
            ["'image/jpeg'", "needs Inference-Header-Content-Length: 0"],
        ),
    ],
)
def test_bad_requests_are_4xx_then_a_good_one(
    served: httpx.Client, body: bytes, headers: dict[str, str], status: int, words: list[str]
) -> None:
    v2_error(served.post("/v2/models/echo/infer", content=body, headers=headers), status, *words)
    good = served.post(
        "/v2/models/echo/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]},
    )
    assert good.status_code == 200 and good.json()["outputs"][0]["data"] == [1.0, 2.0]


def test_body_over_the_limit_is_413(served: httpx.Client) -> None:
    big = b"\xff\xd8\xff" + bytes(256 * 1024)
    v2_error(
        served.post(
            "/v2/models/image/infer", content=big, headers={"inference-header-content-length": "0"}
        ),
        413,
        str(256 * 1024),
    )


# --- /score beside V2 --------------------------------------------------------------------


def test_score_picks_the_model_by_query(served: httpx.Client) -> None:
    row = {"inputs": {"x": [[1.0, 2.0]]}}
    several = served.post("/score", json=row)
    assert several.status_code == 400 and "?model=NAME" in several.json()["error"]["message"]
    assert served.post("/score", json=row, params={"model": "echo", "raw": "true"}).json()[
        "outputs"
    ]["y"] == [[1.0, 2.0]]
    missing = served.post("/score", json=row, params={"model": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    ready = served.get("/health/ready").json()
    assert ready == {"status": "ready", "models": ["echo", "image", "types"]}
    metrics = served.get("/metrics").text
    assert 'scorepack_model_ready{model="types",version="2"} 1' in metrics
    from metrics_helpers import parse, total

    counted = total(
        parse(metrics), "scorepack_requests_total", route="/v2/models/{name}/infer", status="200"
    )
    assert counted >= 1


# --- the repository extension ------------------------------------------------------------


def test_repository_index_and_model_control(tmp_path: Path) -> None:
    repo = Repository([source(tmp_path, "a", EchoBackend), source(tmp_path, "b", EchoBackend)])
    with serving_repository(repo) as (_, client):
        index = client.post("/v2/repository/index").json()
        assert index == [
            {"name": "a", "state": "READY", "reason": ""},
            {"name": "b", "state": "READY", "reason": ""},
        ]
        v2_error(client.post("/v2/repository/models/a/unload"), 400, "--model-control explicit")
        v2_error(client.post("/v2/repository/models/zz/load"), 400, "--model-control")


def test_load_and_unload_while_the_other_serves(tmp_path: Path) -> None:
    backends: list[SlowBackend] = []

    def create() -> Scorer:
        backends.append(SlowBackend(tmp_path / "s.slow"))
        return Scorer(backends[-1], name="slow")

    repo = Repository(
        [ModelSource("slow", None, create), source(tmp_path, "echo", EchoBackend)],
        model_control="explicit",
    )
    x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    with serving_repository(repo) as (_, client):
        assert client.post("/v2/repository/models/slow/unload").json() == {
            "name": "slow",
            "unload": True,
        }
        assert backends[0].unloaded
        v2_error(client.get("/v2/models/slow/ready"), 503, "unloaded")
        v2_error(client.post("/v2/models/slow/infer", json=x), 503, "not ready")
        meta = client.get("/v2/models/slow").json()
        assert (meta["state"], meta["reason"]) == ("UNAVAILABLE", "unloaded")
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.post("/v2/repository/index", json={"ready": True}).json() == [
            {"name": "echo", "state": "READY", "reason": ""}
        ]
        assert client.post("/v2/models/echo/infer", json=x).status_code == 200
        assert client.post("/v2/repository/models/slow/load").json() == {
            "name": "slow",
            "load": True,
        }
        assert len(backends) == 2
        assert client.post("/v2/models/slow/infer", json=x).status_code == 200


def test_a_failed_load_reports_its_reason(tmp_path: Path) -> None:
    repo = Repository(
        [
            source(tmp_path, "bad", EchoBackend, options={"load_delay": "zzz"}),
            source(tmp_path, "good", EchoBackend),
        ]
    )
    with serving_repository(repo, wait_ready=False) as (_, client):
        wait_for(
            lambda: client.get("/v2/models/bad").json().get("state") == "UNAVAILABLE", "the failure"
        )
        wait_for(lambda: client.get("/v2/models/good/ready").status_code == 200, "the good model")
        meta = client.get("/v2/models/bad").json()
        assert "zzz" in meta["reason"] and meta["inputs"] == []
        v2_error(client.get("/v2/health/ready"), 503, "bad", "zzz")
        assert client.get("/v2/health/live").status_code == 200
        x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
        assert client.post("/v2/models/good/infer", json=x).status_code == 200


# --- overload: a full queue and a timeout, as /score answers them ---------------------------


def _infer_x(client: httpx.Client, model: str, value: float) -> httpx.Response:
    x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [value, value]}]}
    return client.post(f"/v2/models/{model}/infer", json=x)


def _y(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    return list(response.json()["outputs"][0]["data"])


def test_queue_full_is_503_at_once_with_retry_after(tmp_path: Path) -> None:
    # tests/test_server.py's /score case, over V2: the model thread held by a closed gate,
    # two requests queued behind it, so the third can only be refused by the full queue
    backend = SlowBackend(tmp_path / "s.slow")
    config = scoring_config(max_batch_size=1, max_queue_size=2, max_delay_ms=0)
    repo = Repository([ModelSource("slow", None, lambda: Scorer(backend, config, name="slow"))])
    with serving_repository(repo) as (_, client), ThreadPoolExecutor(3) as pool:
        batcher = repo.get("slow").batcher
        backend.gate.clear()
        backend.entered.clear()
        try:
            first = pool.submit(_infer_x, client, "slow", 1.0)
            assert backend.entered.wait(20)  # the model thread holds request 1
            queued = [pool.submit(_infer_x, client, "slow", float(v)) for v in (2, 3)]
            wait_for(lambda: batcher.queue_depth == 2, "two queued requests")
            # the gate is still closed, so this answer cannot have waited on the model
            full = _infer_x(client, "slow", 4.0)
            v2_error(full, 503, "queue is full", "--max-queue-size")
            assert int(full.headers["retry-after"]) >= 1
            assert client.get("/v2/health/ready").json() == {"ready": True}
            assert client.get("/v2/models/slow/ready").status_code == 200
            assert not first.done()
        finally:
            backend.gate.set()
        assert _y(first.result(20)) == [1.0, 1.0]
        assert [_y(f.result(20)) for f in queued] == [[2.0, 2.0], [3.0, 3.0]]
        assert (4.0, 4.0) not in backend.seen
        assert _y(_infer_x(client, "slow", 5.0)) == [5.0, 5.0]


def test_request_waiting_past_its_timeout_is_504(tmp_path: Path) -> None:
    backend = SlowBackend(tmp_path / "s.slow")
    config = scoring_config(max_batch_size=1, timeout_ms=300)
    repo = Repository([ModelSource("slow", None, lambda: Scorer(backend, config, name="slow"))])
    with serving_repository(repo) as (_, client), ThreadPoolExecutor(2) as pool:
        batcher = repo.get("slow").batcher
        backend.gate.clear()
        backend.entered.clear()
        try:
            held = pool.submit(_infer_x, client, "slow", 1.0)
            assert backend.entered.wait(20)
            # the gate stays closed well past 300 ms: this one can only time out
            v2_error(_infer_x(client, "slow", 2.0), 504, "300 ms", "SCOREPACK_TIMEOUT_MS")
            # so does the one the model holds: the timeout bounds the whole wait
            v2_error(held.result(20), 504, "300 ms")
        finally:
            backend.gate.set()
        # the timed-out request is dropped, never scored; the server goes on
        wait_for(lambda: batcher.queue_depth == 0, "an empty queue")
        assert _y(_infer_x(client, "slow", 3.0)) == [3.0, 3.0]
        assert (2.0, 2.0) not in backend.seen
