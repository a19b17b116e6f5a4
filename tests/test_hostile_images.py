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
from serving_helpers import scoring_config

pytest.importorskip("onnxruntime")

from scorepack.proto.messages import messages

TIMEOUT = 60.0
MOST = 4
GOOD = jpeg(40, 30, seed=1)

HOSTILE = HOSTILE_IMAGES


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    """conv (image [N, 3, 8, 8] → probs [N, 4]) over HTTP and gRPC, default limits."""
    from onnx_models import conv_classifier
    from scorepack_onnx import OnnxBackend

    root = tmp_path_factory.mktemp("hostile_images")
    backend = OnnxBackend(conv_classifier(root / "conv.onnx"), device="cpu")
    # batches of at most 4: a V2 request may then hold at most 4 images
    with grpc_serving({"conv": backend}, config=scoring_config(max_batch_size=MOST)) as served:
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
    return 200, "", np.array(got.json()["outputs"][0]["data"], np.float32).reshape(-1, 4)


def via_v2_binary(served: GrpcServed, body: bytes, *more: bytes) -> Answer:
    raw = array_to_bytes(np.array([body, *more], dtype=object), "BYTES")
    head = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1 + len(more)],
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
    return 200, "", np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(-1, 4)


def via_grpc_raw(served: GrpcServed, body: bytes, *more: bytes) -> Answer:
    request = messages.ModelInferRequest(model_name="conv")
    request.inputs.add(name="image", datatype="BYTES", shape=[1 + len(more)])
    raw = b"".join(len(b).to_bytes(4, "little") + b for b in (body, *more))
    request.raw_input_contents.append(raw)
    return _grpc(served, request)


def via_grpc_contents(served: GrpcServed, body: bytes, *more: bytes) -> Answer:
    request = messages.ModelInferRequest(model_name="conv")
    item = request.inputs.add(name="image", datatype="BYTES", shape=[1 + len(more)])
    item.contents.bytes_contents.extend([body, *more])
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


# --- many images in one V2 request ---------------------------------------------------------

MANY_ROUTES = {
    "v2 rest binary": via_v2_binary,
    "grpc raw_input_contents": via_grpc_raw,
    "grpc bytes_contents": via_grpc_contents,
}


@pytest.mark.parametrize("route", sorted(MANY_ROUTES))
def test_more_images_in_one_request_than_a_batch_is_refused(served: GrpcServed, route: str) -> None:
    # each 1x1 PNG (69 bytes) becomes a whole input row: unbounded, 16 MiB of them would
    # ask for 130 GB of ResNet50 rows; at most the max batch size, as Triton
    tiny = png(1, 1)
    status, message, _ = MANY_ROUTES[route](served, tiny, *[tiny] * MOST)
    assert status == 400, message
    assert f"holds {MOST + 1} images" in message and f"at most {MOST}" in message, message
    status, message, probs = MANY_ROUTES[route](served, GOOD, *[tiny] * (MOST - 1))
    assert status == 200, message
    assert probs is not None and probs.shape == (MOST, 4)
    scores_good(served, route)


# --- formats other than JPEG and PNG: refused, even where Pillow could open them ------------


def _saved(fmt: str, picture: Image.Image | None = None, **params: Any) -> bytes:
    return encode(picture or image(32, 24), fmt, **params)


def _animated(fmt: str, **params: Any) -> bytes:
    frames = [image(32, 24, seed=i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], **params)
    return buf.getvalue()


def _float_tiff() -> bytes:
    return _saved(
        "TIFF", Image.fromarray(np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32))
    )


OTHER_FORMATS: dict[str, bytes] = {
    "webp lossless": _saved("WEBP", lossless=True),
    "webp animated": _animated("WEBP"),
    "gif animated": _animated("GIF"),
    "tiff 16-bit": _saved("TIFF", Image.fromarray(np.full((24, 32), 40000, np.uint16))),
    "tiff float": _float_tiff(),
    "tiff deflate": _saved("TIFF", compression="tiff_adobe_deflate"),
    "tiff multi-page": _animated("TIFF"),
    "bmp": _saved("BMP"),
    # a BMP header declaring 100000 x -100000 pixels, RLE8-compressed
    "bmp rle huge": b"BM"
    + bytes(12)
    + (40).to_bytes(4, "little")
    + (100_000).to_bytes(4, "little", signed=True)
    + (-100_000).to_bytes(4, "little", signed=True)
    + b"\x01\x00\x08\x00\x01\x00\x00\x00"
    + bytes(20),
    "ico": _saved("ICO"),
    "cur": b"\x00\x00\x02\x00\x01\x00" + _saved("ICO")[6:],
    "psd": b"8BPS\x00\x01"
    + bytes(6)
    + b"\x00\x03"
    + (24).to_bytes(4, "big") * 2
    + b"\x00\x08\x00\x03",
}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("case", list(OTHER_FORMATS))
def test_other_formats_are_refused_on_every_route(
    served: GrpcServed, case: str, route: str
) -> None:
    status, message, _ = ROUTES[route](served, OTHER_FORMATS[case])
    assert status == 400, message
    # the V2 raw body also takes raw tensor bytes: its message says both
    assert "JPEG or PNG" in message, message
    scores_good(served, route)
