"""What each gRPC call leaves behind, as each HTTP request does (``server/app.py``): one
count in the host's metrics, one access line, and a server span when tracing is on.

* Metrics: the host's :class:`~scorepack.telemetry.stats.RequestStats` (the HTTP app's, so
  one ``/metrics`` shows both) with ``protocol="grpc"``, ``route`` the RPC's method path
  (``/inference.GRPCInferenceService/ModelInfer``) and ``status`` the gRPC status code's
  name (``OK``, ``INVALID_ARGUMENT``...); a call that scored with a model is counted with
  its model and version and timed into the request-duration histogram. Queue wait, decode
  time, rejected, timed-out and cancelled requests are the scorer's own counters, which
  every protocol feeds through ``Scorer.run_async``.
* The access line: the request id (``x-request-id`` metadata, else a ModelInfer's ``id``,
  else a new one), model, version, status, latency, batch size and queue wait.
* Tracing: a SERVER span named after the method, child of the caller's ``traceparent``
  metadata entry, with the scorer's decode, queue and model spans under it.

The hot path adds a clock read, one small object and one locked count per call; the
access line's fields are gathered only when access lines are written.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

import grpc

from ...proto.messages import SERVICE
from ...telemetry import tracing
from ...telemetry.logs import access_logging, log_access
from ...telemetry.stats import RequestStats
from ..limits import REQUEST_ID_MAX, new_request_id
from ..observe import CLIENT_CLOSED
from .errors import GrpcError

if TYPE_CHECKING:
    from ...scorer import Scorer

__all__ = ["PROTOCOL", "Call", "CallObserver", "method_path", "note_result", "note_scoring"]

PROTOCOL = "grpc"
#: the probes: counted and logged, not traced (as on HTTP: they would drown the traces)
UNTRACED = frozenset({"ServerLive", "ServerReady", "ModelReady"})
#: a cancelled call this close to its deadline (seconds) ran out of time: the client's
#: deadline ends a little before the server's, which starts counting when the call arrives
_DEADLINE_SLACK = 0.5

#: the ids HTTP keeps (server/limits.py): visible ASCII but the double quote
_REQUEST_ID = re.compile(r"[!#-~]+")
_OK = grpc.StatusCode.OK
_current: ContextVar[Call | None] = ContextVar("scorepack_grpc_call", default=None)


class Call:
    """One RPC in progress: when it began, what it scored with, and how it ended."""

    __slots__ = ("code", "result", "scorer", "started", "status", "token")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.scorer: Scorer | None = None
        #: has ``batch_size`` and ``queue_seconds`` once scored
        self.result: Any = None
        self.code = _OK
        #: the HTTP status the same outcome gets over V2 REST (access lines)
        self.status = 200
        self.token: Token[Call | None] | None = None

    def failed(self, error: GrpcError) -> None:
        """The call is answered with ``error``."""
        self.code, self.status = error.code, error.status

    def cancelled(self, context: grpc.ServicerContext) -> None:
        """The call ended first: the client cancelled, or its deadline passed."""
        remaining = context.time_remaining()
        if remaining is not None and remaining < _DEADLINE_SLACK:
            self.code, self.status = grpc.StatusCode.DEADLINE_EXCEEDED, 504
        else:
            self.code, self.status = grpc.StatusCode.CANCELLED, CLIENT_CLOSED


def method_path(name: str) -> str:
    """An RPC's method path (its ``route`` label): ``/inference.GRPCInferenceService/NAME``."""
    return f"/{SERVICE}/{name}"


def note_scoring(scorer: Scorer) -> None:
    """The current call scores with ``scorer``: it is counted and logged with its model and
    version, whatever its status."""
    call = _current.get()
    if call is not None:
        call.scorer = scorer


def note_result(result: Any) -> None:
    """The current call was scored: ``result`` has ``batch_size`` and ``queue_seconds``."""
    call = _current.get()
    if call is not None:
        call.result = result


class CallObserver:
    """Counts, logs and traces the calls of one service into ``requests`` (the host's; a
    private one when the gRPC server runs alone)."""

    def __init__(self, requests: RequestStats | None = None) -> None:
        self.requests = requests if requests is not None else RequestStats()

    def begin(self) -> Call:
        """A call starts: :func:`note_scoring` and :func:`note_result` now reach it."""
        call = Call()
        call.token = _current.set(call)
        return call

    def span(self, name: str, context: grpc.ServicerContext, call: Call) -> Any:
        """A context manager: the call's SERVER span around the block when tracing is on
        and ``name`` is not a probe; one that does nothing otherwise (the common case, so
        it is a shared object, not a generator per call)."""
        if not tracing.enabled or name in UNTRACED:
            return _NO_SPAN
        return _traced(name, context, call)

    def end(self, call: Call, path: str, request: Any, context: grpc.ServicerContext) -> None:
        """The call to ``path`` (:func:`method_path`) ended, answered, failed or cancelled:
        count it and log its line."""
        if call.token is not None:
            _current.reset(call.token)
        seconds = time.monotonic() - call.started
        code = call.code.name
        scorer = call.scorer
        if scorer is None:
            self.requests.record(path, code, protocol=PROTOCOL)
        else:
            self.requests.record(
                path,
                code,
                seconds,
                model=scorer.name,
                version=scorer.version or "",
                protocol=PROTOCOL,
            )
        if not access_logging():
            return
        result = call.result
        log_access(
            _request_id(context, request),
            "POST",  # a gRPC call is an HTTP/2 POST to its method path
            path,
            call.status,
            seconds,
            protocol=PROTOCOL,
            model=None if scorer is None else scorer.name,
            version=None if scorer is None else scorer.version,
            batch_size=None if result is None else result.batch_size,
            queue_seconds=None if result is None else result.queue_seconds,
            grpc_status=code,
        )


@contextmanager
def _traced(name: str, context: grpc.ServicerContext, call: Call) -> Iterator[None]:
    attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": name}
    with tracing.server_span(f"{SERVICE}/{name}", _metadata(context), attributes) as span:
        try:
            yield
        finally:
            tracing.finish_rpc_span(span, int(call.code.value[0]), call.status >= 500)


_NO_SPAN = nullcontext()


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    # what the trace-context propagator reads (traceparent, tracestate); tracing on only
    return {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _request_id(context: grpc.ServicerContext, request: Any) -> str:
    """The client's ``x-request-id`` metadata, else the request's own ``id`` (ModelInfer),
    else a new id; one that is overlong or not visible ASCII is replaced, as on HTTP."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "x-request-id" and isinstance(value, str) and _usable(value):
            return value
    given = getattr(request, "id", "")
    if isinstance(given, str) and _usable(given):
        return given
    return new_request_id()


def _usable(given: str) -> bool:
    return len(given) <= REQUEST_ID_MAX and _REQUEST_ID.fullmatch(given) is not None
