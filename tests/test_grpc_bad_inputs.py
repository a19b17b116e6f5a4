"""Every bad-input case of ``/score`` has its V2 gRPC twin: the right status code with a
message saying what was wrong, and the server keeps serving (a good request follows each).

Images travel as a BYTES input (what ``/score`` gets as a body); tensors as raw or typed
inputs (what ``/score`` gets as JSON). Over gRPC, 400s are INVALID_ARGUMENT and 413s
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from grpc_helpers import GrpcServed, grpc_serving, raw_stub
from images import encode, image, jpeg, png, truncated_jpeg, truncated_png, with_declared_size
from scorepack.v2 import datatype_of
from serving_helpers import scoring_config

pytest.importorskip("onnxruntime")

from scorepack.proto.messages import SERVICE, messages

MAX_BODY = 64 * 1024
MAX_PIXELS = 256 * 256
TIMEOUT = 30.0
GOOD_IMAGE = jpeg(40, 30, seed=1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    """conv (image [N, 3, 8, 8] → probs [N, 4]) and pair (a float32 [N, 3] + b int64 [N, 3])."""
    from onnx_models import conv_classifier, two_inputs
    from scorepack_onnx import OnnxBackend

    root = tmp_path_factory.mktemp("grpc_bad")
    backends = {
        "conv": OnnxBackend(conv_classifier(root / "conv.onnx"), device="cpu"),
        "pair": OnnxBackend(two_inputs(root / "pair.onnx"), device="cpu"),
    }
    config = scoring_config(max_body_bytes=MAX_BODY, max_image_pixels=MAX_PIXELS)
    with grpc_serving(backends, config=config) as served:
        yield served


def _image_request(body: bytes, model: str = "conv", name: str = "image") -> Any:
    request = messages.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(body).to_bytes(4, "little") + body)
    return request


def _pair_request(
    a: np.ndarray | None = None, b: np.ndarray | None = None, **renamed: np.ndarray
) -> Any:
    request = messages.ModelInferRequest(model_name="pair")
    tensors: dict[str, np.ndarray] = {}
    if a is not None:
        tensors["a"] = a
    if b is not None:
        tensors["b"] = b
    tensors.update(renamed)
    for name, array in tensors.items():
        datatype = datatype_of(array.dtype)
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return request


GOOD_A = np.ones((1, 3), np.float32)
GOOD_B = np.ones((1, 3), np.int64)


def still_serves(served: GrpcServed) -> None:
    """Good requests after the bad one, to both models: the server is unharmed."""
    with raw_stub(served, "ModelInfer") as call:
        conv = call(_image_request(GOOD_IMAGE), timeout=TIMEOUT)
        assert [o.name for o in conv.outputs] == ["probs"]
        pair = call(_pair_request(GOOD_A, GOOD_B), timeout=TIMEOUT)
        total = np.frombuffer(pair.raw_output_contents[0], "<f4")
        np.testing.assert_array_equal(total, [2, 2, 2])


def refused(served: GrpcServed, request: Any, code: grpc.StatusCode, *words: str) -> str:
    """Send a bad request: check its status and the words of its message, then good ones."""
    with raw_stub(served, "ModelInfer") as call:
        with pytest.raises(grpc.RpcError) as excinfo:
            call(request, timeout=TIMEOUT)
    error = excinfo.value
    assert error.code() == code, error.details()
    message = error.details()
    assert message
    for word in words:
        assert word in message, (word, message)
    still_serves(served)
    return str(message)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
TOO_LARGE = grpc.StatusCode.RESOURCE_EXHAUSTED


# --- images as BYTES ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", []),
        (b"hello, this is not an image at all", ["JPEG or PNG"]),
        (truncated_jpeg(jpeg(64, 48, seed=2)), ["JPEG"]),
        (jpeg(64, 48, seed=2)[:40], ["JPEG"]),
        (truncated_png(png(64, 48, seed=3)), ["PNG"]),
        (encode(image(8, 8), "GIF"), []),
    ],
    ids=["empty", "not an image", "truncated jpeg", "jpeg head only", "truncated png", "gif"],
)
def test_bad_image_bytes(served: GrpcServed, body: bytes, words: list[str]) -> None:
    refused(served, _image_request(body), INVALID, *words)


@pytest.mark.parametrize(
    "body",
    [
        jpeg(300, 300, seed=4),
        with_declared_size(png(32, 32), 5000, 5000),
        with_declared_size(jpeg(32, 32), 3000, 3000),
        with_declared_size(png(32, 32), 100_000, 100_000),
    ],
    ids=["real jpeg", "png header", "jpeg header", "huge png header"],
)
def test_image_over_the_pixel_limit(served: GrpcServed, body: bytes) -> None:
    assert len(body) < MAX_BODY
    refused(served, _image_request(body), TOO_LARGE, str(MAX_PIXELS))


def test_message_over_the_body_limit(served: GrpcServed) -> None:
    body = b"\xff\xd8\xff" + bytes(MAX_BODY)
    refused(served, _image_request(body), TOO_LARGE)


def test_image_for_a_model_with_other_inputs_too(served: GrpcServed) -> None:
    refused(served, _image_request(GOOD_IMAGE, model="pair", name="a"), INVALID, "'a'")


def test_unknown_model(served: GrpcServed) -> None:
    refused(served, _image_request(GOOD_IMAGE, model="nope"), grpc.StatusCode.NOT_FOUND, "'nope'")


def test_unknown_version(served: GrpcServed) -> None:
    request = _image_request(GOOD_IMAGE)
    request.model_version = "9"
    refused(served, request, grpc.StatusCode.NOT_FOUND, "'9'")


# --- tensors --------------------------------------------------------------------------------


def test_wrong_input_name(served: GrpcServed) -> None:
    refused(served, _pair_request(GOOD_A, GOOD_B, c=GOOD_A), INVALID, "'c'")


def test_missing_input(served: GrpcServed) -> None:
    refused(served, _pair_request(GOOD_A), INVALID, "'b'")


@pytest.mark.parametrize(
    "a",
    [np.ones((1, 4), np.float32), np.ones((1, 1, 3), np.float32), np.ones((), np.float32)],
    ids=["wrong width", "extra dimension", "scalar"],
)
def test_wrong_shape(served: GrpcServed, a: np.ndarray) -> None:
    refused(served, _pair_request(a, GOOD_B), INVALID, "'a'")


def test_wrong_datatype(served: GrpcServed) -> None:
    # FP32 for the INT64 input, FP64 for the FP32 one: refused as Triton refuses them
    words = ("FP32", "INT64", "unexpected datatype")
    refused(served, _pair_request(GOOD_A, np.ones((1, 3), np.float32)), INVALID, "'b'", *words)
    refused(
        served,
        _pair_request(np.ones((1, 3), np.float64), GOOD_B),
        INVALID,
        "'a'",
        "FP64",
        "unexpected datatype",
    )


def test_inputs_that_disagree_on_the_batch(served: GrpcServed) -> None:
    refused(served, _pair_request(np.ones((2, 3), np.float32), GOOD_B), INVALID, "batch")


def test_no_rows(served: GrpcServed) -> None:
    refused(served, _pair_request(np.ones((0, 3), np.float32), np.ones((0, 3), np.int64)), INVALID)


def _edited(edit: Callable[[Any], None]) -> Any:
    request = _pair_request(GOOD_A, GOOD_B)
    edit(request)
    return request


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda r: r.raw_input_contents.__setitem__(0, b"\x00" * 5), ["'a'", "bytes"]),
        (lambda r: r.raw_input_contents.pop(), ["raw_input_contents"]),
        (lambda r: setattr(r.inputs[0], "datatype", "FP128"), ["FP128"]),
        (lambda r: r.inputs[0].shape.__setitem__(0, -1), ["'a'"]),
        (lambda r: r.inputs[0].contents.fp32_contents.extend([1, 2, 3]), ["'a'", "raw"]),
    ],
    ids=["raw size", "raw count", "unknown datatype", "negative dimension", "raw and contents"],
)
def test_malformed_raw_tensors(
    served: GrpcServed, edit: Callable[[Any], None], words: list[str]
) -> None:
    refused(served, _edited(edit), INVALID, *words)


def _typed(a_values: list[Any], b_values: list[Any], b_field: str = "int64_contents") -> Any:
    request = messages.ModelInferRequest(model_name="pair")
    a = request.inputs.add(name="a", datatype="FP32", shape=[1, 3])
    a.contents.fp32_contents.extend(a_values)
    b = request.inputs.add(name="b", datatype="INT64", shape=[1, 3])
    getattr(b.contents, b_field).extend(b_values)
    return request


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (_typed([1, 2], [1, 2, 3]), ["'a'"]),
        (_typed([1, 2, 3], [1, 2, 3], "fp32_contents"), ["'b'", "int64_contents"]),
        # the twin of /score's "true/false only for bool inputs": protobuf's typed fields
        # keep booleans in bool_contents, which an INT64 input refuses
        (
            _typed([1, 2, 3], [True, False, True], "bool_contents"),
            ["'b'", "INT64", "bool_contents"],
        ),
    ],
    ids=["too few values", "wrong contents field", "booleans for numbers"],
)
def test_malformed_typed_tensors(served: GrpcServed, request_: Any, words: list[str]) -> None:
    refused(served, request_, INVALID, *words)


def test_a_message_given_twice_is_not_a_silent_last_one_wins(served: GrpcServed) -> None:
    # The twin of a duplicate JSON key: protobuf has no keys to repeat, but two messages
    # written back to back parse as one, scalar fields last-wins and repeated ones
    # appended (the protobuf encoding's rule, which no parser can refuse). The inputs
    # then come twice, and that is refused by name rather than one copy scored.
    twice = _pair_request(GOOD_A, GOOD_B).SerializeToString() * 2
    with grpc.insecure_channel(served.grpc_address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/ModelInfer", response_deserializer=messages.ModelInferResponse.FromString
        )
        with pytest.raises(grpc.RpcError) as excinfo:
            call(twice, timeout=TIMEOUT)
    assert excinfo.value.code() == INVALID, excinfo.value.details()
    assert "'a' is given twice" in excinfo.value.details()
    still_serves(served)


def test_broken_bytes_length_prefix(served: GrpcServed) -> None:
    request = messages.ModelInferRequest(model_name="conv")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append((999).to_bytes(4, "little") + b"\xff\xd8\xff")
    refused(served, request, INVALID, "'image'")


def test_typed_good_request(served: GrpcServed) -> None:
    with raw_stub(served, "ModelInfer") as call:
        response = call(_typed([1, 2, 3], [4, 5, 6]), timeout=TIMEOUT)
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4"), [5, 7, 9])
