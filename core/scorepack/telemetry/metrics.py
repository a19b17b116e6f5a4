"""Prometheus metrics of a host: one registry per app, collectors reading the scorers.

Each host (the embedded server, the azmlinfsrv runtime) makes one :class:`Metrics`: its
own ``CollectorRegistry`` (never the global default, so tests and several servers in one
process do not collide) holding

* :class:`ScorerCollector`, which reads every served scorer's counters and histograms
  (:mod:`.stats`) when scraped — nothing is instrumented twice on the hot path;
* the host's own answers by model, version, protocol, route and status, and end-to-end
  latency (:class:`~.stats.RequestStats`);
* the process, platform and garbage-collector collectors of ``prometheus_client``;
* GPU memory and utilisation through NVML, where a driver is loaded (:mod:`.gpu`).

The names, and their Triton and KServe counterparts, are listed in the README
("Metrics").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .stats import BATCH_BUCKETS, FILL_BUCKETS, Histogram, RequestStats

if TYPE_CHECKING:
    from ..scorer import Scorer

__all__ = ["INFLIGHT_GAUGE", "Metrics", "ScorerCollector"]

#: the gauge an autoscaler scales on (a KEDA Prometheus trigger, an HPA custom metric)
INFLIGHT_GAUGE = "scorepack_inflight_requests"

_MODEL = ("model", "version")


def _labels(scorer: Scorer) -> list[str]:
    return [scorer.name, scorer.version or ""]


class ScorerCollector:
    """Exports what the scorers counted; ``scorers`` gives the ones served right now."""

    def __init__(self, scorers: Callable[[], Iterable[Scorer]]) -> None:
        self._scorers = scorers

    def describe(self) -> list[Any]:
        # nothing: names are checked when collected, and describing would collect early
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        scorers = list(self._scorers())

        def gauge(name: str, doc: str, value: Callable[[Scorer], float | None]) -> Any:
            family = GaugeMetricFamily(name, doc, labels=_MODEL)
            for s in scorers:
                v = value(s)
                if v is not None:
                    family.add_metric(_labels(s), v)
            return family

        def counter(name: str, doc: str, value: Callable[[Scorer], float]) -> Any:
            family = CounterMetricFamily(name, doc, labels=_MODEL)
            for s in scorers:
                family.add_metric(_labels(s), value(s))
            return family

        def histogram(name: str, doc: str, value: Callable[[Scorer], Histogram]) -> Any:
            family = HistogramMetricFamily(name, doc, labels=_MODEL)
            for s in scorers:
                buckets, total = value(s).snapshot()
                family.add_metric(_labels(s), buckets, total)
            return family

        yield gauge(
            "scorepack_model_ready",
            "1 once the model is loaded and warmed up, else 0.",
            lambda s: float(s.ready),
        )
        yield gauge(
            "scorepack_model_load_seconds",
            "How long loading and warming up the model took.",
            lambda s: s.load_seconds,
        )
        info = GaugeMetricFamily(
            "scorepack_model_info",
            "The served model's backend and device (always 1).",
            labels=(*_MODEL, "backend", "device"),
        )
        for s in scorers:
            info.add_metric([*_labels(s), type(s.backend).__name__, str(s.backend.device)], 1.0)
        yield info
        yield gauge(
            "scorepack_max_batch_size",
            "The most rows one model call takes.",
            lambda s: float(s.batcher.max_rows),
        )
        yield gauge(
            "scorepack_preferred_batch_size",
            "The most rows a batch gathers: tuned under load (auto; while tuning, the cap "
            "being tried), or set (preferred_batch_size).",
            lambda s: float(s.batcher.batch_rows),
        )
        yield gauge(
            "scorepack_queue_depth",
            "Requests admitted and not yet in a model call (decoding or queued).",
            lambda s: float(s.batcher.queue_depth),
        )
        yield gauge(
            "scorepack_inflight_requests",
            "Requests admitted and not yet answered: decoding, queued or in a model call.",
            lambda s: float(s.batcher.inflight),
        )
        yield counter(
            "scorepack_inference_rows",
            "Rows (images, tensor rows) through model calls.",
            lambda s: float(s.batcher.stats.rows),
        )
        yield counter(
            "scorepack_model_calls",
            "Model calls made (one per batch).",
            lambda s: float(s.batcher.stats.batches),
        )
        yield counter(
            "scorepack_model_errors",
            "Requests whose model call failed.",
            lambda s: float(s.batcher.stats.errors),
        )
        yield counter(
            "scorepack_rejected_requests",
            "Requests refused at once because the queue was full (503).",
            lambda s: float(s.batcher.stats.rejected),
        )
        yield counter(
            "scorepack_timed_out_requests",
            "Requests not answered within the timeout (504).",
            lambda s: float(s.stats.timeouts),
        )
        yield counter(
            "scorepack_cancelled_requests",
            "Requests whose client went away before the answer.",
            lambda s: float(s.stats.cancelled),
        )
        yield histogram(
            "scorepack_queue_wait_seconds",
            "Time from queued to taken into a model call, per request.",
            lambda s: s.batcher.stats.queue_wait,
        )
        yield histogram(
            "scorepack_decode_seconds",
            "Time decoding and preprocessing a request body (image or JSON tensors).",
            lambda s: s.stats.decode,
        )
        yield histogram(
            "scorepack_model_call_seconds",
            "Time inside the model, per model call.",
            lambda s: s.batcher.stats.model_call,
        )
        sizes = HistogramMetricFamily("scorepack_batch_size", "Rows per model call.", labels=_MODEL)
        fill = HistogramMetricFamily(
            "scorepack_batch_fill_ratio",
            "Rows per model call over the preferred batch size (1 = full batches).",
            labels=_MODEL,
        )
        for s in scorers:
            batch_sizes = dict(s.batcher.stats.sizes)
            by_size, by_fill = Histogram(BATCH_BUCKETS), Histogram(FILL_BUCKETS)
            most = max(s.batcher.batch_rows, 1)
            for rows, calls in batch_sizes.items():
                by_size.add(rows, calls)
                by_fill.add(rows / most, calls)
            sizes.add_metric(_labels(s), *by_size.snapshot())
            fill.add_metric(_labels(s), *by_fill.snapshot())
        yield sizes
        yield fill


class _RequestCollector:
    """Exports a host's :class:`~.stats.RequestStats`."""

    def __init__(self, stats: RequestStats) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        responses, latency = self._stats.snapshot()
        counts = CounterMetricFamily(
            "scorepack_requests",
            "HTTP requests answered, by model, version, protocol, route and status.",
            labels=(*_MODEL, "protocol", "route", "status"),
        )
        for key, count in sorted(responses.items()):
            counts.add_metric(list(key), float(count))
        yield counts
        durations = HistogramMetricFamily(
            "scorepack_request_duration_seconds",
            "End-to-end time of scoring requests, from the request to the response body.",
            labels=(*_MODEL, "protocol"),
        )
        for lkey, (buckets, total) in sorted(latency.items()):
            durations.add_metric(list(lkey), buckets, total)
        yield durations


class Metrics:
    """One host's registry: its scorers, its request counts, the process and the GPUs."""

    def __init__(
        self, scorers: Callable[[], Iterable[Scorer]], *, process: bool = True, gpu: bool = True
    ) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        self.requests = RequestStats()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ScorerCollector(scorers))
        self.registry.register(_RequestCollector(self.requests))
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        if gpu:
            from .gpu import nvml_collector

            collector = nvml_collector()
            if collector is not None:
                self.registry.register(collector)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header: OpenMetrics when asked, else text 0.0.4."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
