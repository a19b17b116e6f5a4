"""Limits on what a client may send the embedded server before it is refused.

uvicorn (httptools) parses headers without a limit on their size or count, and waits for
a request body for ever; these are checked by the app for every request. The defaults
follow common servers: 100 header fields (gunicorn, Apache), 32 KiB of headers in all
(nginx's ``large_client_header_buffers 4 8k``), 60 s for a body that stops arriving
(nginx's ``client_body_timeout``), and azmlinfsrv's 100 characters for ``x-request-id``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import HeadersTooLargeError

__all__ = ["REQUEST_ID_MAX", "HttpLimits", "checked_request_id", "new_request_id"]

#: azmlinfsrv's limit (``HEADER_LIMIT`` in its routes.py): longer ids are answered 431
REQUEST_ID_MAX = 100
#: what an id may hold: visible ASCII, no spaces or quotes (it is echoed and logged)
_REQUEST_ID = re.compile(rb"[!#-~]+")


@dataclass(frozen=True)
class HttpLimits:
    """The embedded server's limits on request headers, bodies and shutdown."""

    #: header fields in one request; more is 431 (SCOREPACK_MAX_HEADER_COUNT)
    max_header_count: int = 100
    #: bytes of all header names and values together; more is 431 (SCOREPACK_MAX_HEADER_BYTES)
    max_header_bytes: int = 32 * 1024
    #: seconds a begun body may go without a byte arriving; then 408 (SCOREPACK_READ_TIMEOUT_S)
    read_timeout_s: float = 60.0
    #: on SIGTERM, seconds readiness answers 503 before the listener closes
    #: (SCOREPACK_DRAIN_SECONDS), so a load balancer stops sending first
    drain_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_header_count < 1 or self.max_header_bytes < 1:
            raise ValueError("header limits must be at least 1")
        if self.read_timeout_s <= 0 or self.drain_s < 0:
            raise ValueError("read_timeout_s must be positive and drain_s not negative")

    @classmethod
    def from_settings(cls, settings: Any) -> HttpLimits:
        """The defaults with what the settings object set
        (:class:`~scorepack.settings.ServeSettings`: ``max_header_count``,
        ``max_header_bytes``, ``read_timeout_s``, ``drain_seconds``) applied."""
        given = {
            "max_header_count": settings.max_header_count,
            "max_header_bytes": settings.max_header_bytes,
            "read_timeout_s": settings.read_timeout_s,
            "drain_s": settings.drain_seconds,
        }
        return cls(**{k: v for k, v in given.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HttpLimits:
        """The defaults with the ``SCOREPACK_*`` variables in ``environ`` (default: this
        process's) applied, read by the settings object; a bad value is a
        :class:`~scorepack.settings.SettingsError` naming it."""
        from ..settings import ServeSettings

        return cls.from_settings(ServeSettings.load(environ=environ))

    def check_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Raise :class:`HeadersTooLargeError` (431) for too many or too large headers."""
        count = size = 0
        for name, value in headers:
            count += 1
            size += len(name) + len(value)
        self.check_header_sizes(count, size)

    def check_header_sizes(self, count: int, size: int) -> None:
        """:meth:`check_headers` for headers already counted: ``count`` fields holding
        ``size`` bytes of names and values."""
        if count > self.max_header_count:
            raise HeadersTooLargeError(
                f"The request has {count} header fields; the limit is {self.max_header_count} "
                "(SCOREPACK_MAX_HEADER_COUNT)."
            )
        if size > self.max_header_bytes:
            raise HeadersTooLargeError(
                f"The request headers hold {size} bytes; the limit is {self.max_header_bytes} "
                "(SCOREPACK_MAX_HEADER_BYTES)."
            )


# a version-4 UUID's fixed bits: version 4 (bits 76-79) and RFC 4122's variant (bits 62-63)
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_random_bits = random.getrandbits


def new_request_id() -> str:
    """A new request id: a random (version 4) UUID, as ``str(uuid.uuid4())`` writes it, in
    a fifth of the time (0.6 µs, not 2-3: no ``os.urandom`` system call, no ``UUID``
    object). A request id names a request in logs and traces, it guards nothing, so
    ``random``'s generator will do (reseeded in a forked child, so workers never share
    a sequence)."""
    digits = "%032x" % ((_random_bits(128) & _UUID4_CLEAR) | _UUID4_SET)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def checked_request_id(given: bytes) -> bytes:
    """The id to use for a request: the client's, a new one if it sent none or an id with
    characters other than visible ASCII, and 431 when it is over 100 characters (as
    azmlinfsrv answers)."""
    if not given:
        return new_request_id().encode()
    if len(given) > REQUEST_ID_MAX:
        raise HeadersTooLargeError(
            f"x-request-id must not exceed {REQUEST_ID_MAX} characters (it has {len(given)})."
        )
    if not _REQUEST_ID.fullmatch(given):
        return new_request_id().encode()
    return given
