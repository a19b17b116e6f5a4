"""The embedded scoring server: Starlette's router and request objects on uvicorn.

:class:`ScoringApp` is the ASGI entry point, serving a :class:`~scorepack.repository.Repository`
(one model or several) through Azure ML's ``/score`` and the V2 REST routes on one port.
Around the router it does what every route shares: a request id on every reply, one log
line per request, errors turned into replies through the one table in ``server/errors.py``,
``connection: close`` when a reply leaves the body unread, and a lifespan that starts the
models loading in the background (liveness answers while they load). The routes
themselves live in ``routes_*`` modules.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from ..codecs import encode_json
from ..errors import HeadersTooLargeError
from ..repository import Repository
from ..scorer import Scorer
from .auth import KeyCheck
from .body import BodyTracker
from .errors import ErrorReply, error_reply
from .limits import HttpLimits, checked_request_id
from .routes_azureml import AzureMLRoutes
from .routes_v2 import V2Routes
from .routing import ERROR_STYLE, make_router

__all__ = ["ScoringApp"]

logger = logging.getLogger("scorepack.server")


class _ReplySender:
    """Wraps ``send``: adds the request id (and ``connection: close`` when the body was
    left unread) to the reply, drops the body of HEAD replies, and notes what was sent."""

    __slots__ = ("_body", "_head", "_request_id", "_send", "batch_size", "status")

    def __init__(self, send: Send, request_id: bytes, body: BodyTracker, head: bool) -> None:
        self._send = send
        self._request_id = request_id
        self._body = body
        self._head = head
        self.status: int | None = None
        self.batch_size: str = "-"

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", ()))
            for name, value in headers:
                if name == b"x-scorepack-batch-size":
                    self.batch_size = value.decode("latin-1")
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
    one). Starts loading them on lifespan startup; unloads them on shutdown."""

    def __init__(
        self,
        models: Scorer | Repository,
        *,
        auth_keys: tuple[str, ...] = (),
        limits: HttpLimits | None = None,
    ) -> None:
        self.repository = models if isinstance(models, Repository) else Repository.of(models)
        self.auth = KeyCheck(auth_keys)
        self.limits = limits or HttpLimits()
        self.responses: Counter[tuple[str, int]] = Counter()
        #: set on SIGTERM: readiness answers 503 while the server drains
        self.draining = False
        score, *azureml = AzureMLRoutes(self.repository, self.auth, self.responses, self).routes()
        infer, infer_version, *v2 = V2Routes(self.repository, self.auth).routes()
        # the router tries routes in order: the scoring routes first, probes after
        routes = [score, infer, infer_version, *azureml, *v2]
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
        started = time.perf_counter()
        # one pass over the raw headers (names are lower case in ASGI): this runs for
        # every request, so it stays cheaper than building a Headers mapping
        request_id = length = encoding = b""
        for name, value in scope["headers"]:
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
            self.limits.check_headers(scope["headers"])
            request_id = checked_request_id(request_id)
        except HeadersTooLargeError as exc:
            request_id, refusal = str(uuid.uuid4()).encode(), exc
        reply = _ReplySender(send, request_id, body, method == "HEAD")
        try:
            if refusal is not None:
                raise refusal
            await self.router(scope, body.receive, reply.send)
        except ClientDisconnect:
            logger.info(
                "%s %s client disconnected id=%s", method, path, request_id.decode("latin-1")
            )
            return
        except Exception as exc:
            if reply.status is not None:
                raise  # the reply has begun: nothing sensible is left to send
            await _send_error(reply.send, error_reply(exc), scope.get(ERROR_STYLE, "azureml"))
        status = reply.status or 500
        self.responses[(scope.get("scorepack.route", "other"), status)] += 1
        logger.info(
            "%s %s %d %.1fms batch=%s id=%s",
            method,
            path,
            status,
            (time.perf_counter() - started) * 1000,
            reply.batch_size,
            request_id.decode("latin-1"),
        )
