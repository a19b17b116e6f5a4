"""The load test itself: closed-loop (``-c`` workers, each sending as soon as its last
answer arrives) or open-loop (``--rate R``: requests are due on a fixed schedule).

Open loop follows wrk2 and Triton's perf_analyzer: request *i* is due at
``start + i / R`` whether or not earlier ones have been answered, and its latency is
measured from that intended send time. A closed-loop client measures from the actual
send, so when the server stalls it simply stops sending and the stall vanishes from the
percentiles ("coordinated omission"); measuring from the schedule puts the waiting time
back. ``concurrency`` bounds the requests in flight (one connection each); when all are
busy the next request goes out late, and its latency still counts from when it was due.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httptools
import numpy as np

from ..client import scoring_url
from .http import HttpConnection, http_target

__all__ = [
    "DEFAULT_MAX_ERROR_RATE",
    "BenchConfig",
    "BenchResult",
    "Connection",
    "Snapshot",
    "run_bench",
]

#: the clock every time is read from: not the event loop's ``loop.time()``, which under
#: uvloop is libuv's cached loop time in whole milliseconds (every latency then came out
#: a whole number of ms, and up to a loop iteration stale)
_now = time.monotonic

#: the fraction of failed requests above which ``scorepack bench`` exits non-zero
DEFAULT_MAX_ERROR_RATE = 0.01

#: what a failed send raises: the run counts it as a transport error and goes on
_TRANSPORT_ERRORS = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    asyncio.TimeoutError,
    httptools.HttpParserError,
    ValueError,
)


class Connection(Protocol):
    """What the load loop drives: one connection that sends one request per call.

    :meth:`send` returns the status (an HTTP status, or another protocol's code mapped
    onto one) and the server's batch size when it says (None otherwise).
    """

    def send(self) -> Awaitable[tuple[int, int | None]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BenchConfig:
    """One load test: what to send, where, how hard and for how long.

    ``rate`` switches to open-loop mode: that many requests per second, on schedule,
    with at most ``concurrency`` in flight.
    """

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
    #: requests per second (open loop); None: closed loop
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.duration_s <= 0:
            raise ValueError("duration must be positive")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (requests per second)")
        if self.warmup_s < 0:
            raise ValueError("warmup must not be negative")


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
    """What a load test measured (only the measured window, after warm-up).

    ``latency_ms`` counts from each request's intended send time in open-loop mode
    (corrected for coordinated omission) and from the actual send in closed-loop mode;
    ``service_ms`` always counts from the actual send.
    """

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
    #: the open-loop target (requests per second); None in closed loop
    rate: float | None = None
    service_ms: dict[str, float] = field(default_factory=dict)
    #: open loop: how late the latest send went out (all connections were busy)
    max_send_lag_ms: float = 0.0
    #: open loop: requests due in the run that never went out (all connections busy)
    unsent: int = 0

    @property
    def mode(self) -> str:
        """``open`` (``--rate``) or ``closed``."""
        return "closed" if self.rate is None else "open"

    @property
    def errors(self) -> int:
        """Requests that did not get a 2xx answer (open loop: or were never sent)."""
        failed = sum(n for s, n in self.statuses.items() if not s.startswith("2"))
        return failed + self.transport_errors + self.unsent

    @property
    def error_rate(self) -> float:
        """Failed requests over all due ones (1.0 when nothing was attempted)."""
        attempted = self.requests + self.transport_errors + self.unsent
        return self.errors / attempted if attempted else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "mode": self.mode,
            "rate": self.rate,
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "rps": round(self.rps, 2),
            "latency_ms": {k: round(v, 2) for k, v in self.latency_ms.items()},
            "service_ms": {k: round(v, 2) for k, v in self.service_ms.items()},
            "max_send_lag_ms": round(self.max_send_lag_ms, 2),
            "statuses": self.statuses,
            "transport_errors": self.transport_errors,
            "unsent": self.unsent,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "last_error": self.last_error,
        }


class _Recorder:
    def __init__(self, measure_from: float) -> None:
        self.measure_from = measure_from
        self.latencies: list[float] = []
        self.service: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.batches: Counter[int] = Counter()
        self.transport_errors = 0
        self.last_error: str | None = None
        self.max_lag = 0.0

    def counts(self, due: float) -> bool:
        """Whether a request due at ``due`` falls in the measured window (not warm-up)."""
        return due >= self.measure_from

    def record(self, status: int, latency: float, service: float, batch: int | None) -> None:
        self.latencies.append(latency)
        self.service.append(service)
        self.statuses[str(status)] += 1
        if batch is not None:
            self.batches[batch] += 1

    def failed(self, exc: BaseException) -> None:
        self.transport_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Schedule:
    """Hands out requests: when each is due (open loop) or now (closed loop), until the
    duration or the request budget runs out."""

    def __init__(self, config: BenchConfig, start: float, stop_at: float) -> None:
        self.rate = config.rate
        self.start, self.stop_at = start, stop_at
        self.left = config.max_requests
        self.issued = 0
        #: open loop: requests due before the end that never went out (all busy)
        self.unsent = 0

    def take(self, now: float) -> float | None:
        if self.left is not None and self.left <= 0:
            return None
        if now >= self.stop_at:
            if self.rate is not None:
                # the run is over; requests still due were never sent: say how many
                missing = max(0, self._due_before_stop() - self.issued)
                self.unsent += missing if self.left is None else min(missing, self.left)
            self.left = 0
            return None
        due = now if self.rate is None else self._due(self.issued)
        if due >= self.stop_at:
            return None
        self.issued += 1
        if self.left is not None:
            self.left -= 1
        return due

    def _due(self, index: int) -> float:
        assert self.rate is not None
        return self.start + index / self.rate

    def _due_before_stop(self) -> int:
        """How many requests fall due before the end, by the same arithmetic as take()."""
        assert self.rate is not None
        count = math.ceil((self.stop_at - self.start) * self.rate)
        while count > 0 and self._due(count - 1) >= self.stop_at:
            count -= 1
        while self._due(count) < self.stop_at:
            count += 1
        return count


async def _worker(
    conn: Connection, schedule: _Schedule, recorder: _Recorder, timeout: float
) -> None:
    try:
        while (due := schedule.take(_now())) is not None:
            wait = due - _now()
            if wait > 0:
                await asyncio.sleep(wait)
            sent = _now()
            try:
                status, batch = await asyncio.wait_for(conn.send(), timeout)
            except _TRANSPORT_ERRORS as exc:
                conn.close()
                if recorder.counts(due):
                    recorder.failed(exc)
                await asyncio.sleep(0.05)  # a refused connection must not spin
                continue
            done = _now()
            if recorder.counts(due):
                # from the intended send time: a request that waited for a free
                # connection (open loop) carries that wait in its latency
                recorder.record(status, done - due, done - sent, batch)
                recorder.max_lag = max(recorder.max_lag, sent - due)
    finally:
        conn.close()


async def _run(
    config: BenchConfig,
    progress: Callable[[Snapshot], None] | None,
    connect: Callable[[], Connection],
) -> BenchResult:
    now = _now()
    measure_from = now + config.warmup_s
    stop_at = measure_from + config.duration_s
    recorder = _Recorder(measure_from)
    schedule = _Schedule(config, now, stop_at)
    tasks = [
        asyncio.create_task(_worker(connect(), schedule, recorder, config.timeout_s))
        for _ in range(config.concurrency)
    ]
    if config.warmup_s:
        await asyncio.wait(tasks, timeout=config.warmup_s)
    started = _now()
    while not all(t.done() for t in tasks):
        await asyncio.wait(tasks, timeout=1.0)
        if progress is not None:
            progress(_snapshot(recorder, _now() - started))
    elapsed = _now() - started
    for task in tasks:
        task.result()
    return _result(config, recorder, elapsed, schedule.unsent)


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


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    if not ms.size:
        return {}
    return {
        "mean": float(ms.mean()),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
    }


def _result(config: BenchConfig, recorder: _Recorder, elapsed: float, unsent: int) -> BenchResult:
    count = len(recorder.latencies)
    return BenchResult(
        url=scoring_url(config.url),
        concurrency=config.concurrency,
        duration_s=elapsed,
        requests=count,
        rps=count / elapsed if elapsed > 0 else 0.0,
        latency_ms=_percentiles(recorder.latencies),
        statuses=dict(recorder.statuses),
        transport_errors=recorder.transport_errors,
        batch_sizes=dict(recorder.batches),
        last_error=recorder.last_error,
        rate=config.rate,
        service_ms=_percentiles(recorder.service),
        max_send_lag_ms=recorder.max_lag * 1000,
        unsent=unsent,
    )


def run_bench(
    config: BenchConfig,
    progress: Callable[[Snapshot], None] | None = None,
    connect: Callable[[], Connection] | None = None,
) -> BenchResult:
    """Run one load test to completion (uses uvloop when installed).

    ``connect`` makes one connection per worker; by default an HTTP/1.1 connection that
    POSTs ``config.body`` to ``config.url``. Other protocols plug in here.
    """
    if connect is None:
        target = http_target(config.url, config.body, config.content_type, config.key)

        def connect() -> Connection:
            return HttpConnection(target)

    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run(config, progress, connect))
    return uvloop.run(_run(config, progress, connect))
