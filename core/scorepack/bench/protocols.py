"""``scorepack bench --protocol v2|grpc``: the same load over the Open Inference Protocol.

The load loop is :mod:`.run`'s; this module only makes its connections. Both
send one pre-built request again and again, as the ``/score`` connection does, so the
protocols are compared on the same load with the same client cost per request:

* ``v2``: V2 REST with the binary tensor extension (inputs and outputs binary, as
  tritonclient sends them) on one keep-alive HTTP/1.1 connection per worker;
* ``grpc``: ``ModelInfer`` with the request serialised once, on one gRPC channel (one
  HTTP/2 connection) per worker.

An image file goes as a BYTES input (decoded by the server, as for ``/score``), a JSON
tensors file as typed inputs; the model's metadata says the names and datatypes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ..client_v2 import default_model, file_inputs, rest_infer_body, v2_client
from .http import HttpConnection, HttpTarget
from .run import Connection

__all__ = ["GrpcConnection", "V2Load", "connections", "prepare_v2_load"]


@dataclass(frozen=True)
class V2Load:
    """What one V2 load test sends: the model, and its inputs as arrays."""

    protocol: str
    url: str
    model: str
    version: str | None
    inputs: dict[str, Any]
    key: str | None

    @property
    def display_url(self) -> str:
        path = f"/v2/models/{self.model}" + (f"/versions/{self.version}" if self.version else "")
        if self.protocol == "grpc":
            from ..client_grpc import grpc_target

            return f"grpc://{grpc_target(self.url)} ModelInfer {self.model}"
        return _base(self.url) + path + "/infer"


def prepare_v2_load(
    protocol: str,
    url: str,
    body: bytes,
    *,
    model: str | None = None,
    version: str | None = None,
    key: str | None = None,
    timeout: float = 60.0,
) -> V2Load:
    """Ask the server for the model's metadata and turn the file into its inputs."""
    with v2_client(url, protocol, key=key, timeout=timeout) as client:
        name = model or default_model(client)
        metadata = client.model_metadata(name, version)
    return V2Load(protocol, url, name, version, file_inputs(body, metadata), key)


def _base(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return f"{parts.scheme}://{parts.netloc}"


def rest_target(load: V2Load) -> HttpTarget:
    """The exact bytes of the V2 REST infer request (binary tensors), and where to send them."""
    parts = urlsplit(_base(load.url))
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    body, header_length = rest_infer_body(load.inputs)
    path = f"/v2/models/{quote(load.model, safe='')}"
    if load.version:
        path += f"/versions/{quote(load.version, safe='')}"
    headers = [
        f"POST {path}/infer HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/octet-stream",
        f"Inference-Header-Content-Length: {header_length}",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
        "User-Agent: scorepack-bench",
    ]
    if load.key:
        headers.append(f"Authorization: Bearer {load.key}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
    host = parts.hostname or "127.0.0.1"
    return HttpTarget(host, parts.port or (443 if tls else 80), tls, request)


class GrpcConnection:
    """One gRPC channel (its own HTTP/2 connection) sending one pre-serialised request.

    :meth:`send` answers an HTTP-like status (the gRPC code's equivalent: 200 for OK) and
    the batch size the server reports in its trailing metadata. Everything but the call
    itself is prepared once: the load generator shares the cores with the server it loads.
    """

    def __init__(self, load: V2Load, timeout: float) -> None:
        import grpc

        from ..client_grpc import STATUS_BY_CODE, grpc_infer_request, grpc_target
        from ..proto.messages import SERVICE

        self._grpc = grpc
        self._status_by_code = STATUS_BY_CODE
        self._target = grpc_target(load.url)
        self._request = grpc_infer_request(
            load.model, load.inputs, version=load.version
        ).SerializeToString()
        self._path = f"/{SERVICE}/ModelInfer"
        self._metadata = (("authorization", f"Bearer {load.key}"),) if load.key else None
        self._timeout = timeout
        self._channel: Any = None
        self._call: Any = None
        self._closing: asyncio.Future[None] | None = None

    def _open(self) -> Any:
        self._channel = self._grpc.aio.insecure_channel(
            self._target,
            options=[
                # one connection per worker, as the HTTP connections are, rather than
                # every channel to the same target sharing one
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ],
        )
        # no (de)serialiser: the request goes as the bytes built once; the answer is
        # not parsed, as the HTTP connections read but do not parse their bodies
        self._call = self._channel.unary_unary(self._path)
        return self._call

    async def send(self) -> tuple[int, int | None]:
        stub = self._call if self._call is not None else self._open()
        call = stub(self._request, metadata=self._metadata, timeout=self._timeout)
        try:
            await call
        except self._grpc.aio.AioRpcError as exc:
            if exc.code() == self._grpc.StatusCode.UNAVAILABLE and not exc.trailing_metadata():
                raise ConnectionError(exc.details()) from None  # no server: a transport error
            return self._status_by_code.get(exc.code(), 500), None
        batch = None
        for key, value in await call.trailing_metadata() or ():
            if key == "x-scorepack-batch-size":
                batch = int(value)
        return 200, batch

    def close(self) -> None:
        channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            # close() is a coroutine; closing in the background frees the connection
            self._closing = asyncio.ensure_future(channel.close())


def connections(load: V2Load, timeout: float) -> Callable[[], Connection]:
    """The load loop's connection factory for ``load``'s protocol."""
    if load.protocol == "grpc":
        return lambda: GrpcConnection(load, timeout)
    target = rest_target(load)
    return lambda: HttpConnection(target)
