"""The gRPC server's lifecycle: a ``grpc.aio`` server on its own thread and event loop.

It runs beside the HTTP server in the same process, over the same Repository (so the same
Scorers and batchers), and is started and stopped with it. Its own thread and loop keep
it independent of uvicorn's (uvloop) loop, which grpc.aio runs slower on; the two meet
only at the batcher, which is thread-safe and hands results back as
``concurrent.futures`` futures.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import grpc

from ...telemetry.stats import RequestStats
from .service import InferenceService

__all__ = ["GrpcServer"]

logger = logging.getLogger("scorepack.server.grpc")


class GrpcServer:
    """``inference.GRPCInferenceService`` on ``host:port`` (port 0 picks a free one).

    ``max_message_bytes`` bounds a request message (larger ones get RESOURCE_EXHAUSTED
    from gRPC itself before they are read); use the largest ``max_body_bytes`` of the
    models served, each model then checks its own. Calls are counted into ``requests``
    (the HTTP app's metrics, when it serves beside one).
    """

    def __init__(
        self,
        repository: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = 16 * 1024 * 1024,
        auth_keys: tuple[str, ...] = (),
        requests: RequestStats | None = None,
    ) -> None:
        self.service = InferenceService(repository, auth_keys=auth_keys, requests=requests)
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._grace = 5.0
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        """``host:port`` as a gRPC client dials it (the real port once started)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> GrpcServer:
        """Bind and start serving; raise here when the port cannot be bound."""
        self._thread = threading.Thread(target=self._main, name="scorepack-grpc", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the gRPC server did not start")
        if self._error is not None:
            raise self._error
        logger.info("gRPC (V2 inference protocol) on %s", self.address)
        return self

    def begin_stop(self, grace: float = 5.0) -> None:
        """Stop taking calls and give those in flight ``grace`` seconds; do not wait."""
        self._grace = grace
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop already ended
                pass

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls, give those in flight ``grace`` seconds, then stop."""
        self.begin_stop(grace)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(grace + 10.0)

    def __enter__(self) -> GrpcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        # a plain asyncio loop, whatever the policy: uvicorn installs uvloop's process-wide,
        # and grpc.aio served about half the calls per second on uvloop when measured
        loop = asyncio.SelectorEventLoop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(), or logged once serving
            if not self._started.is_set():
                self._error = exc
                self._started.set()
            else:
                logger.error("the gRPC server failed: %s", exc, exc_info=exc)
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                # without this two servers can bind one port and split its calls silently
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self.service.handler(),))
        try:
            port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise OSError(f"could not bind the gRPC port {self.address}: {exc}") from None
        if port == 0:
            raise OSError(f"could not bind the gRPC port {self.address} (in use?)")
        self.port = port
        await server.start()
        self._started.set()
        await self._stop.wait()
        await server.stop(self._grace)
