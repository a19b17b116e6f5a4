"""The gRPC server's lifecycle: grpcio's server with a pool of threads, one per call.

It runs beside the HTTP server in the same process, over the same Repository (so the same
Scorers and batchers), and is started and stopped with it. Each call blocks one pool
thread until its answer is ready (:mod:`.service` says why that is cheaper than
``grpc.aio`` here). Calls beyond the pool's size wait for a thread before they are
admitted, so the pool is larger than the requests a few models can hold at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from ...proto.messages import SERVICE
from ...telemetry.stats import RequestStats
from .service import InferenceService

__all__ = ["GrpcServer"]

logger = logging.getLogger("scorepack.server.grpc")

#: the most calls handled at once: threads are started only as calls need them, and this
#: is enough for every request three models with the default queue (256 requests) and
#: batch size (32 rows) can hold at once; a request beyond a model's queue is refused at
#: once and frees its thread
DEFAULT_THREADS = 1024


class GrpcServer:
    """``inference.GRPCInferenceService`` on ``host:port`` (port 0 picks a free one).

    ``max_message_bytes`` bounds a request message (larger ones get RESOURCE_EXHAUSTED
    from gRPC itself before they are read); use the largest ``max_body_bytes`` of the
    models served, each model then checks its own. ``threads`` bounds the calls handled
    at once (default :data:`DEFAULT_THREADS`); more wait for a thread before they are
    admitted. Calls are counted into ``requests`` (the HTTP app's metrics, when it serves
    beside one). ``draining`` (the HTTP server's state after SIGTERM) turns ServerReady
    false while calls are still served.
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
        threads: int | None = None,
        draining: Callable[[], bool] | None = None,
    ) -> None:
        self.service = InferenceService(
            repository, auth_keys=auth_keys, requests=requests, draining=draining
        )
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.threads = threads or DEFAULT_THREADS
        self._pool: ThreadPoolExecutor | None = None
        self._server: grpc.Server | None = None
        self._stopped: threading.Event | None = None
        # reentrant: begin_stop may run in a signal handler while stop() holds it
        self._lock = threading.RLock()

    @property
    def address(self) -> str:
        """``host:port`` as a gRPC client dials it (the real port once started)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> GrpcServer:
        """Bind and start serving; raise here when the port cannot be bound."""
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="scorepack-grpc")
        server = grpc.server(
            self._pool,
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                # without this two servers can bind one port and split its calls silently
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_registered_method_handlers(SERVICE, self.service.method_handlers())
        try:
            port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise OSError(f"could not bind the gRPC port {self.address}: {exc}") from None
        if port == 0:
            raise OSError(f"could not bind the gRPC port {self.address} (in use?)")
        self.port = port
        server.start()
        self._server = server
        logger.info("gRPC (V2 inference protocol) on %s", self.address)
        return self

    def begin_stop(self, grace: float = 5.0) -> None:
        """Stop taking calls and give those in flight ``grace`` seconds; do not wait."""
        with self._lock:
            if self._server is not None and self._stopped is None:
                self._stopped = self._server.stop(grace)

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls, give those in flight ``grace`` seconds, then stop."""
        self.begin_stop(grace)
        if self._stopped is not None:
            self._stopped.wait(grace + 10.0)
        if self._pool is not None:
            # the calls are over (answered or cancelled): let the idle threads go
            self._pool.shutdown(wait=False)

    def __enter__(self) -> GrpcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
