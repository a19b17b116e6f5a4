"""The embedded scoring server: Starlette's router and request objects on uvicorn.

:class:`ScoringApp` is the ASGI entry point, serving a :class:`~scorepack.repository.Repository`
(one model or several) through Azure ML's ``/score`` and the V2 REST routes on one port.
Around the router it does what every route shares: a request id on every reply, one
access line per request, the request counted in this app's metrics (and traced, when
tracing is on), errors turned into replies through the one table in ``server/errors.py``,
``connection: close`` when a reply leaves the body unread, and a lifespan that starts the
models loading in the background (liveness answers while they load). The routes
themselves live in ``routes_*`` modules; a route that scores tells the access line and
the metrics what it scored with through :func:`~.observe.note_scoring`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from ..codecs import encode_json
from ..errors import HeadersTooLargeError
from ..repository import Repository
from ..scorer import Scorer
from ..telemetry import tracing
from ..telemetry.logs import access_logging, log_access
from ..telemetry.metrics import Metrics
from ..telemetry.stats import NoRequestStats, RequestStats
from .auth import KeyCheck
from .body import BodyTracker
from .errors import ErrorReply, error_reply
from .limits import HttpLimits, checked_request_id, new_request_id
from .observe import CLIENT_CLOSED
from .routes_azureml import AzureMLRoutes
from .routes_docs import DocsRoutes
from .routes_v2 import V2Routes
from .routing import ERROR_STYLE, make_router

__all__ = ["ScoringApp"]

logger = logging.getLogger("scorepack.server")

#: paths whose requests are not traced (probes and scrapes would drown the traces)
_UNTRACED = frozenset({"/", "/health/ready", "/metrics", "/v2/health/live", "/v2/health/ready"})


class _ReplySender:
    """Wraps ``send``: adds the request id (and ``connection: close`` when the body was
    left unread) to the reply, drops the body of HEAD replies, and notes what was sent."""

    __slots__ = ("_body", "_head", "_request_id", "_send", "status")

    def __init__(self, send: Send, request_id: bytes, body: BodyTracker, head: bool) -> None:
        self._send = send
        self._request_id = request_id
        self._body = body
        self._head = head
        self.status: int | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", ()))
            headers.append((b"x-request-id", self._request_id))
            headers.append((b"x-ms-request-id", self._request_id))
            if self._body.unread:
                # answered before the body ended (413, 401, 404…): close rather than keep
                # the connection, which would make the server read and drop the rest of it
                headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        elif message["type"] == "http.response.body" and self._head:
            message = {**message, "body": b""}
        await self._send(message)


async def _send_error(send: Send, err: ErrorReply, style: str) -> None:
    content = encode_json({"error": err.message} if style == "v2" else err.body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


class ScoringApp:
    """ASGI application serving a repository of models (or one scorer, as a repository of
    one). Starts loading them on lifespan startup; unloads them on shutdown.

    ``metrics=False`` (``--no-metrics``, as Triton's ``--allow-metrics=false``): no
    Prometheus registry (``prometheus_client`` is not even imported), no request counted,
    and no ``/metrics`` route: it answers 404 like any unknown path."""

    def __init__(
        self,
        models: Scorer | Repository,
        *,
        auth_keys: tuple[str, ...] = (),
        limits: HttpLimits | None = None,
        metrics: bool = True,
    ) -> None:
        self.repository = models if isinstance(models, Repository) else Repository.of(models)
        self.auth = KeyCheck(auth_keys)
        self.limits = limits or HttpLimits()
        #: set on SIGTERM: readiness answers 503 while the server drains
        self.draining = False
        #: this app's own registry (several apps in one process never collide); None
        #: with metrics off
        # every model's scorer, loading ones included (their metrics say not ready)
        self.metrics = Metrics(self.repository.held) if metrics else None
        #: where answers are counted (the gRPC server's too): with metrics off, nowhere
        self.requests: RequestStats = (
            self.metrics.requests if self.metrics is not None else NoRequestStats()
        )
        score, *azureml = AzureMLRoutes(self.repository, self.auth, self.metrics, self).routes()
        infer, infer_version, *v2 = V2Routes(self.repository, self.auth, self).routes()
        docs = DocsRoutes(self.repository, self.auth).routes()
        # the router tries routes in order: the scoring routes first, probes after
        routes = [score, infer, infer_version, *azureml, *v2, *docs]
        self.router = make_router(routes, lifespan=self._lifespan)

    @property
    def scorer(self) -> Scorer:
        """The scorer of the first model (the only one, when serving one model)."""
        scorer = self.repository.find(self.repository.names[0])
        if scorer is None:
            raise RuntimeError("the model is not loaded")
        return scorer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.router(scope, receive, send)

    @asynccontextmanager
    async def _lifespan(self, _app: object) -> AsyncIterator[None]:
        # load in the background: liveness answers while the models load
        self.repository.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, self.repository.close)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        # one pass over the raw headers (names are lower case in ASGI), which also sizes
        # them for the limits: this runs for every request, so it stays cheaper than
        # building a Headers mapping
        request_id = length = encoding = b""
        headers = scope["headers"]
        count = size = 0
        for name, value in headers:
            count += 1
            size += len(name) + len(value)
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                encoding = value
        method, path = scope["method"], scope["path"]
        body = BodyTracker(receive, length, b"chunked" in encoding.lower())
        refusal: HeadersTooLargeError | None = None
        try:
            # refused before routing: too many or too large headers, an overlong id (431)
            self.limits.check_header_sizes(count, size)
            request_id = checked_request_id(request_id)
        except HeadersTooLargeError as exc:
            request_id, refusal = new_request_id().encode(), exc
        reply = _ReplySender(send, request_id, body, method == "HEAD")
        try:
            if refusal is not None:
                await _send_error(reply.send, error_reply(refusal), "azureml")
            elif tracing.enabled and path not in _UNTRACED:
                with tracing.server_span(f"{method} {path}", _text_headers(scope)) as span:
                    await self._route(scope, body, reply)
                    tracing.finish_server_span(
                        span,
                        reply.status or 500,
                        **{"scorepack.request_id": request_id.decode("latin-1")},
                    )
            else:
                await self._route(scope, body, reply)
        except ClientDisconnect:
            # the client left before its answer: still one count and one access line, with
            # nginx's 499 (a gRPC client's cancel is logged with the same status)
            reply.status = CLIENT_CLOSED
        if self.metrics is None and not access_logging():
            return  # nothing counted, nothing logged: --no-metrics --no-access-log
        status = reply.status or 500
        seconds = time.monotonic() - started
        route = scope.get("scorepack.route", "other")
        scorer = scope.get("scorepack.scorer")
        if scorer is None:
            # an answer before any model was picked (unknown model, bad query, metadata,
            # probes): still counted under its route's protocol, as a package under
            # azmlinfsrv counts every /score answer and gRPC every call; no latency
            protocol, name, version, timed = _route_protocol(route), None, None, None
        else:
            protocol, name, version = scope["scorepack.protocol"], scorer.name, scorer.version
            timed = seconds
        result = scope.get("scorepack.result")
        self.requests.record(
            route, status, timed, model=name or "", version=version or "", protocol=protocol
        )
        log_access(
            request_id.decode("latin-1"),
            method,
            path,
            status,
            seconds,
            protocol=protocol or None,
            model=name,
            version=version,
            batch_size=None if result is None else result.batch_size,
            queue_seconds=None if result is None else result.queue_seconds,
        )

    async def _route(self, scope: Scope, body: BodyTracker, reply: _ReplySender) -> None:
        try:
            await self.router(scope, body.receive, reply.send)
        except ClientDisconnect:
            raise
        except Exception as exc:
            if reply.status is not None:
                raise  # the reply has begun: nothing sensible is left to send
            await _send_error(reply.send, error_reply(exc), scope.get(ERROR_STYLE, "azureml"))


def _route_protocol(route: str) -> str:
    """The protocol a route belongs to: ``azureml`` for ``/score``, ``v2`` for the V2
    routes, none for the rest (``/``, ``/health/ready``, ``/info``, ``/metrics``...)."""
    if route == "/score":
        return "azureml"
    if route == "/v2" or route.startswith("/v2/"):
        return "v2"
    return ""


def _text_headers(scope: Scope) -> dict[str, str]:
    # what the trace-context propagator reads (traceparent, tracestate); tracing on only
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
