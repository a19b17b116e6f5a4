"""Reading request bodies within a limit, and knowing whether one was read to its end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import aclosing
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from ..errors import BodyTooLargeError, RequestTimeoutError

__all__ = ["BodyTracker", "read_body", "unless_disconnected"]

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


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole body, refusing one over ``limit`` bytes as early as it can tell.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a
    chunked body is cut off at the chunk that crosses it. A body that stops arriving for
    ``timeout_s`` is a 408 (uvicorn itself would wait for ever). A client that
    disconnects raises Starlette's ``ClientDisconnect``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit, int(declared))
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:
        while True:
            try:
                chunk = await asyncio.wait_for(anext(stream), timeout_s)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise RequestTimeoutError(timeout_s or 0.0) from None
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(limit)
            chunks.append(chunk)
    return b"".join(chunks)


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first: then cancel it and raise
    Starlette's ``ClientDisconnect``.

    uvicorn does not cancel a request's task when its client goes away; without this, a
    request whose client left would keep its place in the queue and its row in a model
    call. Cancelled, its queued work is dropped before any model call (the scorer counts
    it in ``scorepack_cancelled_requests_total``). Call it once the body has been read: ``receive``
    then answers only ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not watch.done():
            watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # it ended as it was cancelled: nobody to tell
        pass
    raise ClientDisconnect()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
