"""Clients for the Open Inference Protocol (KServe V2): REST and gRPC, one interface.

:func:`v2_client` gives a :class:`V2Client` for a URL and a protocol: ``"v2"`` (REST, with
the binary tensor extension both ways, as tritonclient does by default) or ``"grpc"``
(``inference.GRPCInferenceService``; needs the ``grpc`` extra). Both take named NumPy
arrays and give named NumPy arrays back, send ``Authorization: Bearer KEY`` when given a
key, and raise :class:`~scorepack.errors.RemoteError` for an error answer (gRPC codes as
their HTTP equivalents).

Files become inputs with :func:`file_inputs`: an image (JPEG, PNG) is a BYTES input of
shape ``[1]``, decoded and preprocessed by the server as ``/score`` does; a JSON tensors
file (``{"inputs": {"name": [...]}}``, as ``/score`` takes) becomes typed inputs, with each
input's datatype from the model's metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
import orjson

from .codecs import sniff
from .errors import BadRequestError, InvalidTensorError, RemoteError
from .v2.datatypes import DATATYPES, array_from_bytes, array_to_bytes, datatype_of

__all__ = [
    "PROTOCOLS",
    "V2Client",
    "V2Result",
    "array_datatype",
    "file_inputs",
    "rest_infer_body",
    "v2_client",
]

#: ``scorepack score/bench --protocol``: Azure ML's /score, V2 REST, V2 gRPC
PROTOCOLS = ("score", "v2", "grpc")


def array_datatype(array: np.ndarray) -> str:
    """The V2 datatype of an array (object and string arrays are BYTES)."""
    try:
        return datatype_of(array.dtype)
    except ValueError:
        raise BadRequestError(f"No V2 datatype for NumPy dtype {array.dtype}.") from None


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The NumPy dtype of a V2 datatype (BYTES: object), from the server's own table
    (:data:`scorepack.v2.datatypes.DATATYPES`).

    BF16 is refused here: NumPy has no bfloat16, and a client handing back float32 where a
    server said BF16 would hide the conversion (the server widens BF16 inputs itself).
    """
    if datatype == "BF16" or datatype not in DATATYPES:
        raise BadRequestError(f"Unknown V2 datatype {datatype!r}.")
    return DATATYPES[datatype]


@dataclass(frozen=True)
class V2Result:
    """A V2 inference answer: the outputs by name, and where they came from."""

    outputs: dict[str, np.ndarray]
    model_name: str
    model_version: str | None
    elapsed_ms: float
    id: str | None = None
    batch_size: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


class V2Client(Protocol):
    """What both V2 clients do."""

    def live(self) -> bool: ...

    def ready(self) -> bool: ...

    def model_ready(self, model: str, version: str | None = None) -> bool: ...

    def server_metadata(self) -> dict[str, Any]: ...

    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]: ...

    def models(self) -> list[dict[str, Any]]: ...

    def infer(
        self,
        model: str,
        inputs: dict[str, Any],
        *,
        version: str | None = None,
        outputs: list[str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> V2Result: ...

    def close(self) -> None: ...

    def __enter__(self) -> V2Client: ...

    def __exit__(self, *exc: object) -> None: ...


def v2_client(
    url: str, protocol: str = "v2", *, key: str | None = None, timeout: float = 60.0
) -> V2Client:
    """A client for ``url`` speaking ``protocol`` (``"v2"`` REST or ``"grpc"``)."""
    if protocol == "v2":
        return RestV2Client(url, key=key, timeout=timeout)
    if protocol == "grpc":
        from .proto import require_grpc

        require_grpc("The gRPC client (--protocol grpc)")
        from .client_grpc import GrpcV2Client

        return GrpcV2Client(url, key=key, timeout=timeout)
    raise ValueError(f"protocol must be 'v2' or 'grpc', not {protocol!r}")


def default_model(client: V2Client) -> str:
    """The one model a server serves; an error naming them when it serves several."""
    names = sorted({m["name"] for m in client.models()})
    if len(names) == 1:
        return names[0]
    if not names:
        raise BadRequestError("The server serves no model.")
    raise BadRequestError(
        f"The server serves several models ({', '.join(names)}): pick one with --model."
    )


def file_inputs(data: bytes, metadata: dict[str, Any]) -> dict[str, np.ndarray]:
    """A file's bytes as named inputs for the model ``metadata`` describes."""
    specs = metadata.get("inputs", [])
    if sniff(data) in ("jpeg", "png"):
        if len(specs) != 1:
            names = [s["name"] for s in specs]
            raise BadRequestError(
                f"The model takes {len(specs)} inputs ({names}), so an image alone cannot "
                "fill them: send a JSON tensors file."
            )
        return {specs[0]["name"]: np.array([data], dtype=object)}
    try:
        body = orjson.loads(data)
        tensors = body["inputs"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise BadRequestError(
            'The file is neither an image nor JSON tensors ({"inputs": {"name": [...]}}).'
        ) from None
    if not isinstance(tensors, dict):
        if len(specs) != 1:
            raise BadRequestError("A JSON list of inputs needs a model with one input.")
        tensors = {specs[0]["name"]: tensors}
    types = {s["name"]: s["datatype"] for s in specs}
    inputs = {}
    for name, value in tensors.items():
        datatype = types.get(name)
        if datatype == "BYTES":
            array = np.array(value, dtype=object)
            inputs[name] = np.vectorize(_as_bytes, otypes=[object])(array) if array.size else array
        else:
            inputs[name] = np.asarray(value, dtype=numpy_dtype(datatype) if datatype else None)
    return inputs


def _as_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _tensor_bytes(array: np.ndarray, datatype: str) -> bytes:
    """An input's raw bytes (BYTES length-prefixed), as the server reads them."""
    numpy_dtype(datatype)  # the client's refusals first (BF16)
    return array_to_bytes(array, datatype)


def decode_raw(raw: bytes, datatype: str, shape: list[int], name: str = "") -> np.ndarray:
    """Raw V2 tensor bytes (binary extension, or gRPC raw contents) as an array; bytes
    that do not fit the datatype and shape are a :class:`BadRequestError`."""
    numpy_dtype(datatype)
    try:
        return array_from_bytes(name, datatype, shape, raw)
    except InvalidTensorError as exc:
        raise BadRequestError(
            f"The answer's tensor {name!r} cannot be decoded: {exc.message}"
        ) from None


# --- REST -------------------------------------------------------------------------------


def rest_infer_body(
    inputs: dict[str, Any],
    *,
    outputs: list[str] | None = None,
    request_id: str | None = None,
    binary_output: bool = True,
) -> tuple[bytes, int]:
    """A binary-extension V2 infer body and its JSON header's length (the value of
    ``Inference-Header-Content-Length``): every input as binary data."""
    header_inputs = []
    blobs = []
    for name, value in inputs.items():
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        datatype = array_datatype(array)
        blob = _tensor_bytes(array, datatype)
        blobs.append(blob)
        header_inputs.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
    header: dict[str, Any] = {"inputs": header_inputs}
    if request_id:
        header["id"] = request_id
    if outputs:
        header["outputs"] = [
            {"name": n, "parameters": {"binary_data": binary_output}} for n in outputs
        ]
    else:
        header["parameters"] = {"binary_data_output": binary_output}
    head = orjson.dumps(header)
    return head + b"".join(blobs), len(head)


def _model_path(model: str, version: str | None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    if version:
        path += f"/versions/{quote(str(version), safe='')}"
    return path


class RestV2Client:
    """V2 over HTTP/JSON, with binary tensors both ways (as tritonclient sends them)."""

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None

    def _get(self, path: str) -> httpx.Response:
        return self._http.get(self.base_url + path, headers=self._headers)

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise _rest_error(response)
        return orjson.loads(response.content) if response.content else {}

    def live(self) -> bool:
        return self._get("/v2/health/live").status_code == 200

    def ready(self) -> bool:
        return self._get("/v2/health/ready").status_code == 200

    def model_ready(self, model: str, version: str | None = None) -> bool:
        response = self._get(_model_path(model, version) + "/ready")
        if response.status_code == 404:
            raise _rest_error(response)
        return response.status_code == 200

    def server_metadata(self) -> dict[str, Any]:
        return dict(self._json(self._get("/v2")))

    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        return dict(self._json(self._get(_model_path(model, version))))

    def models(self) -> list[dict[str, Any]]:
        response = self._http.post(
            self.base_url + "/v2/repository/index", headers=self._headers, content=b"{}"
        )
        return list(self._json(response))

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
        body, header_length = rest_infer_body(inputs, outputs=outputs, request_id=request_id)
        headers = {
            **self._headers,
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        }
        started = time.perf_counter()
        response = self._http.post(
            self.base_url + _model_path(model, version) + "/infer",
            content=body,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code >= 400:
            raise _rest_error(response)
        return _rest_result(response, elapsed)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RestV2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rest_result(response: httpx.Response, elapsed_ms: float) -> V2Result:
    content = response.content
    length = response.headers.get("inference-header-content-length")
    head_end = int(length) if length is not None else len(content)
    header = orjson.loads(content[:head_end])
    offset = head_end
    outputs: dict[str, np.ndarray] = {}
    for out in header.get("outputs", []):
        shape = [int(d) for d in out.get("shape", [])]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = content[offset : offset + int(size)]
            offset += int(size)
            outputs[out["name"]] = decode_raw(raw, out["datatype"], shape, out["name"])
        else:
            dtype = numpy_dtype(out["datatype"])
            data = out.get("data", [])
            if out["datatype"] == "BYTES":
                data = [_as_bytes(d) for d in data]
            outputs[out["name"]] = np.asarray(data, dtype=dtype).reshape(shape)
    batch = response.headers.get("x-scorepack-batch-size")
    return V2Result(
        outputs=outputs,
        model_name=header.get("model_name", ""),
        model_version=header.get("model_version"),
        elapsed_ms=elapsed_ms,
        id=header.get("id"),
        batch_size=int(batch) if batch else None,
        parameters=header.get("parameters") or {},
    )


def _rest_error(response: httpx.Response) -> RemoteError:
    try:
        error = orjson.loads(response.content)["error"]
        if isinstance(error, dict):  # /score's {"error": {"code", "message"}}
            return RemoteError(response.status_code, str(error["message"]), str(error["code"]))
        return RemoteError(response.status_code, str(error))
    except Exception:
        text = response.text.strip()[:500] or response.reason_phrase
        return RemoteError(response.status_code, text)


def read_file(path: str | Path) -> bytes:
    """A file's bytes (images and JSON tensor files)."""
    return Path(path).read_bytes()
