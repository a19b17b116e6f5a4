"""The soak's requests: each kind sends one (or a burst) and names what came back.

Each worker thread has its own clients (:class:`Clients`) and goes round :data:`EMBEDDED`
(or :data:`AZUREML`), so every kind is sent in the same proportion. A kind returns the
outcomes it saw ("200", "400", "UNAVAILABLE", "hung-up", ...); an outcome outside the
kind's ``expected`` set is a failure of the soak (a 500, a transport error on a good
request, a wrong answer).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import numpy as np
from benchmarks.soak import tests_on_path

tests_on_path()

from images import jpeg, truncated_jpeg  # noqa: E402
from scorepack.client import ScoringClient  # noqa: E402
from scorepack.client_grpc import GrpcV2Client, grpc_infer_request  # noqa: E402
from scorepack.client_v2 import RestV2Client  # noqa: E402
from scorepack.errors import RemoteError  # noqa: E402
from scorepack.proto.messages import SERVICE, method_types  # noqa: E402

JPEG = jpeg(40, 30, seed=1)
BAD_JPEG = truncated_jpeg(jpeg(64, 48, seed=2))
IMAGE = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
X = np.array([[1.0, 2.0]], dtype=np.float32)
IDS = np.array([[0, 2, 4, 6]], dtype=np.int64)
#: how many requests a burst sends at once (past the slow model's queue of 8 + batch of 4)
BURST = 24
TIMEOUT = 60.0


class Clients:
    """One worker's clients, all kept open across its requests (as a real client does)."""

    def __init__(self, url: str, grpc_address: str | None) -> None:
        self.url = url
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.http = httpx.Client(base_url=url, timeout=TIMEOUT)
        self.score = ScoringClient(url, timeout=TIMEOUT, model="main" if grpc_address else None)
        self.score_unknown = ScoringClient(url, timeout=TIMEOUT, model="nope")
        self.rest = RestV2Client(url, timeout=TIMEOUT)
        self.grpc: GrpcV2Client | None = None
        self.triton_http: Any = None
        self.triton_grpc: Any = None
        self.channel: grpc.Channel | None = None
        if grpc_address:
            import tritonclient.grpc as triton_grpc
            import tritonclient.http as triton_http

            self.grpc = GrpcV2Client(grpc_address, timeout=TIMEOUT)
            self.triton_http = triton_http.InferenceServerClient(parts.netloc)
            self.triton_grpc = triton_grpc.InferenceServerClient(grpc_address)
            self.channel = grpc.insecure_channel(grpc_address)
            _, response_type = method_types("ModelInfer")
            self.infer_call = self.channel.unary_unary(
                f"/{SERVICE}/ModelInfer",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_type.FromString,
            )

    def close(self) -> None:
        for client in (self.http, self.score, self.score_unknown, self.rest, self.grpc):
            if client is not None:
                client.close()
        for other in (self.triton_http, self.triton_grpc, self.channel):
            if other is not None:
                other.close()


@dataclass(frozen=True)
class Kind:
    """One kind of request: how to send it, and the outcomes that are not failures."""

    name: str
    send: Callable[[Clients], list[str]]
    expected: frozenset[str]


def _status(call: Callable[[], Any]) -> str:
    try:
        call()
    except RemoteError as exc:
        return str(exc.status)
    return "200"


def _grpc_code(call: Callable[[], Any]) -> str:
    try:
        call()
    except RemoteError as exc:
        return exc.remote_code or str(exc.status)
    return "OK"


def _check_probs(probs: np.ndarray) -> str:
    # the classifier's softmax: one row of four that sums to 1; anything else is wrong
    ok = probs.shape == (1, 4) and abs(float(probs.sum()) - 1.0) < 1e-4
    return "OK" if ok else "wrong-answer"


def score_jpeg(c: Clients) -> list[str]:
    return [_status(lambda: c.score.score(JPEG, content_type="image/jpeg"))]


def score_bad_jpeg(c: Clients) -> list[str]:
    return [_status(lambda: c.score.score(BAD_JPEG, content_type="image/jpeg"))]


def score_bad_json(c: Clients) -> list[str]:
    return [
        _status(
            lambda: c.score.score(b'{"inputs": {"image": [[1.0,', content_type="application/json")
        )
    ]


def score_unknown_model(c: Clients) -> list[str]:
    return [_status(lambda: c.score_unknown.score(JPEG, content_type="image/jpeg"))]


def v2_json(c: Clients) -> list[str]:
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": [1, 3, 8, 8],
                "data": IMAGE.ravel().tolist(),
            }
        ]
    }
    reply = c.http.post("/v2/models/main/infer", json=body)
    if reply.status_code != 200:
        return [str(reply.status_code)]
    return [_check_probs(np.array(reply.json()["outputs"][0]["data"]).reshape(1, 4))]


def v2_json_bad(c: Clients) -> list[str]:
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 8], "data": [1.0]}]}
    return [str(c.http.post("/v2/models/main/infer", json=body).status_code)]


def v2_binary(c: Clients) -> list[str]:
    return [_check_probs(c.rest.infer("main", {"image": IMAGE}).outputs["probs"])]


def v2_binary_bad_version(c: Clients) -> list[str]:
    return [_status(lambda: c.rest.infer("main", {"image": IMAGE}, version="9"))]


def triton_http_jpeg(c: Clients) -> list[str]:
    """tritonclient over HTTP, a JPEG as a BYTES input (binary tensors both ways)."""
    import tritonclient.http as triton_http

    tensor = triton_http.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([JPEG], dtype=object), binary_data=True)
    result = c.triton_http.infer("main", [tensor])
    return [_check_probs(result.as_numpy("probs"))]


def grpc_infer(c: Clients) -> list[str]:
    assert c.grpc is not None
    return [_check_probs(c.grpc.infer("main", {"image": IMAGE}).outputs["probs"])]


def grpc_bad_shape(c: Clients) -> list[str]:
    assert c.grpc is not None
    return [_grpc_code(lambda: c.grpc.infer("main", {"image": IMAGE[:, :2]}))]  # type: ignore[union-attr]


def triton_grpc_infer(c: Clients) -> list[str]:
    import tritonclient.grpc as triton_grpc

    tensor = triton_grpc.InferInput("image", [1, 3, 8, 8], "FP32")
    tensor.set_data_from_numpy(IMAGE)
    return [_check_probs(c.triton_grpc.infer("main", [tensor]).as_numpy("probs"))]


def grpc_cancelled(c: Clients) -> list[str]:
    """A call to the slow model, cancelled by its client while it waits."""
    call = c.infer_call.future(grpc_infer_request("slow", {"x": X}), timeout=TIMEOUT)
    time.sleep(0.005)
    call.cancel()
    try:
        call.result(timeout=TIMEOUT)
    except grpc.FutureCancelledError:
        return ["cancelled"]
    except grpc.RpcError as exc:
        return [exc.code().name]
    return ["OK"]


def grpc_expired(c: Clients) -> list[str]:
    """A call to the slow model whose deadline (10 ms) passes before its model call."""
    try:
        c.infer_call(grpc_infer_request("slow", {"x": X}), timeout=0.01)
    except grpc.RpcError as exc:
        return [exc.code().name]
    return ["OK"]


def grpc_burst(c: Clients) -> list[str]:
    """:data:`BURST` calls at once to the slow model: some answered, the rest refused."""
    calls = [
        c.infer_call.future(grpc_infer_request("slow", {"x": X}), timeout=TIMEOUT)
        for _ in range(BURST)
    ]
    out = []
    for call in calls:
        try:
            call.result(timeout=TIMEOUT)
            out.append("OK")
        except grpc.RpcError as exc:
            out.append(exc.code().name)
    return out


def _raw_request(path: str, body: bytes, content_type: str, length: int | None = None) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def _read_status(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return "closed"
        data += chunk
    return data.split(b" ", 2)[1].decode()


def _score_path(c: Clients) -> str:
    return "/score?model=main" if c.grpc is not None else "/score"


def hang_up_mid_body(c: Clients) -> list[str]:
    """Headers and half of a JPEG sent, then the connection closed."""
    with socket.create_connection(c.address, timeout=TIMEOUT) as sock:
        request = _raw_request(_score_path(c), JPEG, "image/jpeg")
        sock.sendall(request[: len(request) - len(JPEG) // 2])
    return ["hung-up"]


def hang_up_waiting(c: Clients, path: str, body: bytes, content_type: str) -> list[str]:
    """A whole request sent, then the connection closed before its answer (a reset)."""
    import struct

    with socket.create_connection(c.address, timeout=TIMEOUT) as sock:
        sock.sendall(_raw_request(path, body, content_type))
        time.sleep(0.002)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return ["hung-up"]


def hang_up_waiting_slow(c: Clients) -> list[str]:
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}'
    return hang_up_waiting(c, "/v2/models/slow/infer", body, "application/json")


def hang_up_waiting_score(c: Clients) -> list[str]:
    return hang_up_waiting(c, _score_path(c), JPEG, "image/jpeg")


def rest_burst(c: Clients) -> list[str]:
    """:data:`BURST` requests at once on their own connections: the queue overflows."""
    if c.grpc is not None:
        body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}'
        request = _raw_request("/v2/models/slow/infer", body, "application/json")
    else:
        request = _raw_request("/score", JPEG, "image/jpeg")
    socks = [socket.create_connection(c.address, timeout=TIMEOUT) for _ in range(BURST)]
    try:
        for sock in socks:
            sock.sendall(request)
        return [_read_status(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _k(name: str, send: Callable[[Clients], list[str]], *expected: str) -> Kind:
    return Kind(name, send, frozenset(expected))


#: the embedded server's mix, one of each in turn per worker
EMBEDDED: tuple[Kind, ...] = (
    _k("score-jpeg", score_jpeg, "200"),
    _k("v2-binary", v2_binary, "OK"),
    _k("grpc", grpc_infer, "OK"),
    _k("score-bad-jpeg", score_bad_jpeg, "400"),
    _k("v2-json", v2_json, "OK"),
    _k("triton-grpc", triton_grpc_infer, "OK"),
    _k("score-bad-json", score_bad_json, "400"),
    _k("triton-http-jpeg", triton_http_jpeg, "OK"),
    _k("grpc-bad-shape", grpc_bad_shape, "INVALID_ARGUMENT"),
    _k("score-unknown-model", score_unknown_model, "404"),
    _k("v2-json-bad", v2_json_bad, "400"),
    _k("v2-bad-version", v2_binary_bad_version, "404"),
    _k("grpc-cancelled", grpc_cancelled, "cancelled", "OK", "UNAVAILABLE"),
    _k("grpc-expired", grpc_expired, "DEADLINE_EXCEEDED", "OK", "UNAVAILABLE"),
    _k("hang-up-mid-body", hang_up_mid_body, "hung-up"),
    _k("hang-up-waiting-slow", hang_up_waiting_slow, "hung-up"),
    _k("hang-up-waiting-score", hang_up_waiting_score, "hung-up"),
    _k("grpc-burst", grpc_burst, "OK", "UNAVAILABLE"),
    _k("rest-burst", rest_burst, "200", "503"),
)

#: the package under azmlinfsrv: /score only (no V2, no gRPC there). Its queue is small
#: (hosts.PACKAGE_QUEUE) and shared by every kind, so any request may meet a full queue
AZUREML: tuple[Kind, ...] = (
    _k("score-jpeg", score_jpeg, "200", "503"),
    _k("score-bad-jpeg", score_bad_jpeg, "400", "503"),
    _k("score-bad-json", score_bad_json, "400", "503"),
    _k("hang-up-mid-body", hang_up_mid_body, "hung-up"),
    _k("hang-up-waiting-score", hang_up_waiting_score, "hung-up"),
    _k("rest-burst", rest_burst, "200", "503"),
)


def cycle_once(http: httpx.Client) -> list[str]:
    """Unload ``cycled``, load it again, and score it once: the outcomes of the three."""
    out = [str(http.post("/v2/repository/models/cycled/unload").status_code)]
    out.append(str(http.post("/v2/repository/models/cycled/load").status_code))
    body = {
        "inputs": [
            {"name": "ids", "datatype": "INT64", "shape": [1, 4], "data": IDS.ravel().tolist()}
        ]
    }
    reply = http.post("/v2/models/cycled/infer", json=body)
    ok = reply.status_code == 200 and reply.json()["outputs"][0]["data"] == [0, 1, 2, 3]
    out.append("OK" if ok else f"infer-{reply.status_code}")
    return out
