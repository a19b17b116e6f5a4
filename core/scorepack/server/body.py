"""The one body discipline every route that reads a request body follows.

:class:`BodyReader` is shared by ``/score`` and the V2 REST routes (inference and the
repository extension), so a body is refused or read the same way whichever route it is
sent to:

* ``Content-Encoding`` other than ``identity`` is 415 before a byte is read (a compressed
  body could expand past the body limit once decoded; scorepack reads bodies as sent);
* a declared ``Content-Length`` over the route's limit is 413 before a byte is read, and a
  chunked body is cut off at the chunk that crosses it;
* a body that stops arriving for the server's read timeout (``SCOREPACK_READ_TIMEOUT_S``)
  is 408 — uvicorn itself would wait for ever;
* once the body is in, the scoring work is awaited *unless the client disconnects*: then
  it is cancelled, and its queued work is dropped before any model call (counted in
  ``scorepack_cancelled_requests_total``).

:class:`BodyTracker` wraps ``receive`` for the app, so it knows whether a reply leaves the
body unread (and must close the connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from ..codecs import check_content_encoding
from ..errors import BodyTooLargeError, RequestTimeoutError
from .routing import ServerState

__all__ = ["BodyReader", "BodyTracker", "read_body", "unless_disconnected"]

T = TypeVar("T")


class BodyTracker:
    """Wraps ``receive`` to tell whether the request body was read to its end."""

    def __init__(self, receive: Receive, content_length: bytes, chunked: bool) -> None:
        self._receive = receive
        length = content_length.strip()
        self._ended = not chunked and (not length.isdigit() or int(length) == 0)

    @property
    def unread(self) -> bool:
        return not self._ended

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._ended = True
        return message


class BodyReader:
    """The body discipline of the routes of one server (see the module docstring).

    ``server`` gives the read timeout (its ``limits.read_timeout_s``, read at each request);
    without one (routes used on their own) a body may take as long as it likes.
    """

    def __init__(self, server: ServerState | None = None) -> None:
        self.server = server

    @property
    def read_timeout_s(self) -> float | None:
        return self.server.limits.read_timeout_s if self.server is not None else None

    async def read(self, request: Request, limit: int) -> bytes:
        """The whole body (at most ``limit`` bytes), or the error that refuses it."""
        return await read_body(request, limit, self.read_timeout_s)

    async def unless_disconnected(self, request: Request, work: Awaitable[T]) -> T:
        """Await ``work`` (after :meth:`read`) unless the client leaves first; then it is
        cancelled and Starlette's ``ClientDisconnect`` raised (nobody is left to answer)."""
        return await unless_disconnected(request.receive, work)


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole body, refusing a compressed one (415) and one over ``limit`` bytes (413)
    as early as it can tell.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a
    chunked body is cut off at the chunk that crosses it. A body that stops arriving for
    ``timeout_s`` is a 408 (uvicorn itself would wait for ever). A client that
    disconnects raises Starlette's ``ClientDisconnect``.
    """
    check_content_encoding(request.headers.get("content-encoding"))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit, int(declared))
    # straight from ``receive`` rather than through Request.stream() and a wait_for per
    # chunk: wait_for makes a task for each message, and this runs for every request.
    # One timer, pushed back as each chunk arrives, bounds the wait for the next one.
    receive = request.receive
    if timeout_s is None:
        return await _read(receive, limit, None)
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            return await _read(receive, limit, (deadline, timeout_s))
    except TimeoutError:
        raise RequestTimeoutError(timeout_s) from None


async def _read(receive: Receive, limit: int, idle: tuple[asyncio.Timeout, float] | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()  # http.disconnect: what Request.stream() raises
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if idle is not None:
            deadline, seconds = idle
            deadline.reschedule(asyncio.get_running_loop().time() + seconds)


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first: then cancel it and raise
    Starlette's ``ClientDisconnect``.

    uvicorn does not cancel a request's task when its client goes away; without this, a
    request whose client left would keep its place in the queue and its row in a model
    call. Cancelled, its queued work is dropped before any model call (the scorer counts
    it in ``scorepack_cancelled_requests_total``). Call it once the body has been read: ``receive``
    then answers only ``http.disconnect``.
    """
    # the work runs in this task; a watcher task cancels it if the client leaves. (The
    # work in a task of its own and asyncio.wait over both costs a second task, a future
    # and more switches, for every request.)
    current = asyncio.current_task()
    assert current is not None, "unless_disconnected runs in a task"
    state = _Watch(current)
    watcher = asyncio.ensure_future(_watch(receive, state))
    try:
        return await work
    except BaseException:
        if not state.gone:
            raise  # the work's own error, or a cancel from elsewhere (shutdown)
        # the watcher's cancel, answered here; whatever the work ended with, nobody is
        # left to tell
        current.uncancel()
        raise ClientDisconnect() from None
    finally:
        state.done = True
        watcher.cancel()


class _Watch:
    __slots__ = ("done", "gone", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.done = False
        self.gone = False


async def _watch(receive: Receive, state: _Watch) -> None:
    try:
        await _disconnected(receive)
    except Exception:  # a receive that fails has lost its client too
        pass
    if not state.done:
        state.gone = True
        state.task.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
