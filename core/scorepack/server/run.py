"""Running the embedded server: in the foreground (``scorepack serve``) or in a thread."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from ..repository import UNAVAILABLE, Repository
from ..scorer import Scorer
from ..telemetry.logs import set_access_log
from .app import ScoringApp
from .grpc_v2 import GrpcOptions, start_grpc
from .limits import HttpLimits

if TYPE_CHECKING:
    from .grpc_v2.server import GrpcServer

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "BackgroundServer", "bind_socket", "serve"]

logger = logging.getLogger("scorepack.server")

DEFAULT_HOST = "127.0.0.1"
#: azmlinfsrv's default port, so one client configuration works against both
DEFAULT_PORT = 5001


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound, listening socket (port 0 picks a free one) for uvicorn to serve.

    It listens from here on, before uvicorn starts: a client that connects as soon as the
    URL is announced waits in the backlog instead of being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def with_cors(app: Any, origins: tuple[str, ...]) -> Any:
    """``app`` behind Starlette's CORS middleware for ``origins`` (none: ``app`` itself).

    Browsers on those origins may call the scoring and info routes with the headers
    scorepack uses (a key, a content type, a request id) and read its response headers.
    """
    if not origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "HEAD"],
        allow_headers=["authorization", "content-type", "x-request-id", "traceparent"],
        expose_headers=["x-request-id", "x-ms-request-id", "x-scorepack-batch-size"],
        max_age=600,
    )


def _uvicorn_server(app: ScoringApp, graceful_timeout: float, asgi: Any = None) -> object:
    """uvicorn serving ``asgi`` (``app`` itself, or ``app`` wrapped in middleware)."""
    import uvicorn

    from .protocol import HttpProtocol

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, except that with a drain period (``SCOREPACK_DRAIN_SECONDS``)
        the first SIGTERM turns readiness to 503 while requests are still served, so that
        a load balancer stops sending new ones before the listener closes; a second
        signal, or SIGINT, stops at once."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            drain = app.limits.drain_s
            if sig == signal.SIGTERM and drain > 0 and not app.draining:
                app.draining = True
                logger.info("SIGTERM: not ready for %g s so load balancers notice", drain)
                timer = threading.Timer(drain, super().handle_exit, (sig, frame))
                timer.daemon = True
                timer.start()
                return
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app if asgi is None else asgi,
        lifespan="on",
        log_config=None,
        access_log=False,  # the app logs one line per request itself
        # httptools, as uvicorn picks it; a reset connection is let go at once, and a
        # request it cannot parse gets a JSON 400 (see protocol.py)
        http=HttpProtocol,
        timeout_graceful_shutdown=int(graceful_timeout),
        timeout_keep_alive=30,
    )
    return DrainingServer(config)


def serve(
    models: Scorer | Repository,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    auth_keys: tuple[str, ...] = (),
    graceful_timeout: float = 30.0,
    cors_origins: tuple[str, ...] = (),
    on_listening: Callable[[str], None] | None = None,
    grpc: GrpcOptions | None = None,
    on_grpc_listening: Callable[[str], None] | None = None,
    limits: HttpLimits | None = None,
    metrics: bool = True,
    access_log: bool = True,
    exit_on_error: bool | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish before the models unload.

    A model that fails to load at start stops the server with ``exit_on_error`` (Triton's
    ``--exit-on-error``, on by default there), and the error is raised from here; without
    it the others go on serving and the failed one is reported not ready (Triton's
    ``--exit-on-error=false``). Left at None: stop when the server has one model (nothing
    would be left to serve), go on with several.
    ``grpc`` also serves V2 gRPC, over the same models, until the HTTP server stops.
    ``limits`` default to :meth:`HttpLimits.from_env` (the ``SCOREPACK_*`` variables).
    ``metrics=False``: nothing counted and no ``/metrics`` (:class:`ScoringApp`);
    ``access_log=False``: no access lines, in this whole process (the server owns it).
    """
    set_access_log(access_log)
    app = ScoringApp(
        models, auth_keys=auth_keys, limits=limits or HttpLimits.from_env(), metrics=metrics
    )
    repository = app.repository
    sock = bind_socket(host, port)
    server = _uvicorn_server(app, graceful_timeout, with_cors(app, cors_origins))
    single = len(repository.models()) == 1
    stop = single if exit_on_error is None else exit_on_error
    failures: list[BaseException] = []
    if stop:
        threading.Thread(
            target=_stop_on_load_failure,
            args=(repository, server, failures),
            name="scorepack-load-watch",
            daemon=True,
        ).start()
    if on_listening is not None:
        on_listening(url_of(sock))
    grpc_server = start_grpc(
        repository,
        host,
        grpc,
        auth_keys,
        requests=app.requests,
        draining=lambda: app.draining,
    )
    if grpc_server is not None and on_grpc_listening is not None:
        on_grpc_listening(grpc_server.address)
    # on a signal gRPC stops taking calls at once, as uvicorn does; those in flight finish
    on_signal = None if grpc_server is None else partial(grpc_server.begin_stop, graceful_timeout)
    try:
        with _exit_normally_after_signals(server, on_signal):
            server.run(sockets=[sock])  # type: ignore[attr-defined]
    finally:
        if grpc_server is not None:
            grpc_server.stop(graceful_timeout)
    if not stop:
        return
    if single:
        scorer = repository.find(repository.names[0])
        if scorer is not None and scorer.batcher.failure is not None:
            raise scorer.batcher.failure
    if failures:
        why = _failed(repository) or str(failures[0])
        if single:
            raise ModelLoadError(f"Stopped: {why}")
        raise ModelLoadError(
            "Stopped, as --exit-on-error asks (--no-exit-on-error serves the other models "
            f"meanwhile): {why}"
        )


def _failed(repository: Repository) -> str:
    """The models that failed to load (or died), each with why."""
    return "; ".join(
        f"model {s.name!r}" + (f" version {s.version!r}" if s.version else "") + f" {s.reason}"
        for s in repository.models()
        if s.state == UNAVAILABLE and s.reason not in ("not loaded", "unloaded")
    )


@contextmanager
def _exit_normally_after_signals(
    server: object, on_signal: Callable[[], None] | None = None
) -> Iterator[None]:
    """Let a graceful shutdown end the process with status 0.

    uvicorn stops on SIGTERM/SIGINT and then raises the same signal again, to the
    handler that was installed before it started, so that the process dies of it (exit
    status -15). The requests in flight have finished and the model is unloaded by then,
    so this handler only asks the server to stop (which it already has, or will as soon
    as it starts, for a signal that came first) and ``serve`` returns: exit status 0.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: FrameType | None) -> None:
        server.should_exit = True  # type: ignore[attr-defined]
        if on_signal is not None:
            on_signal()

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_on_load_failure(
    repository: Repository, server: object, failures: list[BaseException]
) -> None:
    # a foreground server whose one model cannot load would answer 503 forever (with
    # several: --exit-on-error asked for it): stop it, keeping the error for serve()
    while not server.started:  # type: ignore[attr-defined]
        # the lifespan starts the loading; until then there is nothing to wait on
        if server.should_exit:  # type: ignore[attr-defined]
            return
        time.sleep(0.01)
    try:
        repository.wait_ready()
    except BaseException as exc:
        failures.append(exc)
        server.should_exit = True  # type: ignore[attr-defined]


class BackgroundServer:
    """The embedded server on a thread, for tests, benchmarks and the demo.

    >>> with BackgroundServer(scorer) as server:   # doctest: +SKIP
    ...     httpx.post(server.url + "/score", content=jpeg)
    """

    def __init__(
        self,
        models: Scorer | Repository,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        auth_keys: tuple[str, ...] = (),
        graceful_timeout: float = 10.0,
        cors_origins: tuple[str, ...] = (),
        grpc: GrpcOptions | None = None,
        limits: HttpLimits | None = None,
        metrics: bool = True,
    ) -> None:
        self.app = ScoringApp(models, auth_keys=auth_keys, limits=limits, metrics=metrics)
        self._sock = bind_socket(host, port)
        self.url = url_of(self._sock)
        asgi = with_cors(self.app, cors_origins)
        self._server = _uvicorn_server(self.app, graceful_timeout, asgi)
        self._thread: threading.Thread | None = None
        self._grpc_start = (host, grpc, auth_keys)
        self._grpc: GrpcServer | None = None

    @property
    def grpc_address(self) -> str | None:
        """``host:port`` of the V2 gRPC server, once started with ``grpc`` options."""
        return self._grpc.address if self._grpc is not None else None

    def start(self, *, wait_ready: bool = True, timeout: float = 120.0) -> BackgroundServer:
        """Start serving; by default wait until the model is ready too."""
        app = self.app
        self._grpc = start_grpc(
            app.repository,
            *self._grpc_start,
            requests=app.requests,
            draining=lambda: app.draining,
        )
        self._thread = threading.Thread(
            target=self._server.run,  # type: ignore[attr-defined]
            kwargs={"sockets": [self._sock]},
            name="scorepack-server",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:  # type: ignore[attr-defined]
            if not self._thread.is_alive():
                raise RuntimeError("the server thread exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start")
            time.sleep(0.01)
        if wait_ready:
            try:
                self.app.repository.wait_ready(max(0.0, deadline - time.monotonic()))
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, finish in-flight requests, unload the models."""
        if self._grpc is not None:
            self._grpc.begin_stop(timeout)
        self._server.should_exit = True  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout)
        if self._grpc is not None:
            self._grpc.stop(timeout)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
