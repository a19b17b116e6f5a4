"""The Open Inference Protocol's gRPC messages (Triton's vendored protos), shared by the
V2 gRPC server (:mod:`scorepack.server.grpc_v2`) and client (:mod:`scorepack.client_grpc`).

Importing :mod:`.messages` needs protobuf, and the server and client need grpcio: the
``grpc`` extra. This package itself imports neither; :func:`require_grpc` says what to
install when they are missing.
"""

from __future__ import annotations

from ..errors import MissingExtraError

__all__ = ["require_grpc"]


def require_grpc(feature: str = "gRPC") -> None:
    """Raise :class:`~scorepack.errors.MissingExtraError` unless grpcio and protobuf import."""
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(feature, "grpc", f"grpcio and protobuf ({exc})") from exc
