"""uvicorn's HTTP protocol (httptools), less one way a connection outlives its client.

uvicorn cancels a connection's keep-alive timer in ``connection_lost`` only when the
connection ended cleanly (checked in 0.54, in both its httptools and h11 protocols). A
client that *resets* its connection after an answer (it closed with bytes unread, or with
``SO_LINGER`` 0, as some load balancers' health checks and timed-out clients do) leaves
the timer armed, and the timer holds the whole connection — protocol, request cycle,
ASGI scope and headers, about 8 KB of heap — for ``timeout_keep_alive`` (30 s here): a
client resetting a few hundred connections a second would hold a hundred megabytes. This
protocol lets the connection go as soon as it is lost, however it was lost.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HttpProtocol"]


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose keep-alive timer never outlives the connection."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        timer = self.timeout_keep_alive_task
        if timer is not None:
            timer.cancel()
            self.timeout_keep_alive_task = None
