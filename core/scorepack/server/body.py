"""Reading request bodies within a limit, and knowing whether one was read to its end."""

from __future__ import annotations

from contextlib import aclosing

from starlette.requests import Request
from starlette.types import Message, Receive

from ..errors import BodyTooLargeError

__all__ = ["BodyTracker", "read_body"]


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


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing one over ``limit`` bytes as early as it can tell.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a
    chunked body is cut off at the chunk that crosses it. A client that disconnects
    raises Starlette's ``ClientDisconnect``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit, int(declared))
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(limit)
            chunks.append(chunk)
    return b"".join(chunks)
