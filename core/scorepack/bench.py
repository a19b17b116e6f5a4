"""A load generator for any scoring URL: ``scorepack bench``.

Each of N workers keeps one HTTP/1.1 keep-alive connection and sends the same pre-built
request again and again until the duration (or request budget) runs out. The request bytes
are built once and responses are parsed with the least work that stays correct
(Content-Length or chunked bodies), so on a small machine the client costs the server as
little CPU as possible. HTTPS works (Azure ML scoring URIs).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .client import content_type_for, scoring_url

__all__ = ["BenchConfig", "BenchResult", "Snapshot", "run_bench"]


@dataclass(frozen=True)
class BenchConfig:
    """One load test: what to send, where, how hard and for how long."""

    url: str
    body: bytes
    concurrency: int = 8
    duration_s: float = 10.0
    max_requests: int | None = None
    content_type: str | None = None
    key: str | None = None
    timeout_s: float = 60.0
    #: seconds of load before measuring starts (connections open, caches warm)
    warmup_s: float = 0.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.duration_s <= 0:
            raise ValueError("duration must be positive")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("max_requests must be at least 1")


@dataclass
class Snapshot:
    """Progress so far, for live displays."""

    elapsed_s: float
    completed: int
    errors: int
    rps: float
    p50_ms: float | None


@dataclass
class BenchResult:
    """What a load test measured (only the measured window, after warm-up)."""

    url: str
    concurrency: int
    duration_s: float
    requests: int
    rps: float
    latency_ms: dict[str, float]
    statuses: dict[str, int]
    transport_errors: int
    batch_sizes: dict[int, int] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def errors(self) -> int:
        """Requests that did not get a 2xx answer."""
        failed = sum(n for s, n in self.statuses.items() if not s.startswith("2"))
        return failed + self.transport_errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "rps": round(self.rps, 2),
            "latency_ms": {k: round(v, 2) for k, v in self.latency_ms.items()},
            "statuses": self.statuses,
            "transport_errors": self.transport_errors,
            "errors": self.errors,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "last_error": self.last_error,
        }


class _Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.batches: Counter[int] = Counter()
        self.transport_errors = 0
        self.last_error: str | None = None
        self.measuring = False

    def record(self, status: int, seconds: float, batch: int | None) -> None:
        if not self.measuring:
            return
        self.latencies.append(seconds)
        self.statuses[str(status)] += 1
        if batch is not None:
            self.batches[batch] += 1


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends one fixed request."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, request: bytes) -> None:
        self.host, self.port, self.tls, self.request = host, port, tls, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self) -> tuple[int, int | None]:
        """Send the request, read the whole answer; return (status, batch size header)."""
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        chunked = False
        keep_alive = True
        batch = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
            elif name == b"x-scorepack-batch-size":
                batch = int(value)
        if chunked:
            await self._read_chunked()
        elif length is not None:
            await self.reader.readexactly(length)
        else:  # no framing: the body runs to the end of the connection
            await self.reader.read()
            keep_alive = False
        if not keep_alive:
            self.close()
        return status, batch

    async def _read_chunked(self) -> None:
        assert self.reader is not None
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # trailer end
                return
            await self.reader.readexactly(size + 2)


def _request_bytes(config: BenchConfig) -> tuple[str, int, ssl.SSLContext | None, bytes]:
    url = urlsplit(scoring_url(config.url))
    tls = ssl.create_default_context() if url.scheme == "https" else None
    port = url.port or (443 if tls else 80)
    host = url.hostname or "127.0.0.1"
    target = url.path + (f"?{url.query}" if url.query else "")
    headers = [
        f"POST {target} HTTP/1.1",
        f"Host: {url.netloc}",
        f"Content-Type: {config.content_type or content_type_for(config.body)}",
        f"Content-Length: {len(config.body)}",
        "Connection: keep-alive",
        "User-Agent: scorepack-bench",
    ]
    if config.key:
        headers.append(f"Authorization: Bearer {config.key}")
    return host, port, tls, ("\r\n".join(headers) + "\r\n\r\n").encode() + config.body


async def _worker(
    conn: _Connection,
    recorder: _Recorder,
    stop_at: float,
    budget: list[int],
    timeout: float,
) -> None:
    while time.monotonic() < stop_at and budget[0] != 0:
        if budget[0] > 0:
            budget[0] -= 1
        started = time.perf_counter()
        try:
            status, batch = await asyncio.wait_for(conn.send(), timeout)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            asyncio.TimeoutError,
            ValueError,
            IndexError,
        ) as exc:
            conn.close()
            if recorder.measuring:
                recorder.transport_errors += 1
                recorder.last_error = (
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                )
            await asyncio.sleep(0.05)  # a refused connection must not spin
            continue
        recorder.record(status, time.perf_counter() - started, batch)
    conn.close()


async def _run(config: BenchConfig, progress: Callable[[Snapshot], None] | None) -> BenchResult:
    host, port, tls, request = _request_bytes(config)
    recorder = _Recorder()
    now = time.monotonic()
    measure_from = now + config.warmup_s
    stop_at = measure_from + config.duration_s
    budget = [config.max_requests if config.max_requests is not None else -1]
    connections = [_Connection(host, port, tls, request) for _ in range(config.concurrency)]
    tasks = [
        asyncio.create_task(_worker(c, recorder, stop_at, budget, config.timeout_s))
        for c in connections
    ]
    if config.warmup_s:
        await asyncio.sleep(config.warmup_s)
    recorder.measuring = True
    started = time.monotonic()
    while not all(t.done() for t in tasks):
        await asyncio.wait(tasks, timeout=1.0)
        if progress is not None:
            progress(_snapshot(recorder, time.monotonic() - started))
    elapsed = time.monotonic() - started
    for task in tasks:
        task.result()
    return _result(config, recorder, elapsed)


def _snapshot(recorder: _Recorder, elapsed: float) -> Snapshot:
    done = len(recorder.latencies)
    recent = recorder.latencies[-2000:]
    return Snapshot(
        elapsed_s=elapsed,
        completed=done,
        errors=sum(n for s, n in recorder.statuses.items() if not s.startswith("2"))
        + recorder.transport_errors,
        rps=done / elapsed if elapsed > 0 else 0.0,
        p50_ms=float(np.percentile(recent, 50) * 1000) if recent else None,
    )


def _result(config: BenchConfig, recorder: _Recorder, elapsed: float) -> BenchResult:
    lat = np.asarray(recorder.latencies, dtype=np.float64) * 1000
    latency = (
        {
            "mean": float(lat.mean()),
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
        }
        if lat.size
        else {}
    )
    return BenchResult(
        url=scoring_url(config.url),
        concurrency=config.concurrency,
        duration_s=elapsed,
        requests=int(lat.size),
        rps=lat.size / elapsed if elapsed > 0 else 0.0,
        latency_ms=latency,
        statuses=dict(recorder.statuses),
        transport_errors=recorder.transport_errors,
        batch_sizes=dict(recorder.batches),
        last_error=recorder.last_error,
    )


def run_bench(
    config: BenchConfig, progress: Callable[[Snapshot], None] | None = None
) -> BenchResult:
    """Run one load test to completion (uses uvloop when installed)."""
    try:
        import uvloop

        return uvloop.run(_run(config, progress))
    except ImportError:
        return asyncio.run(_run(config, progress))
