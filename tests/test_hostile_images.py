"""Hostile image bodies on every route that takes images, on the embedded server.

/score (the raw body), V2 REST (a BYTES input in the binary extension, and the raw body
with ``Inference-Header-Content-Length: 0``) and V2 gRPC (``raw_input_contents`` and
``bytes_contents``) all decode through one function; each refusal here must come back the
same on all five, as a 4xx (gRPC: its twin) with a message saying what was wrong, and a
good image must score right after it. Images that look odd but are fine (CMYK, 16-bit,
palettes with transparency, APNG, MPO, EXIF rotation, trailing bytes…) must score to the
same numbers on every route. The package under azmlinfsrv has its twin of the refusals in
``test_hostile_azureml.py``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from grpc_helpers import GrpcServed, grpc_serving, raw_stub
from images import HOSTILE_IMAGES, encode, image, jpeg, png
from scorepack.v2 import array_to_bytes

pytest.importorskip("onnxruntime")

from scorepack.proto.messages import messages

TIMEOUT = 60.0
GOOD = jpeg(40, 30, seed=1)

HOSTILE = HOSTILE_IMAGES


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    """conv (image [N, 3, 8, 8] → probs [N, 4]) over HTTP and gRPC, default limits."""
    from onnx_models import conv_classifier
    from scorepack_onnx import OnnxBackend

    root = tmp_path_factory.mktemp("hostile_images")
    backend = OnnxBackend(conv_classifier(root / "conv.onnx"), device="cpu")
    with grpc_serving({"conv": backend}) as served:
        yield served


# --- the five ways in: each returns (status, message, probs or None) ---------------------

Answer = tuple[int, str, "np.ndarray | None"]


def _http(served: GrpcServed, path: str, body: bytes, headers: dict[str, str]) -> Any:
    import httpx

    return httpx.post(served.url + path, content=body, headers=headers, timeout=TIMEOUT)


def via_score(served: GrpcServed, body: bytes) -> Answer:
    got = _http(served, "/score?model=conv&raw=true", body, {"content-type": "image/jpeg"})
    if got.status_code != 200:
        return got.status_code, got.json()["error"]["message"], None
    return 200, "", np.array(got.json()["outputs"]["probs"], np.float32)


def _score_code(served: GrpcServed, body: bytes) -> str:
    got = _http(served, "/score?model=conv", body, {"content-type": "application/octet-stream"})
    return str(got.json()["error"]["code"])


def _v2(got: Any) -> Answer:
    if got.status_code != 200:
        return got.status_code, got.json()["error"], None
    return 200, "", np.array(got.json()["outputs"][0]["data"], np.float32).reshape(1, -1)


def via_v2_binary(served: GrpcServed, body: bytes) -> Answer:
    raw = array_to_bytes(np.array([body], dtype=object), "BYTES")
    head = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    header = json.dumps(head).encode()
    headers = {"inference-header-content-length": str(len(header))}
    return _v2(_http(served, "/v2/models/conv/infer", header + raw, headers))


def via_v2_raw(served: GrpcServed, body: bytes) -> Answer:
    headers = {"inference-header-content-length": "0"}
    return _v2(_http(served, "/v2/models/conv/infer", body, headers))


_HTTP_OF_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
}


def _grpc(served: GrpcServed, request: Any) -> Answer:
    with raw_stub(served, "ModelInfer") as call:
        try:
            reply = call(request, timeout=TIMEOUT)
        except grpc.RpcError as error:
            return _HTTP_OF_GRPC.get(error.code(), 500), str(error.details()), None
    return 200, "", np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(1, -1)


def via_grpc_raw(served: GrpcServed, body: bytes) -> Answer:
    request = messages.ModelInferRequest(model_name="conv")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(body).to_bytes(4, "little") + body)
    return _grpc(served, request)


def via_grpc_contents(served: GrpcServed, body: bytes) -> Answer:
    request = messages.ModelInferRequest(model_name="conv")
    item = request.inputs.add(name="image", datatype="BYTES", shape=[1])
    item.contents.bytes_contents.append(body)
    return _grpc(served, request)


ROUTES: dict[str, Callable[[GrpcServed, bytes], Answer]] = {
    "/score": via_score,
    "v2 rest binary": via_v2_binary,
    "v2 rest raw body": via_v2_raw,
    "grpc raw_input_contents": via_grpc_raw,
    "grpc bytes_contents": via_grpc_contents,
}


def scores_good(served: GrpcServed, route: str) -> np.ndarray:
    status, message, probs = ROUTES[route](served, GOOD)
    assert status == 200, message
    assert probs is not None and probs.shape == (1, 4)
    return probs


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_image_is_refused_and_a_good_one_scores(
    served: GrpcServed, case: str, route: str
) -> None:
    body, status, words = HOSTILE[case]
    got_status, message, _ = ROUTES[route](served, body)
    assert got_status == status, message
    if route == "/score":
        code = "image_too_large" if status == 413 else "invalid_image"
        assert _score_code(served, body) == code
    for word in words:
        assert word in message, (word, message)
    scores_good(served, route)


# --- odd but fine: every route scores them, to the same numbers ----------------------------


def _exif_rotated() -> bytes:
    # orientation 6 (turn 90° clockwise to view): scorepack does not apply it, on any route
    picture = image(64, 48, seed=4)
    exif = picture.getexif()
    exif[0x0112] = 6
    return encode(picture, "JPEG", exif=exif.tobytes(), quality=90)


def _animated_png() -> bytes:
    frames = [image(32, 24, seed=i) for i in range(5)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _mpo() -> bytes:
    buf = io.BytesIO()
    image(32, 24, seed=1).save(buf, "MPO", save_all=True, append_images=[image(32, 24, seed=2)])
    return buf.getvalue()


def _png16() -> bytes:
    values = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    return encode(Image.fromarray(values), "PNG")  # Pillow saves I;16 as a 16-bit PNG


def _ycck() -> bytes:
    # Pillow writes CMYK with Adobe transform 0; transform 2 says YCCK, which libjpeg
    # converts back to CMYK
    body = encode(image(64, 48).convert("CMYK"), "JPEG", quality=90)
    at = body.index(b"Adobe") + 11
    return body[:at] + b"\x02" + body[at + 1 :]


ODD_BUT_FINE: dict[str, bytes] = {
    "cmyk jpeg": encode(image(64, 48).convert("CMYK"), "JPEG", quality=90),
    "ycck jpeg": _ycck(),
    "greyscale jpeg": jpeg(64, 48, "L"),
    "progressive jpeg": encode(image(64, 48), "JPEG", progressive=True),
    "exif-rotated jpeg": _exif_rotated(),
    "jpeg with trailing bytes": jpeg(64, 48) + b"PK\x03\x04" + b"\x00" * 64,
    "mpo (first frame)": _mpo(),
    "1x1 jpeg": jpeg(1, 1),
    "1x3000 png": png(1, 3000),
    "16-bit greyscale png": _png16(),
    "palette png with transparency": encode(image(64, 48).convert("P"), "PNG", transparency=3),
    "greyscale+alpha png": png(64, 48, "LA"),
    "rgba png": png(64, 48, "RGBA"),
    "animated png (first frame)": _animated_png(),
    "png with trailing bytes": png(64, 48) + b"<html></html>",
}


@pytest.mark.parametrize("case", list(ODD_BUT_FINE))
def test_odd_images_score_the_same_on_every_route(served: GrpcServed, case: str) -> None:
    body = ODD_BUT_FINE[case]
    answers = {route: via(served, body) for route, via in ROUTES.items()}
    expected = answers["/score"][2]
    assert expected is not None, answers["/score"][1]
    for route, (status, message, probs) in answers.items():
        assert status == 200, (route, message)
        np.testing.assert_allclose(probs, expected, rtol=1e-6, err_msg=route)
