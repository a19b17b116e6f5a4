"""The embedded server's hand-written ASGI app before it moved onto Starlette (commit 9f766e5),
kept only as the baseline of benchmarks/micro/router_overhead.py. Not used by scorepack.

Routes match Microsoft's azureml-inference-server-http, so one client works against both:

    POST /score          score an image or JSON tensors       (auth when keys are set)
    GET  /score          405, as azmlinfsrv answers
    GET  /               200 liveness, always
    GET  /health/ready   200 once the model is loaded and warmed up, else 503
    GET  /info           what is served: backend, device, signature, preprocessing (auth)
    GET  /metrics        Prometheus counters

Probes never wait on the model or the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from scorepack.codecs import encode_json
from scorepack.errors import (
    BodyTooLargeError,
    MethodNotAllowedError,
    NotFoundError,
    NotReadyError,
)
from scorepack.scorer import Scorer
from scorepack.server.auth import KeyCheck
from scorepack.server.errors import error_reply

__all__ = ["ScoringApp"]

logger = logging.getLogger("scorepack.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ROUTES = {
    "/": ("GET", "HEAD"),
    "/score": ("POST",),
    "/health/ready": ("GET", "HEAD"),
    "/info": ("GET",),
    "/metrics": ("GET",),
}


class _ClientGone(Exception):
    pass


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] | None = None
    batch_size: int | None = None


class _BodyTracker:
    """Wraps ``receive`` to tell whether the request body was read to its end."""

    def __init__(self, receive: Receive, headers: dict[str, str]) -> None:
        self._receive = receive
        length = headers.get("content-length", "0").strip()
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._ended = not chunked and (not length.isdigit() or int(length) == 0)

    @property
    def unread(self) -> bool:
        return not self._ended

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._ended = True
        return message


class ScoringApp:
    """ASGI application serving one scorer. Starts the scorer on lifespan startup."""

    def __init__(self, scorer: Scorer, *, auth_keys: tuple[str, ...] = ()) -> None:
        self.scorer = scorer
        self.auth = KeyCheck(auth_keys)
        self.responses: Counter[tuple[str, int]] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    # --- lifespan --------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if not self.scorer.started:
                        # load in the background: liveness answers while the model loads
                        self.scorer.start(wait=False)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.scorer.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- http ------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or str(uuid.uuid4())
        method, path = scope["method"], scope["path"]
        route = path if path in _ROUTES else "other"
        body = _BodyTracker(receive, headers)
        try:
            reply = await self._route(scope, body.receive, method, path, headers)
        except _ClientGone:
            logger.info("%s %s client disconnected id=%s", method, path, request_id)
            return
        except Exception as exc:
            err = error_reply(exc)
            reply = _Reply(err.status, encode_json(err.body), headers=err.headers)
        if body.unread:
            # answered before the body ended (413, 401, 404…): close rather than keep
            # the connection, which would make the server read and drop the rest of it
            reply.headers = {**(reply.headers or {}), "connection": "close"}
        await self._send(send, reply, request_id, method == "HEAD")
        self.responses[(route, reply.status)] += 1
        logger.info(
            "%s %s %d %.1fms batch=%s id=%s",
            method,
            path,
            reply.status,
            (time.perf_counter() - started) * 1000,
            reply.batch_size if reply.batch_size is not None else "-",
            request_id,
        )

    async def _route(
        self, scope: Scope, receive: Receive, method: str, path: str, headers: dict[str, str]
    ) -> _Reply:
        allowed = _ROUTES.get(path)
        if allowed is None:
            raise NotFoundError(f"No route {path}. Score with POST /score.")
        if method not in allowed:
            raise MethodNotAllowedError(method, path, allowed)
        if path == "/score":
            self.auth.check(headers.get("authorization"))
            return await self._score(scope, receive, headers)
        if path == "/":
            return _Reply(200, b"Healthy", "text/plain; charset=utf-8")
        if path == "/health/ready":
            return self._ready()
        if path == "/info":
            self.auth.check(headers.get("authorization"))
            return _Reply(200, encode_json(self.scorer.describe()))
        return _Reply(
            200,
            # not benchmarked; kept apart from the live metrics module, which changes
            b"".join(f"{r} {s} {n}\n".encode() for (r, s), n in self.responses.items()),
            "text/plain; version=0.0.4; charset=utf-8",
        )

    def _ready(self) -> _Reply:
        if self.scorer.ready:
            return _Reply(200, encode_json({"status": "ready", "model": self.scorer.name}))
        failure = self.scorer.batcher.failure
        if failure is not None:
            raise NotReadyError(f"The model failed to load: {failure}")
        raise NotReadyError(
            "The model is loading." if self.scorer.started else "The model is not loaded."
        )

    async def _score(self, scope: Scope, receive: Receive, headers: dict[str, str]) -> _Reply:
        body = await self._read_body(receive, headers)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        result = await self.scorer.handle_async(body, headers.get("content-type"), query)
        return _Reply(
            200,
            encode_json(result.body),
            headers={"x-scorepack-batch-size": str(result.batch_size)},
            batch_size=result.batch_size,
        )

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self.scorer.config.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            # refuse before reading a byte of it
            raise BodyTooLargeError(limit, int(declared))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _send(self, send: Send, reply: _Reply, request_id: str, head: bool) -> None:
        raw_headers = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", str(len(reply.body)).encode()),
            (b"x-request-id", request_id.encode("latin-1")),
            (b"x-ms-request-id", request_id.encode("latin-1")),
        ]
        for name, value in (reply.headers or {}).items():
            raw_headers.append((name.lower().encode(), value.encode("latin-1")))
        await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": b"" if head else reply.body})
