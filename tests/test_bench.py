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


class _RawServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 answering with a chosen framing."""

    def __init__(self, framing: str) -> None:
        self.framing = framing
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
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    await writer.drain()
                    writer.close()
                    return
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
