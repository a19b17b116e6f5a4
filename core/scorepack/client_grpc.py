"""The V2 gRPC client (``inference.GRPCInferenceService``), on grpcio's blocking API.

Uses the server's own message classes (built from the vendored protos in a private pool),
so it needs only the ``grpc`` extra, not tritonclient. Inputs go as
``raw_input_contents``, as tritonclient sends them; outputs are read from
``raw_output_contents``. Errors become :class:`~scorepack.errors.RemoteError` with the
gRPC code's HTTP equivalent as ``status`` and the code's name as ``remote_code``.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np

from .client_v2 import V2Result, _tensor_bytes, array_datatype, decode_raw
from .errors import RemoteError
from .proto.messages import SERVICE, messages, method_types

__all__ = ["STATUS_BY_CODE", "GrpcV2Client", "grpc_infer_request", "grpc_target"]

#: gRPC codes as their HTTP equivalents (the server maps the other way, from the HTTP table),
#: for RemoteError and the load generator, which report HTTP-like statuses
STATUS_BY_CODE = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}


def grpc_target(url: str) -> str:
    """``grpc://host:port``, ``http://host:port`` or ``host:port`` → ``host:port``."""
    if "://" not in url:
        return url.rstrip("/")
    parts = urlsplit(url)
    return parts.netloc


def grpc_infer_request(
    model: str,
    inputs: dict[str, Any],
    *,
    version: str | None = None,
    outputs: list[str] | None = None,
    request_id: str | None = None,
) -> Any:
    """A ``ModelInferRequest`` with every input in ``raw_input_contents``."""
    request = messages.ModelInferRequest(
        model_name=model, model_version=version or "", id=request_id or ""
    )
    for name, value in inputs.items():
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        datatype = array_datatype(array)
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(_tensor_bytes(array, datatype))
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


class GrpcV2Client:
    """A blocking V2 gRPC client on one channel."""

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        timeout: float = 60.0,
        max_message_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.target = grpc_target(url)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self._channel = grpc.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._stubs: dict[str, Any] = {}

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        return self._call_with_metadata(method, request, timeout)[0]

    def _call_with_metadata(
        self, method: str, request: Any, timeout: float | None = None
    ) -> tuple[Any, dict[str, str]]:
        """The response and the call's trailing metadata."""
        stub = self._stubs.get(method)
        if stub is None:
            _, response_type = method_types(method)
            stub = self._channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_type.FromString,
            )
            self._stubs[method] = stub
        try:
            response, call = stub.with_call(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None
        trailing = {k: v for k, v in call.trailing_metadata() or () if isinstance(v, str)}
        return response, trailing

    def live(self) -> bool:
        return bool(self._call("ServerLive", messages.ServerLiveRequest()).live)

    def ready(self) -> bool:
        return bool(self._call("ServerReady", messages.ServerReadyRequest()).ready)

    def model_ready(self, model: str, version: str | None = None) -> bool:
        request = messages.ModelReadyRequest(name=model, version=version or "")
        return bool(self._call("ModelReady", request).ready)

    def server_metadata(self) -> dict[str, Any]:
        response = self._call("ServerMetadata", messages.ServerMetadataRequest())
        return {
            "name": response.name,
            "version": response.version,
            "extensions": list(response.extensions),
        }

    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        request = messages.ModelMetadataRequest(name=model, version=version or "")
        response = self._call("ModelMetadata", request)
        return {
            "name": response.name,
            "versions": list(response.versions),
            "platform": response.platform,
            "inputs": [_tensor_meta(t) for t in response.inputs],
            "outputs": [_tensor_meta(t) for t in response.outputs],
        }

    def models(self) -> list[dict[str, Any]]:
        response = self._call("RepositoryIndex", messages.RepositoryIndexRequest())
        return [
            {"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}
            for m in response.models
        ]

    def infer(
        self,
        model: str,
        inputs: dict[str, Any],
        *,
        version: str | None = None,
        outputs: list[str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> V2Result:
        request = grpc_infer_request(
            model, inputs, version=version, outputs=outputs, request_id=request_id
        )
        started = time.perf_counter()
        response, trailing = self._call_with_metadata("ModelInfer", request, timeout)
        elapsed = (time.perf_counter() - started) * 1000
        batch = trailing.get("x-scorepack-batch-size")
        return infer_result(response, elapsed, int(batch) if batch else None)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcV2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def infer_result(response: Any, elapsed_ms: float, batch_size: int | None = None) -> V2Result:
    """A ``ModelInferResponse`` as a :class:`~scorepack.client_v2.V2Result`."""
    outputs = {}
    raw = response.raw_output_contents
    for index, out in enumerate(response.outputs):
        shape = [int(d) for d in out.shape]
        outputs[out.name] = decode_raw(raw[index], out.datatype, shape)
    return V2Result(
        outputs=outputs,
        model_name=response.model_name,
        model_version=response.model_version or None,
        elapsed_ms=elapsed_ms,
        id=response.id or None,
        batch_size=batch_size,
    )


def rpc_error(exc: grpc.RpcError) -> RemoteError:
    """A failed call as a RemoteError (status: the code's HTTP equivalent)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    status = STATUS_BY_CODE.get(code, 500)
    return RemoteError(status, details or code.name, code.name)


def _tensor_meta(tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
