"""The embedded server against hostile clients, over real sockets on loopback.

Stalled uploads, oversized and overlong headers and request ids, compressed bodies, a
client that leaves while queued, /metrics behind the key, broken HTTP framing (a JSON 400,
never uvicorn's plain text), and readiness draining on SIGTERM (``/health/ready``,
``/v2/health/ready`` and gRPC ServerReady); after each, a good request still succeeds.
The V2 REST routes get /score's body discipline: each /score case has its V2 twin.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixture_backends import EchoBackend, SlowBackend
from hostile import (
    BROKEN_FRAMING,
    address,
    exchange,
    read_response,
    request,
    stalled_uploads,
    timed_get,
)
from scorepack.server.limits import HttpLimits
from serving_helpers import Served, error_of, scoring_config, serving, wait_for

READ_TIMEOUT_S = 6.0
GOOD = {"inputs": {"x": [[1.0, 2.0]]}}
KEY = {"Authorization": "Bearer k1"}


def v2_body(*row: float) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": list(row)}]}


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    limits = HttpLimits(read_timeout_s=READ_TIMEOUT_S)
    with serving(EchoBackend("m"), auth_keys=("k1",), limits=limits) as s:
        s.client.headers["authorization"] = "Bearer k1"
        yield s


def good(s: Served) -> None:
    got = s.client.post("/score", json=GOOD, params={"raw": "true"})
    assert got.status_code == 200, got.text
    assert got.json()["outputs"]["y"] == [[1.0, 2.0]]
    got = s.client.post(f"/v2/models/{s.scorer.name}/infer", json=v2_body(1.0, 2.0))
    assert got.status_code == 200, got.text
    assert got.json()["outputs"][0]["data"] == [1.0, 2.0]


def infer_path(s: Served) -> str:
    return f"/v2/models/{s.scorer.name}/infer"


def v2_error(got: httpx.Response) -> str:
    """The ``{"error": "message"}`` of a V2 error reply, checked for shape."""
    assert got.headers["content-type"].startswith("application/json"), got.text
    body = got.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


@pytest.mark.parametrize("route", ["/score", "v2 infer"])
def test_64_stalled_uploads_leave_probes_and_scoring_answering(served: Served, route: str) -> None:
    url = served.server.url
    target = infer_path(served) if route == "v2 infer" else route
    with stalled_uploads(url, count=64, path=target, headers=KEY) as uploads:
        for path in ("/", "/health/ready", "/v2/health/ready"):
            status, _ = timed_get(url, path)
            assert status == 200
        for _ in range(3):
            good(served)
        uploads.stop_trickling()
        answers = uploads.answers(timeout=READ_TIMEOUT_S * 10)
    # each had the key, so its body was being read: 408 once it stopped
    assert all(a is not None and a.status == 408 for a in answers), answers[:3]


@pytest.mark.parametrize("route", ["/score", "v2 infer", "/v2/repository/index"])
def test_a_stalled_body_is_408_once_it_stops(served: Served, route: str) -> None:
    path = infer_path(served) if route == "v2 infer" else route
    with socket.create_connection(address(served.server.url), timeout=30) as sock:
        sock.sendall(
            request(served.server.url, path=path, headers={**KEY, "Content-Length": "100"}) + b"{"
        )
        got = read_response(sock, timeout=READ_TIMEOUT_S * 10)
    assert got is not None and got.status == 408
    error = got.json()["error"]
    if route == "/score":
        assert error["code"] == "request_timeout"
    else:  # V2's error body: the message alone
        assert "SCOREPACK_READ_TIMEOUT_S" in error
    good(served)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Big": "a" * 200_000},
        {f"X-H{i}": "v" for i in range(20_000)},
        {f"X-H{i}": "v" for i in range(101)},
    ],
    ids=["200 KB header", "20000 headers", "101 headers"],
)
def test_too_many_or_too_large_headers_are_431(served: Served, headers: dict[str, str]) -> None:
    got = exchange(served.server.url, request(served.server.url, "GET", "/", headers=headers))
    assert got is not None and got.status == 431, got
    assert got.json()["error"]["code"] == "headers_too_large"
    good(served)


def test_request_ids_are_bounded_as_azmlinfsrv_bounds_them(served: Served) -> None:
    for size, status in ((10_000, 431), (101, 431), (100, 200)):
        got = served.client.get("/", headers={"x-request-id": "r" * size})
        assert got.status_code == status, size
        assert len(got.headers["x-request-id"]) <= 100
    assert (
        served.client.get("/", headers={"x-request-id": "r" * 100}).headers["x-request-id"]
        == "r" * 100
    )
    # characters that do not belong in an id (it is echoed and logged) get a new id
    got = served.client.get("/", headers={"x-request-id": 'a "quoted" id'})
    assert got.status_code == 200 and '"' not in got.headers["x-request-id"]
    good(served)


@pytest.mark.parametrize("query", ["raw=true&raw=nope", "model=m&model=other", "top_k=1&top_k=2"])
def test_a_query_parameter_given_twice_is_400(served: Served, query: str) -> None:
    """Starlette keeps the last of two equal names, azmlinfsrv's Werkzeug the first: the
    two hosts would answer ``?model=a&model=b`` from different models."""
    got = served.client.post("/score?" + query, json=GOOD)
    assert got.status_code == 400, got.text
    assert "given twice" in error_of(got)["message"]
    good(served)


@pytest.mark.parametrize("query", ["top_k=", "raw="])
def test_a_blank_query_value_is_400(served: Served, query: str) -> None:
    """Werkzeug keeps ``?top_k=`` under azmlinfsrv (a 400 there): so does this host."""
    got = served.client.post("/score?" + query, json=GOOD)
    assert got.status_code == 400, got.text
    assert query.removesuffix("=") in error_of(got)["message"]
    good(served)


def test_metrics_need_the_key_like_info(served: Served) -> None:
    for path in ("/metrics", "/info"):
        bare = httpx.get(served.server.url + path, timeout=30)
        assert bare.status_code == 401, path
        assert error_of(bare)["code"] == "unauthorized"
        assert served.client.get(path).status_code == 200, path
    assert httpx.get(served.server.url + "/health/ready", timeout=30).status_code == 200


def test_a_compressed_body_is_415(served: Served) -> None:
    import gzip
    import json

    got = served.client.post(
        "/score",
        content=gzip.compress(json.dumps(GOOD).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert got.status_code == 415
    assert error_of(got)["code"] == "unsupported_encoding"
    good(served)


@pytest.mark.parametrize("encoding", ["gzip", "br", "identity, deflate"])
@pytest.mark.parametrize("route", ["v2 infer", "/v2/repository/index"])
def test_a_compressed_v2_body_is_415(served: Served, route: str, encoding: str) -> None:
    import gzip
    import json

    path = infer_path(served) if route == "v2 infer" else route
    got = served.client.post(
        path,
        content=gzip.compress(json.dumps(v2_body(1.0, 2.0)).encode()),
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert got.status_code == 415, got.text
    assert "Content-Encoding" in v2_error(got)
    good(served)


def test_an_uncompressed_v2_body_may_say_identity(served: Served) -> None:
    got = served.client.post(
        infer_path(served), json=v2_body(3.0, 4.0), headers={"content-encoding": "identity"}
    )
    assert got.status_code == 200, got.text
    assert got.json()["outputs"][0]["data"] == [3.0, 4.0]


#: request lines httptools refuses before there is a request to route
BAD_REQUEST_LINES = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "bad method": b"P@ST /score HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTP/9.Z\r\nHost: x\r\n\r\n",
    "space in the target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(BAD_REQUEST_LINES))
def test_an_unparseable_request_line_is_a_json_400(served: Served, case: str) -> None:
    got = exchange(served.server.url, BAD_REQUEST_LINES[case])
    assert got is not None, "closed without an answer"
    assert got.status == 400, got
    assert got.headers["content-type"] == "application/json"
    assert got.headers["connection"] == "close"
    error = got.json()["error"]
    assert error["code"] == "bad_request"
    assert error["message"].startswith("The request is not valid HTTP/1.1: "), error
    good(served)


@pytest.mark.parametrize("path", ["/score", "v2 infer"])
@pytest.mark.parametrize("case", sorted(BROKEN_FRAMING))
def test_broken_framing_is_a_json_400(served: Served, case: str, path: str) -> None:
    host, port = address(served.server.url)
    target = infer_path(served) if path == "v2 infer" else path
    raw = (
        f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer k1\r\n"
    ).encode() + BROKEN_FRAMING[case]
    got = exchange(served.server.url, raw, timeout=READ_TIMEOUT_S * 10)
    assert got is not None, "closed without an answer"
    # httptools refuses each of them (the app never sees it): uvicorn's answer, in JSON
    assert got.status == 400, (got.status, got.body)
    assert got.headers["content-type"] == "application/json", got
    assert got.headers["connection"] == "close"
    message = got.json()["error"]["message"]
    assert message.startswith("The request is not valid HTTP/1.1: "), message
    good(served)


def test_a_bad_chunk_size_is_the_parsers_json_400(served: Served) -> None:
    host, port = address(served.server.url)
    raw = (
        f"POST /score HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer k1\r\n"
    ).encode() + BROKEN_FRAMING["bad chunk size"]
    got = exchange(served.server.url, raw)
    assert got is not None and got.status == 400, got
    assert got.json()["error"] == {
        "code": "bad_request",
        "message": "The request is not valid HTTP/1.1: Invalid character in chunk size.",
    }
    good(served)


@pytest.mark.parametrize("route", ["/score", "v2 infer"])
def test_a_client_that_leaves_while_queued_costs_no_model_call(route: str) -> None:
    import json

    backend = SlowBackend("m")
    config = scoring_config(warmup=False, max_batch_size=1, max_delay_ms=0)
    with serving(backend, config) as s:
        backend.gate.clear()
        held = threading.Thread(target=lambda: s.client.post("/score", json=GOOD))
        held.start()
        assert backend.entered.wait(30)  # the model thread is busy with the first request
        if route == "/score":
            path, body = "/score", b'{"inputs": {"x": [[7.0, 7.0]]}}'
        else:
            path, body = infer_path(s), json.dumps(v2_body(7.0, 7.0)).encode()
        leaver = socket.create_connection(address(s.server.url), timeout=30)
        leaver.sendall(
            request(
                s.server.url, path=path, body=body, headers={"Content-Type": "application/json"}
            )
        )
        wait_for(lambda: s.scorer.batcher.queue_depth == 1, "the second request to queue")
        leaver.close()
        wait_for(lambda: s.scorer.stats.cancelled == 1, "the disconnect to be noticed")
        backend.gate.set()
        held.join(30)
        good_after = s.client.post("/score", json=GOOD, params={"raw": "true"})
        assert good_after.status_code == 200
        metrics = s.client.get("/metrics").text
    # the model saw the first request and the last, never the one whose client left
    assert (7.0, 7.0) not in backend.seen
    assert backend.calls == [1, 1]
    cancelled = [
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "scorepack_cancelled_requests_total"
    ]
    assert cancelled == [1.0]


def test_sigterm_turns_readiness_503_while_draining(tmp_path: Path) -> None:
    """Every readiness probe turns while the server drains: /health/ready and
    /v2/health/ready 503 with a JSON error, gRPC ServerReady false; requests are still
    served over each protocol until a second signal stops the server."""
    import re
    import time

    import numpy as np

    from fixture_backends import write_entry_point
    from test_shutdown import TESTS, ServeProcess

    tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
    site = tmp_path / "site"
    write_entry_point(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREPACK_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(TESTS)])
    env["SCOREPACK_DRAIN_SECONDS"] = "120"
    model = tmp_path / "model.echo"
    model.write_text("echo\n")
    server = ServeProcess(["serve", str(model), "--port", "0", "--grpc-port", "0"], env)
    try:
        url = server.url(120)
        grpc_line = re.compile(r"serving V2 gRPC at grpc://(127\.0\.0\.1:\d+)")
        deadline = time.monotonic() + 60
        found = None
        while found is None and time.monotonic() < deadline and server.proc.poll() is None:
            found = next((m for line in list(server.stderr) if (m := grpc_line.search(line))), None)
            time.sleep(0.05)
        assert found is not None, "".join(server.stderr)
        triton = tritonclient_grpc.InferenceServerClient(found.group(1))
        with httpx.Client(base_url=url, timeout=30) as client:
            wait_for(lambda: client.get("/health/ready").status_code == 200, "ready", 120)
            assert client.get("/v2/health/ready").status_code == 200
            assert triton.is_server_ready()
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: client.get("/health/ready").status_code == 503, "draining", 60)
            assert error_of(client.get("/health/ready"))["code"] == "not_ready"
            v2 = client.get("/v2/health/ready")
            assert v2.status_code == 503
            assert v2_error(v2) == "The server is shutting down."
            assert not triton.is_server_ready()
            # still live and serving while load balancers notice, over every protocol
            assert triton.is_server_live()
            assert client.get("/").status_code == 200
            assert client.get("/v2/health/live").status_code == 200
            assert client.post("/score", json=GOOD).status_code == 200
            assert client.post("/v2/models/model/infer", json=v2_body(1, 2)).status_code == 200
            x = tritonclient_grpc.InferInput("x", [1, 2], "FP32")
            x.set_data_from_numpy(np.array([[5.0, 6.0]], dtype=np.float32))
            got = triton.infer("model", [x], client_timeout=30).as_numpy("y")
            np.testing.assert_array_equal(got, [[5.0, 6.0]])
        triton.close()
        server.proc.send_signal(signal.SIGTERM)  # a second signal stops at once
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
