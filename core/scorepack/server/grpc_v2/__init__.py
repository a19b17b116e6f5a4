"""The Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``.

Needs the ``grpc`` extra (``pip install 'scorepack[grpc]'``: grpcio and protobuf); nothing
else in scorepack imports this package's modules, so ``import scorepack`` works without
them. :func:`grpc_server` is what the serve command calls; it names the pip command when
grpcio is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...codecs import DEFAULT_MAX_BODY_BYTES
from ...proto import require_grpc

if TYPE_CHECKING:
    from ...telemetry.stats import RequestStats
    from .server import GrpcServer

__all__ = ["DEFAULT_GRPC_PORT", "GrpcOptions", "grpc_server"]

#: Triton's gRPC port, the one V2 gRPC clients expect (``--grpc-port`` has no default:
#: gRPC is off unless asked for)
DEFAULT_GRPC_PORT = 8001


@dataclass(frozen=True)
class GrpcOptions:
    """Serve V2 gRPC beside HTTP: on ``port`` (0 picks a free one), with messages up to
    ``max_message_bytes`` (the body limit; each model still checks its own)."""

    port: int
    max_message_bytes: int = DEFAULT_MAX_BODY_BYTES


def grpc_server(repository: Any, **kwargs: Any) -> GrpcServer:
    """A :class:`~.server.GrpcServer` over ``repository`` (not started yet)."""
    require_grpc("The gRPC server (--grpc-port)")
    from .server import GrpcServer

    return GrpcServer(repository, **kwargs)


def start_grpc(
    repository: Any,
    host: str,
    options: GrpcOptions | None,
    auth_keys: tuple[str, ...],
    requests: RequestStats | None = None,
    draining: Callable[[], bool] | None = None,
) -> GrpcServer | None:
    """Start the gRPC server beside the HTTP one (bound before this returns), or None;
    its calls are counted into ``requests`` (the HTTP app's metrics). ``draining`` is the
    HTTP server's drain state: ServerReady follows its readiness."""
    if options is None:
        return None
    return grpc_server(
        repository,
        host=host,
        port=options.port,
        max_message_bytes=options.max_message_bytes,
        auth_keys=auth_keys,
        requests=requests,
        draining=draining,
    ).start()
