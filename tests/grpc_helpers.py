"""Serve models over HTTP and gRPC on 127.0.0.1 for one test, and talk to them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
import numpy as np

from scorepack import Backend, Scorer, ScoringConfig
from scorepack.proto.messages import SERVICE, messages, method_types
from scorepack.repository import ModelSource, Repository
from scorepack.server import BackgroundServer
from scorepack.server.grpc_v2 import GrpcOptions
from serving_helpers import scoring_config

TIMEOUT = 30.0


class GrpcServed:
    """A running server (HTTP at :attr:`url`, gRPC at :attr:`grpc_address`) and its models."""

    def __init__(self, server: BackgroundServer, repository: Repository) -> None:
        self.server = server
        self.repository = repository
        self.url = server.url
        assert server.grpc_address is not None
        self.grpc_address: str = server.grpc_address
        self._channel = grpc.insecure_channel(self.grpc_address)

    def scorer(self, name: str) -> Scorer:
        return self.repository.get(name)

    def backend(self, name: str) -> Any:
        return self.scorer(name).backend

    def _infer_call(self) -> Any:
        _, response_type = method_types("ModelInfer")
        return self._channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )

    def future_infer(
        self, model: str, x: np.ndarray, *, timeout: float | None = TIMEOUT
    ) -> grpc.Future:
        """ModelInfer of ``x`` (FP32) as input ``x``, without waiting for the answer."""
        request = messages.ModelInferRequest(model_name=model)
        request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
        request.raw_input_contents.append(np.ascontiguousarray(x, "<f4").tobytes())
        return self._infer_call().future(request, timeout=timeout)

    def infer(self, model: str, x: np.ndarray) -> np.ndarray:
        """ModelInfer of ``x``; the first output as float32."""
        response = self.future_infer(model, x).result(timeout=TIMEOUT)
        shape = list(response.outputs[0].shape)
        return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(shape)

    def close(self) -> None:
        self._channel.close()


@contextmanager
def raw_stub(served: GrpcServed, method: str) -> Iterator[Any]:
    """A callable for one RPC on a fresh channel (messages in, messages out)."""
    _, response_type = method_types(method)
    with grpc.insecure_channel(served.grpc_address) as channel:
        yield channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )


@contextmanager
def grpc_serving(
    backends: Mapping[str, Backend],
    *,
    config: ScoringConfig | None = None,
    warmup: bool = True,
    auth_keys: tuple[str, ...] = (),
) -> Iterator[GrpcServed]:
    """Serve ``backends`` by name over HTTP and gRPC until the block ends."""
    config = config or scoring_config(warmup=warmup)
    sources = [
        ModelSource(name, None, lambda b=backend, n=name: Scorer(b, config, name=n))
        for name, backend in backends.items()
    ]
    options = GrpcOptions(0, max_message_bytes=config.max_body_bytes)
    with grpc_serving_repository(
        Repository(sources), grpc_options=options, auth_keys=auth_keys
    ) as served:
        yield served


@contextmanager
def grpc_serving_repository(
    repository: Repository,
    *,
    wait_ready: bool = True,
    grpc_options: GrpcOptions | None = None,
    auth_keys: tuple[str, ...] = (),
) -> Iterator[GrpcServed]:
    """Serve a repository over HTTP and gRPC until the block ends, then unload it."""
    options = grpc_options or GrpcOptions(0)
    server = BackgroundServer(repository, grpc=options, auth_keys=auth_keys)
    server.start(wait_ready=wait_ready)
    served = GrpcServed(server, repository)
    try:
        yield served
    finally:
        served.close()
        server.stop()
        repository.close()
