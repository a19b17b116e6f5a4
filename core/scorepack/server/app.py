"""The embedded scoring server: Starlette's router and request objects on uvicorn.

:class:`ScoringApp` is the ASGI entry point. Around the router it does what every route
shares: a request id on every reply, one log line per request, errors turned into replies
through the one table in ``server/errors.py``, ``connection: close`` when a reply leaves
the body unread, and a lifespan that starts the model loading in the background (liveness
answers while it loads). The routes themselves live in ``routes_*`` modules.
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
from ..scorer import Scorer
from .auth import KeyCheck
from .body import BodyTracker
from .errors import ErrorReply, error_reply
from .routes_azureml import AzureMLRoutes
from .routing import make_router

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


async def _send_error(send: Send, err: ErrorReply) -> None:
    content = encode_json(err.body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


class ScoringApp:
    """ASGI application serving one scorer. Starts the scorer on lifespan startup."""

    def __init__(self, scorer: Scorer, *, auth_keys: tuple[str, ...] = ()) -> None:
        self.scorer = scorer
        self.auth = KeyCheck(auth_keys)
        self.responses: Counter[tuple[str, int]] = Counter()
        azureml = AzureMLRoutes(scorer, self.auth, self.responses)
        self.router = make_router(azureml.routes(), lifespan=self._lifespan)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.router(scope, receive, send)

    @asynccontextmanager
    async def _lifespan(self, _app: object) -> AsyncIterator[None]:
        if not self.scorer.started:
            # load in the background: liveness answers while the model loads
            self.scorer.start(wait=False)
        yield
        await asyncio.get_running_loop().run_in_executor(None, self.scorer.close)

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
        if not request_id:
            request_id = str(uuid.uuid4()).encode()
        method, path = scope["method"], scope["path"]
        body = BodyTracker(receive, length, b"chunked" in encoding.lower())
        reply = _ReplySender(send, request_id, body, method == "HEAD")
        try:
            await self.router(scope, body.receive, reply.send)
        except ClientDisconnect:
            logger.info(
                "%s %s client disconnected id=%s", method, path, request_id.decode("latin-1")
            )
            return
        except Exception as exc:
            if reply.status is not None:
                raise  # the reply has begun: nothing sensible is left to send
            await _send_error(reply.send, error_reply(exc))
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
