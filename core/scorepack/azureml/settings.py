"""Settings of a package running under azmlinfsrv: the server's environment, and the
``SCOREPACK_*`` variables that tune scoring without rebuilding the package.

:func:`server_environment` is the one place that says how azmlinfsrv must run for dynamic
batching to work; the deployment files (Azure ML SDK v1 and v2) and
``scorepack serve PKG --runtime azureml`` all take their variables from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..config import ScoringConfig
from ..errors import PackageError
from ..generator.spec import DeploymentSettings

__all__ = ["SCORING_ENV", "WORKER_CLASS", "ReadLimits", "scoring_from_env", "server_environment"]


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
    def from_env(cls, environ: Mapping[str, str]) -> ReadLimits:
        """The defaults, with ``SCOREPACK_READ_TIMEOUT_S`` and
        ``SCOREPACK_UPLOAD_BUFFER_BYTES`` applied (a bad value is a PackageError)."""
        values: dict[str, Any] = {}
        for variable, name, parse in (
            ("SCOREPACK_READ_TIMEOUT_S", "read_timeout_s", _positive_float),
            ("SCOREPACK_UPLOAD_BUFFER_BYTES", "buffer_bytes", _positive_int),
        ):
            raw = environ.get(variable, "").strip()
            if raw:
                try:
                    values[name] = parse(raw)
                except ValueError as exc:
                    raise PackageError(f"{variable}={raw!r} is not valid: {exc}") from exc
        return cls(**values)


def server_environment(deployment: DeploymentSettings) -> dict[str, str]:
    """azmlinfsrv's environment variables for a package.

    * ``WORKER_COUNT=1``: one worker process owns the model and the GPU (each worker would
      load its own copy of the model);
    * ``GUNICORN_CMD_ARGS="--threads N"``: azmlinfsrv runs gunicorn sync workers, which take
      one request at a time; threads switch gunicorn to gthread workers, so N requests are in
      flight at once and the scorepack runtime can batch them;
    * ``--worker-class`` :data:`WORKER_CLASS`: gthread, except that the main loop reads each
      request whole before a thread gets it, so slow or stalled uploads cannot take the
      threads (and with them the liveness probe);
    * ``SCORING_TIMEOUT_MS``: azmlinfsrv's own timeout (it fires only without threads; with
      them the scorepack runtime enforces the package's timeout itself).
    """
    return {
        "WORKER_COUNT": "1",
        "GUNICORN_CMD_ARGS": f"--threads {int(deployment.threads)} --worker-class {WORKER_CLASS}",
        "SCORING_TIMEOUT_MS": str(int(deployment.scoring_timeout_ms)),
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


#: variable → (where it goes, how it is parsed); the same names as the CLI's envvars
SCORING_ENV: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    "SCOREPACK_MAX_BATCH_SIZE": ("batching.max_batch_size", _positive_int),
    "SCOREPACK_MAX_DELAY_MS": ("batching.max_delay_ms", _positive_float),
    "SCOREPACK_MAX_QUEUE_SIZE": ("batching.max_queue_size", _positive_int),
    "SCOREPACK_TIMEOUT_MS": ("batching.timeout_ms", _positive_float),
    "SCOREPACK_MAX_BODY_BYTES": ("max_body_bytes", _positive_int),
    "SCOREPACK_MAX_IMAGE_PIXELS": ("max_image_pixels", _positive_int),
    "SCOREPACK_TOP_K": ("postprocess.top_k", _positive_int),
}


def scoring_from_env(config: ScoringConfig, environ: Mapping[str, str]) -> ScoringConfig:
    """``config`` with the ``SCOREPACK_*`` variables of :data:`SCORING_ENV` applied.

    A value that does not parse is a :class:`~scorepack.errors.PackageError` naming the
    variable, raised at start-up rather than at the first request.
    """
    changes: dict[str, dict[str, Any]] = {"": {}, "batching": {}, "postprocess": {}}
    for variable, (target, parse) in SCORING_ENV.items():
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        try:
            value = parse(raw)
        except ValueError as exc:
            raise PackageError(f"{variable}={raw!r} is not valid: {exc}") from exc
        section, _, name = target.rpartition(".")
        changes[section][name] = value
    try:
        return replace(
            config,
            batching=replace(config.batching, **changes["batching"]),
            postprocess=replace(config.postprocess, **changes["postprocess"]),
            **changes[""],
        )
    except ValueError as exc:
        raise PackageError(f"The SCOREPACK_* settings are not valid: {exc}") from exc
