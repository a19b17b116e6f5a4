"""The one table from scorepack errors to HTTP statuses, used by every host.

The embedded server and the generated Azure ML ``score.py`` both answer errors through
:func:`error_reply`, so a client sees the same status, code and message from either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..errors import (
    ClientGoneError,
    HeadersTooLargeError,
    MethodNotAllowedError,
    ModelError,
    NotFoundError,
    PayloadTooLargeError,
    PredictError,
    RequestError,
    RequestTimeoutError,
    ScorepackError,
    ScoringTimeoutError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)

__all__ = ["STATUS_BY_ERROR", "ErrorReply", "error_reply"]

logger = logging.getLogger("scorepack.server")

#: first match wins, so subclasses come before their bases
STATUS_BY_ERROR: tuple[tuple[type[ScorepackError], int], ...] = (
    (UnauthorizedError, 401),
    (NotFoundError, 404),
    (MethodNotAllowedError, 405),
    (RequestTimeoutError, 408),
    (PayloadTooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (HeadersTooLargeError, 431),
    (ClientGoneError, 499),
    (RequestError, 400),
    (ServiceUnavailableError, 503),
    (ScoringTimeoutError, 504),
    (PredictError, 500),
    (ModelError, 500),
    (ScorepackError, 500),
)


@dataclass(frozen=True)
class ErrorReply:
    """What to send for an error: status, JSON body fields and extra headers."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def error_reply(exc: BaseException) -> ErrorReply:
    """Map any exception to a reply. Unexpected ones are logged and become a 500."""
    if not isinstance(exc, ScorepackError):
        logger.error("unexpected error while answering a request", exc_info=exc)
        return ErrorReply(500, "internal_error", f"Internal error: {type(exc).__name__}: {exc}")
    status = next(s for cls, s in STATUS_BY_ERROR if isinstance(exc, cls))
    headers: dict[str, str] = {}
    if isinstance(exc, ServiceUnavailableError) and exc.retry_after:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="scorepack"'
    if isinstance(exc, MethodNotAllowedError):
        headers["Allow"] = ", ".join(exc.allowed)
    if status >= 500 and not isinstance(exc, ServiceUnavailableError | ScoringTimeoutError):
        logger.error("request failed: %s", exc, exc_info=exc.__cause__ or exc)
    return ErrorReply(status, exc.code, exc.message, headers)
