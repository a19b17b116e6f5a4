"""The embedded server against hostile clients, over real sockets on loopback.

Stalled uploads, oversized and overlong headers and request ids, compressed bodies, a
client that leaves while queued, /metrics behind the key, and readiness draining on
SIGTERM; after each, a good request still succeeds.
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
from hostile import exchange, read_response, request, stalled_uploads, timed_get
from scorepack.server.limits import HttpLimits
from serving_helpers import Served, error_of, scoring_config, serving, wait_for

READ_TIMEOUT_S = 6.0
GOOD = {"inputs": {"x": [[1.0, 2.0]]}}


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


def test_64_stalled_uploads_leave_probes_and_scoring_answering(served: Served) -> None:
    url = served.server.url
    with stalled_uploads(url, count=64) as uploads:
        for path in ("/", "/health/ready"):
            status, _ = timed_get(url, path)
            assert status == 200
        for _ in range(3):
            good(served)
        uploads.stop_trickling()
        answers = uploads.answers(timeout=READ_TIMEOUT_S * 10)
    # they needed a key: the 401 comes before the body is read, or the 408 once it stalls
    assert all(a is not None and a.status in (401, 408) for a in answers), answers[:3]


def test_a_stalled_body_is_408_once_it_stops(served: Served) -> None:
    host, port = served.server.url[7:].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            request(
                served.server.url,
                headers={"Authorization": "Bearer k1", "Content-Length": "100"},
            )
            + b"{"
        )
        got = read_response(sock, timeout=READ_TIMEOUT_S * 10)
    assert got is not None and got.status == 408
    assert got.json()["error"]["code"] == "request_timeout"
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


def test_a_client_that_leaves_while_queued_costs_no_model_call() -> None:
    backend = SlowBackend("m")
    config = scoring_config(warmup=False, max_batch_size=1, max_delay_ms=0)
    with serving(backend, config) as s:
        backend.gate.clear()
        held = threading.Thread(target=lambda: s.client.post("/score", json=GOOD))
        held.start()
        assert backend.entered.wait(30)  # the model thread is busy with the first request
        body = b'{"inputs": {"x": [[7.0, 7.0]]}}'
        host, port = s.server.url[7:].split(":")
        leaver = socket.create_connection((host, int(port)), timeout=30)
        leaver.sendall(
            request(s.server.url, body=body, headers={"Content-Type": "application/json"})
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
    from fixture_backends import write_entry_point
    from test_shutdown import TESTS, ServeProcess

    site = tmp_path / "site"
    write_entry_point(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREPACK_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(TESTS)])
    env["SCOREPACK_DRAIN_SECONDS"] = "120"
    model = tmp_path / "model.echo"
    model.write_text("echo\n")
    server = ServeProcess(["serve", str(model), "--port", "0"], env)
    try:
        url = server.url(120)
        with httpx.Client(base_url=url, timeout=30) as client:
            wait_for(lambda: client.get("/health/ready").status_code == 200, "ready", 120)
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: client.get("/health/ready").status_code == 503, "draining", 60)
            # still serving while load balancers notice
            assert client.get("/").status_code == 200
            assert client.post("/score", json=GOOD).status_code == 200
        server.proc.send_signal(signal.SIGTERM)  # a second signal stops at once
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
