"""Serving keeps no memory per request: /score, V2 REST and V2 gRPC, answers and refusals.

Issue 11's soak (``benchmarks/overload``, 10 minutes at a steady rate) found the server's
RSS growing by ~150 bytes a request without end. tracemalloc named the cause: the echo
fixture the soak serves kept every row it scored (``EchoBackend.seen``, ``.calls``); the
server itself kept nothing. These tests hold both: requests go over loopback to the
embedded server, in this process, with the Python heap traced (tracemalloc); after a
warm-up, two windows of requests are served and the traced heap measured after each,
once every request has been answered. A leak grows both windows; a one-off allocation
(a cache filled, a thread started) grows one at most, so the smaller of the two is what
is judged. Nothing here is timed. The last test proves the measure can fail: the fixture
with its recording on is caught.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fixture_backends import SlowBackend
from grpc_helpers import GrpcServed, grpc_serving
from scorepack.bench.http import HttpConnection, http_target
from serving_helpers import scoring_config, wait_for

#: requests before measuring (connections, threads, caches and histograms settle)
WARM = 200
#: requests per measured window
WINDOW = 500
#: the most heap a request may leave behind, on average over a window. The fixture's
#: recording keeps ~120 bytes a request (two floats, a tuple, list slots); what serving
#: itself leaves, measured the same way, is 0-6 bytes (one-off allocations spread out)
KEPT_BYTES_BOUND = 40
#: keep-alive connections the requests share (as the soak's load generator does)
CONNECTIONS = 4

GOOD_JSON = b'{"inputs": {"x": [[1.0, 2.0]]}}'
BAD_JSON = b'{"inputs": {"x": [[1.0, '
V2_JSON = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}'


@pytest.fixture(autouse=True)
def _quiet_access_log(caplog: pytest.LogCaptureFixture) -> None:
    # an access line per request captured by pytest (when an earlier test turned INFO on)
    # would be memory kept per request by the test, not by the server
    caplog.set_level(logging.WARNING, logger="scorepack")


@contextmanager
def _served(root: Path, record: bool) -> Iterator[GrpcServed]:
    # the soak's model and batching: the slow echo, batches of 4; recording as asked
    backend = SlowBackend(root / "m.slow", options={"record": "true" if record else "false"})
    config = scoring_config(max_batch_size=4, max_queue_size=64, max_delay_ms=2)
    with grpc_serving({"echo": backend}, config=config) as served:
        yield served


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    """The echo as the soak serves it (``-O record=false``), over HTTP and gRPC."""
    with _served(tmp_path_factory.mktemp("memory"), record=False) as served:
        yield served


class _Http:
    """``n`` POSTs of one body over the same few keep-alive connections, on one loop."""

    def __init__(self, url: str, path: str, body: bytes) -> None:
        target = http_target(url, body, "application/json")
        request = target.request.replace(b"POST /score ", f"POST {path} ".encode(), 1)
        self.target = type(target)(target.host, target.port, target.tls, request)
        self.loop = asyncio.new_event_loop()
        self.connections = [HttpConnection(self.target) for _ in range(CONNECTIONS)]
        self.statuses: set[int] = set()

    def send(self, n: int) -> None:
        left = [n]

        async def client(connection: HttpConnection) -> None:
            while left[0] > 0:
                left[0] -= 1
                status, _ = await asyncio.wait_for(connection.send(), 30)
                self.statuses.add(status)

        async def all_clients() -> None:
            await asyncio.gather(*(client(c) for c in self.connections))

        self.loop.run_until_complete(all_clients())

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


def _kept_per_request(served: GrpcServed, send: Callable[[int], None]) -> float:
    """Bytes of traced heap each request leaves behind (the smaller of two windows)."""
    scorer = served.scorer("echo")

    def settled_heap() -> int:
        # every request answered, and its server task past its last step: one more
        # request, alone, goes through the loop after them
        wait_for(lambda: scorer.batcher.inflight == 0, "the requests to be answered", 60)
        send(1)
        wait_for(lambda: scorer.batcher.inflight == 0, "the last request", 60)
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start(1)
    try:
        send(WARM)
        windows = []
        before = settled_heap()
        for _ in range(2):
            send(WINDOW)
            after = settled_heap()
            windows.append((after - before) / WINDOW)
            before = after
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return min(windows)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/score", GOOD_JSON, 200),
        ("/score", BAD_JSON, 400),
        ("/v2/models/echo/infer", V2_JSON, 200),
        ("/v2/models/echo/infer", BAD_JSON, 400),
        ("/nowhere", GOOD_JSON, 404),
    ],
    ids=["score", "score-400", "v2-infer", "v2-infer-400", "404"],
)
def test_http_requests_keep_no_memory(
    quiet: GrpcServed, path: str, body: bytes, status: int
) -> None:
    http = _Http(quiet.url, path, body)
    try:
        kept = _kept_per_request(quiet, http.send)
    finally:
        http.close()
    assert http.statuses == {status}
    assert kept < KEPT_BYTES_BOUND, f"{path} keeps {kept:.0f} bytes a request"


def test_grpc_infer_keeps_no_memory(quiet: GrpcServed) -> None:
    x = np.array([[1.0, 2.0]], dtype=np.float32)

    def send(n: int) -> None:
        # eight in flight at a time, like the HTTP clients' few connections
        for start in range(0, n, 8):
            calls = [quiet.future_infer("echo", x) for _ in range(min(8, n - start))]
            for call in calls:
                assert call.result(timeout=30).outputs[0].name == "y"

    kept = _kept_per_request(quiet, send)
    assert kept < KEPT_BYTES_BOUND, f"ModelInfer keeps {kept:.0f} bytes a request"


def test_the_measure_catches_a_backend_that_keeps_its_rows(tmp_path: Path) -> None:
    # the fixture with its recording on: the soak's leak, ~120 bytes a request
    with _served(tmp_path, record=True) as recording:
        http = _Http(recording.url, "/score", GOOD_JSON)
        try:
            kept = _kept_per_request(recording, http.send)
        finally:
            http.close()
        assert http.statuses == {200}
        assert kept >= KEPT_BYTES_BOUND * 2, f"only {kept:.0f} bytes a request seen"
        assert len(recording.backend("echo").seen) >= WARM + 2 * WINDOW


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _live_connections() -> int:
    gc.collect()
    # type(), not isinstance(): isinstance reads __class__, which some modules warn on
    return sum(issubclass(type(o), HttpToolsProtocol) for o in gc.get_objects())


def test_a_connection_reset_after_its_answer_is_let_go(quiet: GrpcServed) -> None:
    # uvicorn leaves the keep-alive timer of a connection its client reset armed, holding
    # the connection's objects (~8 KB) for 30 s; scorepack's protocol cancels it
    request = http_target(quiet.url, GOOD_JSON, "application/json").request
    server_state = quiet.server._server.server_state  # type: ignore[attr-defined]
    before = _live_connections()
    for _ in range(20):
        with socket.create_connection(_address(quiet.url), timeout=30) as sock:
            sock.sendall(request)
            answer = b""
            while not answer.endswith(b"}"):  # the whole JSON answer: the timer is armed
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
            # closed with SO_LINGER 0: a reset, not a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # uvicorn has seen every one of them lost (it forgets each in connection_lost)...
    wait_for(lambda: not server_state.connections, "the server to see the resets", 60)
    # ...and nothing holds them any more
    assert _live_connections() <= before
