"""uvicorn's HTTP protocol (httptools), with two things it does its own way put right.

**A connection that outlives its client.** uvicorn cancels a connection's keep-alive timer
in ``connection_lost`` only when the connection ended cleanly (checked in 0.54, in both
its httptools and h11 protocols). A client that *resets* its connection after an answer
(it closed with bytes unread, or with ``SO_LINGER`` 0, as some load balancers' health
checks and timed-out clients do) leaves the timer armed, and the timer holds the whole
connection — protocol, request cycle, ASGI scope and headers, about 8 KB of heap — for
``timeout_keep_alive`` (30 s here): a client resetting a few hundred connections a second
would hold a hundred megabytes. This protocol lets the connection go as soon as it is
lost, however it was lost.

**A request it cannot parse.** A request whose framing httptools rejects (a bad request
line, a malformed header, a bad chunk size) never reaches the app: uvicorn answers it
itself, with a plain-text ``400 Invalid HTTP request received.``, and closes the
connection. Every other error a client meets is ``{"error": {"code", "message"}}`` from
the one error table, and so is this one here: the same 400 and close, with a JSON body
that says what the parser found wrong (``Invalid character in chunk size``), as the
package's worker answers under azmlinfsrv.
"""

from __future__ import annotations

import sys

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..codecs import encode_json
from ..errors import BadRequestError
from .errors import error_reply

__all__ = ["HttpProtocol"]


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose keep-alive timer never outlives the connection
    and whose 400 for an unparseable request is scorepack's JSON error.

    Passed to uvicorn as its ``http=`` protocol class; everything else is uvicorn's.
    """

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        timer = self.timeout_keep_alive_task
        if timer is not None:
            timer.cancel()
            self.timeout_keep_alive_task = None

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this from its ``except httptools.HttpParserError`` clause: the
        # parser's own reason is the exception being handled
        found = sys.exc_info()[1]
        reason = str(found) if found is not None and str(found) else msg.rstrip(".")
        reply = error_reply(BadRequestError(f"The request is not valid HTTP/1.1: {reason}."))
        content = encode_json(reply.body)
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(content)).encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
        ]
        self.transport.write(b"".join(head) + content)
        self.transport.close()
