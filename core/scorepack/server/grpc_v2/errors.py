"""scorepack errors → gRPC status codes, through the one HTTP table.

Every error is first classified by :func:`scorepack.server.errors.error_reply` (the table
the HTTP routes use), and its HTTP status is then mapped to a gRPC code, so a bad input is
INVALID_ARGUMENT over gRPC exactly when it is a 400 over HTTP. The mapping follows
``google.rpc.Code``'s HTTP equivalents, with one choice: 413 (body or image over its limit)
is RESOURCE_EXHAUSTED, the code gRPC itself answers for a message over the size limit.
A full queue is UNAVAILABLE (as HTTP 503), the code gRPC clients retry by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ..errors import error_reply

__all__ = ["MESSAGE_LIMIT", "GrpcError", "bounded", "grpc_error"]

_CODE_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True)
class GrpcError:
    """What to answer for an error: a status code, its message and trailing metadata, and
    the HTTP status the same error gets over REST (the access line's ``status``)."""

    code: grpc.StatusCode
    message: str
    metadata: tuple[tuple[str, str], ...] = ()
    status: int = 500


#: UTF-8 bytes of a message: gRPC sends it in a trailer, each byte past ASCII escaped as 3
#: characters, and clients drop a call whose trailers pass 8 KiB (grpc.max_metadata_size)
#: with RESOURCE_EXHAUSTED instead of the status meant (a load failure can quote a file)
MESSAGE_LIMIT = 2000


def bounded(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` cut to ``limit`` UTF-8 bytes, ending in "..." when cut."""
    data = message.encode("utf-8")
    if len(data) <= limit:
        return message
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def grpc_error(exc: BaseException) -> GrpcError:
    """Map any exception to a gRPC status; unexpected ones are logged and are INTERNAL."""
    reply = error_reply(exc)
    code = _CODE_BY_STATUS.get(reply.status, grpc.StatusCode.UNKNOWN)
    metadata = [("scorepack-error-code", reply.code)]
    if "Retry-After" in reply.headers:
        metadata.append(("retry-after", reply.headers["Retry-After"]))
    return GrpcError(code, bounded(reply.message), tuple(metadata), reply.status)
