"""The Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``.

Needs the ``grpc`` extra (``pip install 'scorepack[grpc]'``: grpcio and protobuf); nothing
else in scorepack imports this package's modules, so ``import scorepack`` works without
them. :func:`grpc_server` is what the serve command calls; it names the pip command when
grpcio is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...proto import require_grpc

if TYPE_CHECKING:
    from .server import GrpcServer

__all__ = ["grpc_server"]


def grpc_server(repository: Any, **kwargs: Any) -> GrpcServer:
    """A :class:`~.server.GrpcServer` over ``repository`` (not started yet)."""
    require_grpc("The gRPC server (--grpc-port)")
    from .server import GrpcServer

    return GrpcServer(repository, **kwargs)
