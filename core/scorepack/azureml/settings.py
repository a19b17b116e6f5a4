"""Settings of a package running under azmlinfsrv: the server's environment, and the
``SCOREPACK_*`` variables that tune scoring without rebuilding the package.

:func:`server_environment` is the one place that says how azmlinfsrv must run for dynamic
batching to work; the deployment files (Azure ML SDK v1 and v2) and
``scorepack serve-azureml PKG`` all take their variables from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import ScoringConfig
from ..errors import PackageError
from ..generator.spec import DeploymentSettings

__all__ = [
    "METRICS_PORT",
    "WORKER_CLASS",
    "ReadLimits",
    "apply_settings",
    "package_settings",
    "scoring_from_env",
    "server_environment",
]

#: the port a deployed package serves Prometheus metrics on (Triton's metrics port)
METRICS_PORT = 8002


#: the gunicorn worker that reads whole requests before a thread gets them (see .worker)
WORKER_CLASS = "scorepack.azureml.worker.BufferingThreadWorker"


@dataclass(frozen=True)
class ReadLimits:
    """How long a package under azmlinfsrv waits for a request, and how much it holds."""

    #: seconds a begun request may go without a byte arriving (nginx's client_body_timeout)
    read_timeout_s: float = 60.0
    #: bytes of requests still arriving held at once, all connections together
    buffer_bytes: int = 256 * 1024 * 1024
    #: bytes of one request's header section (h11's default is 16 KiB; gunicorn allows
    #: 100 fields of 8 KiB each)
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> ReadLimits:
        """The defaults, with the settings object's ``read_timeout_s`` and
        ``upload_buffer_bytes`` (:class:`~scorepack.settings.PackageSettings`) applied."""
        values: dict[str, Any] = {}
        if settings.read_timeout_s is not None:
            values["read_timeout_s"] = settings.read_timeout_s
        if settings.upload_buffer_bytes is not None:
            values["buffer_bytes"] = settings.upload_buffer_bytes
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReadLimits:
        """:meth:`from_settings` with the settings read from ``environ`` (default: this
        process's); a bad value is a PackageError."""
        return cls.from_settings(package_settings(environ))


def server_environment(deployment: DeploymentSettings) -> dict[str, str]:
    """azmlinfsrv's environment variables for a package.

    * ``WORKER_COUNT=1``: one worker process owns the model and the GPU (each worker would
      load its own copy of the model);
    * ``GUNICORN_CMD_ARGS="--threads N+1"``: azmlinfsrv runs gunicorn sync workers, which
      take one request at a time; threads switch gunicorn to gthread workers, so the
      deployment's ``threads`` (N) scoring requests are in flight at once and the scorepack
      runtime can batch them, and one more thread is kept for the probes (scorepack's worker
      lets scoring take every thread but one, and refuses more at once with 503); N and
      ``max_concurrent_requests`` are both 32 by default, so Azure ML never sends a replica
      more scoring requests than it takes;
    * ``--worker-class`` :data:`WORKER_CLASS`: gthread, except that the main loop reads each
      request whole before a thread gets it, so slow or stalled uploads cannot take the
      threads (and with them the liveness probe);
    * ``SCORING_TIMEOUT_MS``: azmlinfsrv's own timeout (it fires only without threads; with
      them the scorepack runtime enforces the package's timeout itself);
    * ``SCOREPACK_METRICS_PORT``: the scorepack runtime serves Prometheus metrics on this
      port (azmlinfsrv takes no routes from a package, so they get a port of their own).
    """
    threads = int(deployment.threads) + 1  # the scoring threads and the probes' own
    return {
        "WORKER_COUNT": "1",
        "GUNICORN_CMD_ARGS": f"--threads {threads} --worker-class {WORKER_CLASS}",
        "SCORING_TIMEOUT_MS": str(int(deployment.scoring_timeout_ms)),
        "SCOREPACK_METRICS_PORT": str(METRICS_PORT),
    }


def scoring_from_env(config: ScoringConfig, environ: Mapping[str, str]) -> ScoringConfig:
    """``config`` with the runtime ``SCOREPACK_*`` variables in ``environ`` applied
    (:class:`~scorepack.settings.RuntimeSettings`: batching, limits, top-k).

    A value that does not parse is a :class:`~scorepack.errors.PackageError` naming the
    variable, raised at start-up rather than at the first request.
    """
    return apply_settings(package_settings(environ), config)


def apply_settings(settings: Any, config: ScoringConfig) -> ScoringConfig:
    """``config`` with the runtime settings of ``settings`` applied, or PackageError."""
    from ..settings import SettingsError

    try:
        applied: ScoringConfig = settings.apply(config)
    except SettingsError as exc:
        raise PackageError(f"The SCOREPACK_* settings are not valid: {exc}") from exc
    return applied


def package_settings(environ: Mapping[str, str] | None = None) -> Any:
    """The settings a package reads under azmlinfsrv
    (:class:`~scorepack.settings.PackageSettings`) from ``environ`` (default: this
    process's environment), or a PackageError naming each bad variable."""
    from ..settings import PackageSettings, SettingsError

    try:
        return PackageSettings.load(environ=environ)
    except SettingsError as exc:
        raise PackageError(f"The SCOREPACK_* settings are not valid: {exc}") from exc
