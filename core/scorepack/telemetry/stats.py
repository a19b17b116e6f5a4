"""What the hot path records: plain counters and histogram buckets, no exposition.

Requests add to these; the Prometheus collectors (:mod:`.metrics`) read them when scraped.
Observing a value here is one ``bisect`` and two additions (about 0.25 µs, 0.5 µs with the
lock), where a ``prometheus_client.Histogram`` takes about 1.9 µs and importing the library
about 100 ms: the serving path stays cheap, and ``import scorepack`` stays light. The
library still renders everything (types, names, escaping, the text and OpenMetrics
formats); these are only the numbers.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Sequence

__all__ = [
    "BATCH_BUCKETS",
    "FILL_BUCKETS",
    "LATENCY_BUCKETS",
    "Histogram",
    "InferenceStats",
    "LockedHistogram",
    "NoRequestStats",
    "RequestStats",
    "ScorerStats",
]

#: seconds: half a millisecond to a minute, for queue waits, decoding, model calls, requests
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: rows per model call
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: rows per model call / the most the model call could take
FILL_BUCKETS: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75, 0.9, 1.0)


class Histogram:
    """Bucket counts and a sum, Prometheus-style (``le`` bounds, +Inf last).

    Not locked: for values observed by one thread only (the model thread), or under a lock
    the caller holds. :class:`LockedHistogram` is the one for many writers.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        #: one count per bound, then the +Inf bucket (not cumulative)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one value (seconds, rows, ...)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, value: float, times: int) -> None:
        """Count ``value`` ``times`` times at once."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.total += value * times

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``, and the sum: what
        ``prometheus_client``'s ``HistogramMetricFamily`` takes."""
        counts = list(self.counts)
        total = self.total
        out = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else _le(bound), float(running)))
        return out, total

    @property
    def count(self) -> int:
        return sum(self.counts)


class LockedHistogram(Histogram):
    """A :class:`Histogram` many threads may observe into."""

    __slots__ = ("_lock",)

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(bounds)
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect_left(self.bounds, value)] += 1
            self.total += value

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        with self._lock:
            return super().snapshot()


def _le(bound: float) -> str:
    # the same spelling prometheus_client gives its own bucket bounds
    return repr(float(bound))


class InferenceStats:
    """Every scoring request's outcome and where its time went, summed: the numbers of the
    V2 statistics extension's ``inference_stats`` (:mod:`scorepack.v2.statistics` says
    which field each one feeds). Times are seconds of ``time.monotonic``.

    A request that got its outputs adds its rows, its whole time (admission to outputs in
    hand) and that time's parts: waiting (for admission, a decode slot and a decode
    thread, then in the batcher's queue), decoding (body to model-ready arrays), the model
    call it rode in, and the way back (the call's outputs split and handed to the waiting
    thread). A request that did not (the scorer decides which count: timeout, model
    error, client gone) adds its time to the failures. One clock read, one lock and a few
    additions a request: 1.3 µs measured on a busy 2-core machine, where an empty ``with lock``
    alone took 0.5.
    """

    __slots__ = (
        "_lock",
        "fail",
        "fail_seconds",
        "infer_seconds",
        "input_seconds",
        "last",
        "output_seconds",
        "queue_seconds",
        "rows",
        "success",
        "success_seconds",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success = self.fail = self.rows = 0
        self.success_seconds = self.fail_seconds = self.queue_seconds = 0.0
        self.input_seconds = self.infer_seconds = self.output_seconds = 0.0
        #: when the last request finished (monotonic; 0.0 before any)
        self.last = 0.0

    def succeeded(
        self,
        rows: int,
        admitted: float,
        decoding: float,
        decoded: float,
        enqueued: float,
        started: float,
        finished: float,
    ) -> None:
        """Count a request that got its outputs: ``rows`` rows, admitted (entered the
        scorer), decoded from ``decoding`` to ``decoded``, queued for the batcher at
        ``enqueued``, its model call from ``started`` to ``finished``; answered now."""
        now = time.monotonic()
        with self._lock:
            self.success += 1
            self.rows += rows
            self.success_seconds += now - admitted
            self.queue_seconds += (decoding - admitted) + (started - enqueued)
            self.input_seconds += decoded - decoding
            self.infer_seconds += finished - started
            self.output_seconds += now - finished
            self.last = now

    def failed(self, admitted: float) -> None:
        """Count a request that entered the scorer at ``admitted`` and got no outputs."""
        now = time.monotonic()
        with self._lock:
            self.fail += 1
            self.fail_seconds += now - admitted
            self.last = now

    def snapshot(self) -> dict[str, float]:
        """The numbers, copied under the lock (one consistent set), with ``last_ms``: when
        the last request finished, in ms since the epoch (0 before any)."""
        with self._lock:
            numbers = {name: getattr(self, name) for name in self.__slots__ if name != "_lock"}
        # the wall clock only here, not per request: the monotonic time moved to the epoch
        last = numbers.pop("last")
        numbers["last_ms"] = int((time.time() - time.monotonic() + last) * 1000) if last else 0
        return numbers


class ScorerStats:
    """What a :class:`~scorepack.scorer.Scorer` counts beyond its batcher: decode time,
    the requests that timed out or were cancelled (the client went away), and every
    request's outcome and time (:class:`InferenceStats`)."""

    __slots__ = ("_lock", "cancelled", "decode", "inference", "timeouts")

    def __init__(self) -> None:
        #: decode + preprocess, seconds per request (decode threads and gunicorn threads)
        self.decode = LockedHistogram()
        self.timeouts = 0
        self.cancelled = 0
        self.inference = InferenceStats()
        self._lock = threading.Lock()

    def timed_out(self) -> None:
        with self._lock:
            self.timeouts += 1

    def cancel(self) -> None:
        with self._lock:
            self.cancelled += 1


class RequestStats:
    """What a host counts: answers by model, version, protocol, route and status, and
    end-to-end latency by model, version and protocol. Thread-safe (gunicorn threads, and
    the gRPC server's thread beside the HTTP server's). ``status`` is an HTTP status, or a
    gRPC status code's name (``OK``, ``INVALID_ARGUMENT``...) for ``protocol="grpc"``."""

    __slots__ = ("_latency", "_lock", "responses")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (model, version, protocol, route, status) → count
        self.responses: dict[tuple[str, str, str, str, str], int] = {}
        self._latency: dict[tuple[str, str, str], Histogram] = {}

    def record(
        self,
        route: str,
        status: int | str,
        seconds: float | None = None,
        *,
        model: str = "",
        version: str = "",
        protocol: str = "",
    ) -> None:
        """Count one answer; ``seconds`` (for scoring requests) goes to the latency histogram."""
        key = (model, version, protocol, route, str(status))
        with self._lock:
            self.responses[key] = self.responses.get(key, 0) + 1
            if seconds is not None:
                lkey = (model, version, protocol)
                histogram = self._latency.get(lkey)
                if histogram is None:
                    histogram = self._latency[lkey] = Histogram()
                histogram.observe(seconds)

    def snapshot(
        self,
    ) -> tuple[
        dict[tuple[str, str, str, str, str], int],
        dict[tuple[str, str, str], tuple[list[tuple[str, float]], float]],
    ]:
        """Copies of the counts and latency histograms, taken under the lock."""
        with self._lock:
            return dict(self.responses), {k: h.snapshot() for k, h in self._latency.items()}


class NoRequestStats(RequestStats):
    """A host's :class:`RequestStats` with metrics off (``--no-metrics``): every answer is
    dropped uncounted, so the paths that count (HTTP, gRPC) need no switch of their own."""

    __slots__ = ()

    def record(
        self,
        route: str,
        status: int | str,
        seconds: float | None = None,
        *,
        model: str = "",
        version: str = "",
        protocol: str = "",
    ) -> None:
        """Count nothing."""
