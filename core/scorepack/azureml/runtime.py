"""The runtime a generated ``score.py`` calls: ``init()`` loads the package, ``run()`` scores.

azmlinfsrv calls ``init()`` once in its worker process and ``run(request)`` from each of its
gunicorn threads. Every request goes through the package's one
:class:`~scorepack.scorer.Scorer` (thread-safe, batching across threads), and every error
is answered through the server's one table (:func:`~scorepack.server.errors.error_reply`),
so a client sees the same status, code, message and headers as from ``scorepack serve``.

azmlinfsrv's own scoring timeout is a SIGALRM, which works only on the main thread: with
gunicorn threads it never fires. The Scorer's timeout (``timeout_ms``) bounds every
request here instead: a request the model does not finish in time is answered 504.

Observability, set up by ``init()`` from the environment (azmlinfsrv lets a package add
no routes to its Flask app, so metrics get a port of their own):

* ``SCOREPACK_METRICS_PORT``: serve Prometheus metrics at ``http://HOST:PORT/metrics``
  from a thread of the worker (``prometheus_client.start_http_server``), bound to
  ``SCOREPACK_METRICS_ADDR`` (default 0.0.0.0). Unset, empty or 0: no metrics server.
  One worker (``WORKER_COUNT=1``, as packages run) serves them all; with more, each worker
  counts only its own requests and only the first to bind the port serves (the others log
  a warning), so scrape per-worker numbers only with one worker.
* ``SCOREPACK_LOG_FORMAT`` (``text`` or ``json``) and ``SCOREPACK_LOG_LEVEL``: scorepack's
  log lines, one access line per request among them; ``SCOREPACK_ACCESS_LOG=false``:
  no access lines.
* ``SCOREPACK_OTLP_ENDPOINT``: export traces (OTLP/HTTP URL, or ``console``).

These, the scoring and decode variables, ``SCOREPACK_DEVICE`` and
``SCOREPACK_MODEL_DIR`` are read once, by the settings object
(:class:`~scorepack.settings.PackageSettings`), so a bad value is one start-up error
naming every bad variable.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .. import cancellation
from ..codecs import check_content_encoding, encode_json
from ..errors import (
    BadRequestError,
    BodyTooLargeError,
    MethodNotAllowedError,
    NotReadyError,
    PackageError,
    RequestTimeoutError,
    ScorepackError,
)
from ..generator.spec import PackageSpec
from ..loading import open_package
from ..manifest import MODELS_DIR, load_manifest
from ..postprocess import query_values
from ..repository import ModelSource, Repository, score_target
from ..scorer import Scorer, ScoreResult
from ..server.errors import error_reply
from ..telemetry import tracing
from ..telemetry.logs import configure_azureml_logging, log_access
from ..telemetry.metrics import Metrics
from .layout import locate_model_dir, locate_models
from .settings import ReadLimits, apply_settings, package_settings

__all__ = ["AzureMLRuntime", "current", "init", "run", "use"]

logger = logging.getLogger("scorepack.azureml")

_CHUNK = 1 << 16


class Request(Protocol):
    """What ``run`` uses of the Flask request azmlinfsrv passes with ``@rawhttp``."""

    method: str
    content_length: int | None
    stream: Any
    headers: Mapping[str, str]
    args: Any


class AzureMLRuntime:
    """Answers azmlinfsrv's requests with one scorer, or a repository of several (each
    already started), counting them in its own metrics registry.

    With several models a request names its model as on the embedded server:
    ``/score?model=NAME`` (:func:`~scorepack.repository.score_target`).
    """

    def __init__(
        self,
        scorer: Scorer | Repository,
        read_timeout_s: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        served: tuple[Scorer, ...]
        if isinstance(scorer, Repository):
            self.repository = scorer
            self.repository.start()  # takes the given scorers as they are (started)
            served = tuple(self.repository.held())
        else:
            self.repository = Repository.of(scorer)
            self.repository.start()
            served = (scorer,)
        #: the scorer of a one-model package (None for a package of several)
        self.scorer: Scorer | None = served[0] if len(served) == 1 else None
        #: seconds a body may stall before the request is answered 408
        self.read_timeout_s = (
            ReadLimits().read_timeout_s if read_timeout_s is None else read_timeout_s
        )
        #: the largest body any model takes (the worker reads a body before its model is
        #: known; each model's own limit is checked again when it is read)
        self.max_body_bytes = max(s.config.max_body_bytes for s in served)
        self.metrics = metrics or Metrics(lambda: served)
        #: the metrics HTTP server, when one was started (see :func:`init`)
        self.metrics_server: Any = None

    def run(self, request: Request) -> Any:
        """Score one request; return an ``AMLResponse`` (a Flask response)."""
        started = time.monotonic()
        if tracing.enabled:
            with tracing.server_span(
                f"{request.method} /score", request.headers, {"http.request.method": request.method}
            ) as span:
                response, status, result, scorer = self._run(request)
                tracing.finish_server_span(
                    span,
                    status,
                    **{
                        "scorepack.model": scorer.name if scorer else None,
                        "scorepack.batch_size": result.batch_size if result else None,
                    },
                )
        else:
            response, status, result, scorer = self._run(request)
        seconds = time.monotonic() - started
        self.metrics.requests.record(
            "/score",
            status,
            seconds,
            model=scorer.name if scorer else "",
            version=(scorer.version or "") if scorer else "",
            protocol="azureml",
        )
        log_access(
            _request_id(request),
            request.method,
            "/score",
            status,
            seconds,
            protocol="azureml",
            model=scorer.name if scorer else None,
            version=scorer.version if scorer else None,
            batch_size=result.batch_size if result else None,
            queue_seconds=result.queue_seconds if result else None,
        )
        return response

    def _run(self, request: Request) -> tuple[Any, int, ScoreResult | None, Scorer | None]:
        # a one-model package counts every answer against its model, as it always has
        scorer = self.scorer
        try:
            if request.method != "POST":
                raise MethodNotAllowedError(request.method, "/score", ["POST"])
            query = query_values(request.args.items(multi=True))
            scorer = score_target(self.repository, query)
            check_content_encoding(request.headers.get("Content-Encoding"))
            body = self._read_body(request, scorer.config.max_body_bytes)
            # scorepack's worker cancels it when the client closes its connection
            # meanwhile: queued work is then dropped before its model call (499)
            result = scorer.handle(
                body,
                request.headers.get("Content-Type"),
                query,
                cancellation=cancellation.current(),
            )
        except Exception as exc:
            reply = error_reply(exc)
            return (
                _response(reply.status, encode_json(reply.body), reply.headers),
                reply.status,
                None,
                scorer,
            )
        response = _response(
            200, encode_json(result.body), {"x-scorepack-batch-size": str(result.batch_size)}
        )
        return response, 200, result, scorer

    def close(self) -> None:
        """Stop the metrics server (if any) and the scorers."""
        self._stop_metrics_server()
        self.repository.close()

    def _stop_metrics_server(self) -> None:
        server, self.metrics_server = self.metrics_server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def serve_metrics(self, port: int, addr: str = "0.0.0.0") -> int | None:
        """Serve this runtime's metrics on ``addr:port`` (0 picks a free port) from a
        daemon thread; the port bound, or None when it is taken (another worker has it)."""
        from prometheus_client import start_http_server

        self._stop_metrics_server()
        try:
            server, _thread = start_http_server(port, addr, registry=self.metrics.registry)
        except OSError as exc:
            logger.warning(
                "metrics: cannot listen on %s:%d (%s); with several workers only one "
                "serves metrics (run one worker: WORKER_COUNT=1)",
                addr,
                port,
                exc,
            )
            return None
        self.metrics_server = server
        bound = int(server.server_address[1])
        logger.info("metrics at http://%s:%d/metrics", addr, bound)
        return bound

    def _read_body(self, request: Request, limit: int | None = None) -> bytes:
        # the model's own limit (default: the largest of the package's models)
        limit = self.max_body_bytes if limit is None else limit
        declared = request.content_length
        if declared is not None and declared > limit:
            # refuse before reading a byte of it, as the embedded server does
            raise BodyTooLargeError(limit, declared)
        # Under scorepack's gunicorn worker the whole body has arrived before this thread
        # runs. Under any other worker (GUNICORN_CMD_ARGS overridden) a stalled client would
        # hold this thread for ever: the socket gets the read timeout for the body.
        sock = getattr(request, "environ", {}).get("gunicorn.socket")
        previous = _set_timeout(sock, self.read_timeout_s)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = request.stream.read(_CHUNK)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    raise BodyTooLargeError(limit)
                chunks.append(chunk)
        except TimeoutError as exc:
            raise RequestTimeoutError(self.read_timeout_s) from exc
        except ScorepackError:
            raise
        except Exception as exc:
            # gunicorn's parser raises for broken framing (a bad chunk size, a missing
            # terminator) and for a client that left mid-body: the request's fault
            raise BadRequestError(
                f"The request body could not be read: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            _set_timeout(sock, previous)


def _set_timeout(sock: Any, seconds: float | None) -> float | None:
    """Set a socket's timeout and return the one it had (without a socket, do nothing)."""
    if sock is None or not hasattr(sock, "settimeout"):
        return None
    try:
        before: float | None = sock.gettimeout()
        sock.settimeout(seconds)
        return before
    except OSError:
        return None


def _request_id(request: Request) -> str:
    """The request id azmlinfsrv answers with (x-request-id, or the one it made)."""
    given = request.headers.get("x-request-id")
    if given:
        return str(given)
    try:
        from flask import g

        return str(g.get("request_id") or "-")
    except Exception:  # no Flask, or outside a request (tests call run() directly)
        return "-"


def _response(status: int, body: bytes, headers: Mapping[str, str]) -> Any:
    # imported here: azmlinfsrv swaps azureml.contrib.services' module for its own copy
    from azureml.contrib.services.aml_response import AMLResponse

    return AMLResponse(body, status, {"Content-Type": "application/json", **headers})


_lock = threading.Lock()
_runtime: AzureMLRuntime | None = None


def current() -> AzureMLRuntime | None:
    """The runtime ``init()`` made in this process, if any."""
    return _runtime


def init(
    entry_script: str | os.PathLike[str],
    *,
    backend: str | None = None,
    backend_module: str | None = None,
    models: tuple[str, ...] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AzureMLRuntime:
    """Load the package whose ``score.py`` is ``entry_script``; ready when this returns.

    The manifest sits next to the entry script; the model is found under
    ``AZUREML_MODEL_DIR`` (see :func:`~.layout.locate_model_dir`) and checked against its
    sha256 before it loads. A package of several models (its entry script passes
    ``models``) loads each of them (:func:`~.layout.locate_models`), each with its own
    batcher. ``SCOREPACK_DEVICE`` and the ``SCOREPACK_*`` scoring variables override the
    package's settings. Errors are raised: azmlinfsrv logs them and stops.
    """
    env = os.environ if environ is None else environ
    # the one settings object a package reads (the same class as the CLI's, so the same
    # names, checks and messages); read once, here, and handed to each reader
    settings = package_settings(env)
    try:
        configure_azureml_logging(
            settings.log_format, settings.log_level, access_log=settings.access_log
        )
    except (ValueError, AttributeError) as exc:
        raise PackageError(f"SCOREPACK_LOG_FORMAT/SCOREPACK_LOG_LEVEL: {exc}") from exc
    package = Path(entry_script).resolve().parent
    spec = load_manifest(package)
    names = tuple(m.name for m in spec.models)
    if models is not None and tuple(models) != names:
        raise PackageError(
            f"score.py serves the models {', '.join(models)}, but {package / 'scorepack.yaml'} "
            f"lists {', '.join(names) or 'one model'}; rebuild the package."
        )
    if spec.models and models is None:
        raise PackageError(
            f"{package} is a package of several models; its score.py is not the one "
            "scorepack build wrote. Rebuild the package."
        )
    # the backend plugins first, so that a missing wheel is named clearly
    modules: list[str | None] = [m.backend_module for m in spec.models] or [backend_module]
    for module in modules:
        _import_backend(module)
    limits = ReadLimits.from_settings(settings)
    device = settings.device or spec.device
    served: Scorer | Repository
    if spec.models:
        served = _open_models(spec, package, env, device, settings)
    else:
        model_dir = locate_model_dir(spec, package, env, explicit=settings.model_dir)
        config = apply_settings(settings, spec.config)
        logger.info("loading %s (%s, %s) from %s", spec.name, spec.backend, device, model_dir)
        scorer = open_package(
            package,
            model_dir=model_dir,
            backend=backend,
            device=device,
            config=config,
            decode=settings.decode_settings(),
        )
        scorer.start(wait=True)
        served = scorer
    if settings.otlp_endpoint:
        tracing.configure(settings.otlp_endpoint.strip(), service_name=spec.name)
    made = use(AzureMLRuntime(served, read_timeout_s=limits.read_timeout_s))
    if settings.metrics_port:  # unset or 0: no metrics server
        made.serve_metrics(settings.metrics_port, settings.metrics_addr.strip() or "0.0.0.0")
    atexit.register(served.close, 10.0)
    return made


def _import_backend(module: str | None) -> None:
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise PackageError(
            f"The backend plugin {module!r} cannot be imported ({exc}). Install the "
            "package's requirements.txt, which includes its wheel."
        ) from exc


def _open_models(
    spec: PackageSpec, package: Path, env: Mapping[str, str], device: str, settings: Any
) -> Repository:
    """Every model of a package of several, loaded and warmed up, in one repository."""
    folders = locate_models(spec, package, env, explicit=settings.model_dir)
    scorers: list[Scorer] = []
    try:
        for model in spec.models:
            logger.info(
                "loading %s (%s, %s) from %s",
                model.name,
                model.backend,
                device,
                folders[model.name],
            )
            scorer = open_package(
                package / MODELS_DIR / model.name,
                model_dir=folders[model.name],
                device=device,
                config=apply_settings(settings, model.config),
                name=model.name,
                decode=settings.decode_settings(),
            )
            scorers.append(scorer)
            scorer.start(wait=True)
    except BaseException:
        for scorer in scorers:
            scorer.close(0)
        raise
    return Repository([ModelSource(s.name, None, _given(s)) for s in scorers])


def _given(scorer: Scorer) -> Callable[[], Scorer]:
    return lambda: scorer


def use(made: AzureMLRuntime) -> AzureMLRuntime:
    """Make ``made`` the runtime :func:`run` answers with (closing the one before).

    :func:`init` calls it; an entry script that builds its own scorer may too."""
    global _runtime
    with _lock:
        previous, _runtime = _runtime, made
    if previous is not None and previous is not made:
        previous.close()
    return made


def run(request: Request) -> Any:
    """Score one request with the runtime ``init()`` made (503 before ``init()``)."""
    runtime = _runtime
    if runtime is None:
        reply = error_reply(NotReadyError("init() has not loaded the model."))
        return _response(reply.status, encode_json(reply.body), reply.headers)
    return runtime.run(request)
