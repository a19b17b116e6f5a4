"""scorepack bench: the load generator, against real servers on loopback (bounded runs)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import images
from scorepack.bench import BenchConfig, run_bench
from scorepack.bench.http import HttpConnection, http_target


class _RawServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 answering with a chosen framing."""

    def __init__(self, framing: str, stall_s: float = 0.0) -> None:
        self.framing = framing
        #: the first answer waits this long: a server stall, as a GC pause or a cold cache
        self.stall_s = stall_s
        self.requests = 0
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0  # requests read on this connection
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                self.requests += 1
                served += 1
                # the keep-alive race, staged: the server lets a kept-alive connection go
                # just as a request arrives on it (closing, resetting, or cutting its answer)
                if self.framing == "drop" or (self.framing.endswith("-second") and served == 2):
                    if self.framing == "reset-second":
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    elif self.framing == "cut-second":
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{")
                        await writer.drain()
                    writer.close()
                    return
                if self.requests == 1 and self.stall_s:
                    await asyncio.sleep(self.stall_s)
                body = b'{"ok": true}'
                if self.framing == "chunked":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                        b"x-scorepack-batch-size: 3\r\n\r\n"
                        + b"5\r\n"
                        + body[:5]
                        + b"\r\n"
                        + f"{len(body) - 5:x}".encode()
                        + b"\r\n"
                        + body[5:]
                        + b"\r\n0\r\n\r\n"
                    )
                elif self.framing == "close":
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                        b"Retry-After: 1\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    await writer.drain()
                    writer.close()
                    return
                elif self.framing == "eof":  # no Content-Length: the body runs to the close
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
                    await writer.drain()
                    writer.close()
                    return
                elif self.framing == "garbage":
                    writer.write(b"SPDY/9 banana\r\n\r\n")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def __enter__(self) -> _RawServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_chunked_answers_are_read_whole_and_connections_kept() -> None:
    with _RawServer("chunked") as server:
        result = run_bench(
            BenchConfig(
                url=f"http://127.0.0.1:{server.port}",
                body=images.jpeg(),
                concurrency=3,
                duration_s=10,
                max_requests=60,
            )
        )
    assert result.requests == 60
    assert result.statuses == {"200": 60}
    assert result.batch_sizes == {3: 60}
    assert server.requests == 60
    # keep-alive: one connection per worker, not one per request
    assert server.connections == 3


def test_connection_close_is_followed_by_a_new_connection() -> None:
    with _RawServer("close") as server:
        result = run_bench(
            BenchConfig(
                url=f"http://127.0.0.1:{server.port}/score",
                body=b"{}",
                concurrency=2,
                duration_s=10,
                max_requests=20,
            )
        )
    assert result.requests == 20
    assert result.statuses == {"503": 20}
    assert result.errors == 20
    assert server.connections == 20


def test_a_connection_says_whether_the_answer_carried_retry_after() -> None:
    async def status_and_retry_after(port: int) -> tuple[int, bool]:
        conn = HttpConnection(http_target(f"http://127.0.0.1:{port}", b"{}", "application/json"))
        try:
            status, _ = await conn.send()
            return status, conn.retry_after
        finally:
            conn.close()

    with _RawServer("close") as refusing, _RawServer("length") as serving:
        assert asyncio.run(status_and_retry_after(refusing.port)) == (503, True)
        assert asyncio.run(status_and_retry_after(serving.port)) == (200, False)


class _Uvicorn:
    """uvicorn on 127.0.0.1 (port 0) in a thread, closing idle keep-alive connections after
    ``keep_alive_s``, with an ASGI app that answers every request 200."""

    def __init__(self, keep_alive_s: float) -> None:
        import uvicorn

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            while (await receive()).get("more_body"):
                pass
            body = b'{"ok": true}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})

        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, timeout_keep_alive=keep_alive_s
        )
        self.server = uvicorn.Server(config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )

    def __enter__(self) -> _Uvicorn:
        self._thread.start()
        for _ in range(600):  # bounded: 60 s
            if self.server.started:
                return self
            self._thread.join(0.1)
        raise TimeoutError("uvicorn did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self.sock.close()


def test_a_keep_alive_connection_the_server_closed_is_not_reused() -> None:
    """uvicorn closes the idle connection (keep-alive timeout 0.2 s); the next request
    goes on a new connection, not into the closed one, and needs no resend."""

    async def twice(port: int) -> tuple[int, int, int, int]:
        conn = HttpConnection(http_target(f"http://127.0.0.1:{port}", b"{}", "application/json"))
        try:
            first, _ = await conn.send()
            # wait for the server's close as the connection sees it: end of stream
            assert conn._reader is not None
            assert await asyncio.wait_for(conn._reader.read(1), 60) == b""
            second, _ = await conn.send()
            return first, second, conn.opened, conn.resent
        finally:
            conn.close()

    with _Uvicorn(keep_alive_s=0.2) as server:
        assert asyncio.run(twice(server.port)) == (200, 200, 2, 0)


def test_a_load_outliving_the_keep_alive_timeout_has_no_errors() -> None:
    """Closed-loop load with pauses longer than uvicorn's keep-alive: every request lands
    (the bench's workers reuse idle connections the server has let go)."""

    async def bursts(port: int) -> tuple[list[int], int]:
        target = http_target(f"http://127.0.0.1:{port}", b"{}", "application/json")
        conns = [HttpConnection(target) for _ in range(4)]
        statuses = []
        try:
            for _ in range(3):
                answers = await asyncio.gather(*(c.send() for c in conns))
                statuses += [status for status, _ in answers]
                for conn in conns:  # until the server has closed every idle connection
                    assert conn._reader is not None
                    assert await asyncio.wait_for(conn._reader.read(1), 60) == b""
            return statuses, sum(c.opened for c in conns)
        finally:
            for conn in conns:
                conn.close()

    with _Uvicorn(keep_alive_s=0.2) as server:
        statuses, opened = asyncio.run(bursts(server.port))
    assert statuses == [200] * 12
    assert opened == 12


@pytest.mark.parametrize("framing", ["drop-second", "reset-second"])
def test_a_reused_connection_lost_before_its_answer_is_resent_once(framing: str) -> None:
    """The race no check can see: the server lets the kept-alive connection go as the
    request arrives (FIN, or RST). No byte of an answer came, so the request is sent again
    on a new connection, once."""

    async def twice(port: int) -> tuple[int, int, int, int]:
        conn = HttpConnection(http_target(f"http://127.0.0.1:{port}", b"{}", "application/json"))
        try:
            first, _ = await conn.send()
            second, _ = await conn.send()
            return first, second, conn.opened, conn.resent
        finally:
            conn.close()

    with _RawServer(framing) as server:
        assert asyncio.run(twice(server.port)) == (200, 200, 2, 1)
        assert server.requests == 3 and server.connections == 2


@pytest.mark.parametrize("framing", ["drop", "cut-second"])
def test_what_is_not_the_keep_alive_race_is_not_resent(framing: str) -> None:
    """A fresh connection closed without an answer, or an answer cut after its first byte:
    a transport error for the caller to count, never a silent second request."""

    async def until_error(port: int) -> tuple[str, int]:
        conn = HttpConnection(http_target(f"http://127.0.0.1:{port}", b"{}", "application/json"))
        try:
            for _ in range(2):
                await conn.send()
        except asyncio.IncompleteReadError as exc:
            return type(exc).__name__, conn.resent
        finally:
            conn.close()
        return "no error", conn.resent

    with _RawServer(framing) as server:
        assert asyncio.run(until_error(server.port)) == ("IncompleteReadError", 0)
        assert server.requests == (1 if framing == "drop" else 2)


def test_unreachable_url_counts_transport_errors_and_stops_in_time() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_bench(
        BenchConfig(url=f"http://127.0.0.1:{port}", body=b"x", concurrency=2, duration_s=0.5)
    )
    assert result.requests == 0
    assert result.transport_errors > 0
    assert "Connection" in (result.last_error or "")


def test_a_body_that_runs_to_the_close_is_read_whole() -> None:
    with _RawServer("eof") as server:
        result = run_bench(
            BenchConfig(
                url=f"http://127.0.0.1:{server.port}",
                body=b"{}",
                concurrency=2,
                duration_s=30,
                max_requests=10,
            )
        )
    assert result.statuses == {"200": 10}
    assert result.transport_errors == 0
    assert server.connections == 10


def test_a_response_that_is_not_http_is_a_transport_error() -> None:
    with _RawServer("garbage") as server:
        result = run_bench(
            BenchConfig(
                url=f"http://127.0.0.1:{server.port}",
                body=b"{}",
                concurrency=1,
                duration_s=30,
                max_requests=3,
            )
        )
    assert result.requests == 0
    assert result.transport_errors == 3
    assert "HttpParser" in (result.last_error or "")
    assert result.error_rate == 1.0


def test_open_loop_counts_a_stall_from_when_requests_were_due() -> None:
    # one connection, 50 requests/s, and the server stalls 0.5 s on the first answer:
    # the requests due during the stall go out late, and their latency counts from when
    # they were due (a closed-loop client would report only the one slow request).
    # Only lower bounds are asserted: a busy machine makes every number larger.
    with _RawServer("length", stall_s=0.5) as server:
        result = run_bench(
            BenchConfig(
                url=f"http://127.0.0.1:{server.port}",
                body=b"{}",
                concurrency=1,
                duration_s=1.0,
                rate=50,
            )
        )
    assert result.mode == "open"
    assert result.to_dict()["rate"] == 50
    assert result.statuses.get("200", 0) == result.requests > 1
    # request i is due at i/50 s; the 10th was due at 0.18 s and sent after 0.5 s
    assert result.max_send_lag_ms >= 300
    assert result.latency_ms["max"] >= 500
    assert result.latency_ms["p90"] >= 200
    # service time (from the actual send) can only be shorter, request by request
    assert result.service_ms["max"] <= result.latency_ms["max"]
    assert result.service_ms["p50"] <= result.latency_ms["p50"]


def test_open_loop_counts_requests_it_could_not_send_as_errors() -> None:
    # the only connection is held past the end of the run: every later request was due
    # and never sent, which an open-loop test must not hide
    with _RawServer("length", stall_s=1.0) as server:
        result = run_bench(
            BenchConfig(
                url=f"http://127.0.0.1:{server.port}",
                body=b"{}",
                concurrency=1,
                duration_s=0.5,
                rate=20,
            )
        )
    assert result.requests == 1
    assert result.unsent == 9  # due at 0.05 … 0.45 s
    assert result.errors == 9
    assert result.error_rate == pytest.approx(0.9)


def test_closed_loop_by_default() -> None:
    with _RawServer("length") as server:
        result = run_bench(
            BenchConfig(
                url=f"http://127.0.0.1:{server.port}", body=b"{}", concurrency=2, max_requests=8
            )
        )
    assert result.mode == "closed"
    assert result.requests == 8
    assert result.unsent == 0
    assert result.error_rate == 0.0
    assert server.connections == 2


def test_latencies_are_not_whole_milliseconds() -> None:
    """Times come from a clock finer than uvloop's loop time (whole, cached milliseconds):
    a loopback answer takes a fraction of a millisecond, and its latency says so."""
    with _RawServer("length") as server:
        result = run_bench(
            BenchConfig(
                url=f"http://127.0.0.1:{server.port}", body=b"{}", concurrency=1, max_requests=51
            )
        )
    assert result.requests == 51
    p50 = result.latency_ms["p50"]  # an odd count: one request's own latency
    assert p50 > 0
    assert abs(p50 - round(p50)) > 1e-6, result.latency_ms


def _bench_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scorepack", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bench_exits_non_zero_when_errors_pass_the_threshold(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("{}")
    with _RawServer("close") as server:  # every answer is a 503
        url = f"http://127.0.0.1:{server.port}"
        failed = _bench_cli(url, str(body), "-c", "2", "-n", "6", "--json")
        allowed = _bench_cli(url, str(body), "-c", "2", "-n", "6", "--max-error-rate", "1")
    assert failed.returncode == 1, failed.stderr
    assert json.loads(failed.stdout)["error_rate"] == 1.0
    assert "100.00% of requests failed, more than --max-error-rate 1.00%" in failed.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert "503: 6" in allowed.stdout


def test_bench_rate_option_runs_open_loop(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("{}")
    with _RawServer("length") as server:
        done = _bench_cli(
            f"http://127.0.0.1:{server.port}", str(body), "--rate", "40", "-d", "0.5", "--json"
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mode"] == "open"
    assert result["requests"] + result["unsent"] + result["transport_errors"] == 20
    bad = _bench_cli("http://127.0.0.1:1", str(body), "--rate", "0")
    assert bad.returncode == 2
    assert "--rate" in bad.stderr


@pytest.fixture(scope="module")
def served_small_cnn(small_cnn_path: Path) -> Iterator[str]:
    import scorepack
    from scorepack.server import BackgroundServer

    with BackgroundServer(scorepack.load(small_cnn_path, wait=False)) as server:
        yield server.url


def test_bench_command_against_the_embedded_server(served_small_cnn: str, tmp_path: Path) -> None:
    image = tmp_path / "img.jpg"
    image.write_bytes(images.jpeg(96, 64))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "scorepack",
            "bench",
            served_small_cnn,
            str(image),
            "-c",
            "4",
            "-n",
            "40",
            "-d",
            "60",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["requests"] == 40
    assert result["statuses"] == {"200": 40}
    assert result["errors"] == 0
    assert sum(result["batch_sizes"].values()) == 40
    assert set(result["latency_ms"]) == {"mean", "p50", "p90", "p99", "max"}

    table = subprocess.run(
        [
            sys.executable,
            "-m",
            "scorepack",
            "bench",
            served_small_cnn,
            str(image),
            "-c",
            "2",
            "-n",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "req/s" in table and "200: 10" in table
