"""Optional OpenTelemetry tracing: a server span per scoring request, with child spans for
decoding, the queue wait and the model call, joined to the caller's trace (``traceparent``,
an HTTP header or a gRPC metadata entry).

Off by default, and then free: the hot path reads one module-level boolean
(:data:`enabled`) and OpenTelemetry is never imported. :func:`configure` turns it on with
an OTLP/HTTP exporter (``SCOREPACK_OTLP_ENDPOINT`` or ``--otlp-endpoint``), ``console``,
or any span exporter (tests). scorepack uses a tracer provider of its own rather than the
global one, so it neither replaces nor is replaced by azmlinfsrv's Application Insights
setup.

The child spans are recorded when the request is answered, from the times the scorer and
the batcher took anyway (``time.monotonic``), so tracing adds no work on the model thread.
A model call shared by a batch appears in each request's trace, with the batch size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ScorepackError

if TYPE_CHECKING:
    from ..batching import BatchResult

__all__ = [
    "configure",
    "disable",
    "enabled",
    "finish_rpc_span",
    "finish_server_span",
    "record_scoring",
    "server_span",
]

#: read on every request: True once :func:`configure` turned tracing on
enabled = False
_tracer: Any = None
_provider: Any = None
_propagator: Any = None


def configure(
    endpoint: str | None = None,
    *,
    exporter: Any = None,
    service_name: str = "scorepack",
    batch: bool = True,
) -> None:
    """Turn tracing on. ``endpoint`` is an OTLP/HTTP traces URL (for example
    ``http://collector:4318/v1/traces``) or ``console``; ``exporter`` is any OpenTelemetry
    span exporter instead. ``batch=False`` exports each span as it ends (tests)."""
    global enabled, _tracer, _provider, _propagator
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as exc:
        raise ScorepackError(
            f"Tracing needs the OpenTelemetry SDK ({exc}): pip install opentelemetry-sdk"
        ) from exc
    if exporter is None:
        exporter = _exporter(endpoint)
    disable()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    _provider = provider
    _tracer = provider.get_tracer("scorepack")
    _propagator = TraceContextTextMapPropagator()
    enabled = True


def _exporter(endpoint: str | None) -> Any:
    if not endpoint:
        raise ScorepackError("Tracing needs an OTLP endpoint (or 'console').")
    if endpoint == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        from importlib.metadata import version

        sdk = version("opentelemetry-sdk")
        # azmlinfsrv pins the SDK at 1.33, whose exporter needs protobuf<6: pip would
        # downgrade protobuf under TensorFlow and ONNX, which need protobuf>=6.31
        raise ScorepackError(
            "Exporting traces over OTLP needs the exporter matching the installed "
            f"OpenTelemetry SDK: pip install opentelemetry-exporter-otlp-proto-http=={sdk} "
            "(check first that its protobuf range fits what your model's framework needs: "
            "with azmlinfsrv's SDK 1.33 it needs protobuf<6, which TensorFlow and ONNX "
            "packages cannot have; see requirements/otlp.txt in scorepack's repository)"
        ) from exc
    return OTLPSpanExporter(endpoint=endpoint)


def disable() -> None:
    """Turn tracing off, flushing what was recorded."""
    global enabled, _tracer, _provider
    enabled = False
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


@contextmanager
def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """A SERVER span, current for the block, child of the caller's ``traceparent``.

    Yields the span so the host can add the status; call only when :data:`enabled`.
    """
    from opentelemetry.trace import SpanKind

    parent = _propagator.extract(carrier=headers)
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


def finish_server_span(span: Any, status: int, **attributes: Any) -> None:
    """Set the HTTP status (an error status for 5xx) and other attributes on ``span``."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("http.response.status_code", status)
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def finish_rpc_span(span: Any, code: int, error: bool, **attributes: Any) -> None:
    """Set a gRPC call's status code (``rpc.grpc.status_code``, a number as OpenTelemetry's
    conventions have it) on ``span``, an error status when the server failed (``error``:
    what is a 5xx over HTTP), and other attributes."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("rpc.grpc.status_code", code)
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)
    if error:
        span.set_status(Status(StatusCode.ERROR))


def record_scoring(
    decode_began: float,
    decode_ended: float,
    result: BatchResult,
    model: str | None = None,
    version: str | None = None,
) -> None:
    """Child spans of the current span: decode, queue wait, model call (monotonic times).

    ``model`` and ``version`` (the scorer's) go on the current span and on each child as
    ``scorepack.model`` and ``scorepack.model_version``: a host's server span is opened
    before routing tells which model a request is for.
    """
    tracer = _tracer
    if tracer is None:
        return
    from opentelemetry import trace

    offset = time.time_ns() - time.monotonic_ns()

    def ns(seconds: float) -> int:
        return int(seconds * 1e9) + offset

    named: dict[str, Any] = {"scorepack.model": model} if model else {}
    if version:
        named["scorepack.model_version"] = version
    trace.get_current_span().set_attributes(named)
    for name, began, ended, attributes in (
        ("decode", decode_began, decode_ended, named),
        ("queue", result.enqueued, result.started, named),
        (
            "model",
            result.started,
            result.finished,
            {**named, "scorepack.batch_size": result.batch_size},
        ),
    ):
        span = tracer.start_span(f"scorepack.{name}", start_time=ns(began), attributes=attributes)
        span.end(end_time=ns(ended))
