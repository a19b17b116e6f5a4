"""scorepack bench: the load generator, against real servers on loopback (bounded runs)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

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


def test_unreachable_url_counts_transport_errors_and_stops_in_time() -> None:
    import socket

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
