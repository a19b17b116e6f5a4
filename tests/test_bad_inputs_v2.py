"""The V2 twin of tests/test_bad_inputs.py: every bad request /score refuses, sent to
POST /v2/models/NAME/infer instead, gets its 4xx with {"error": "message"} saying what was
wrong, and the server keeps serving: each case is followed by a good V2 request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from images import encode, image, jpeg, png, truncated_jpeg, truncated_png, with_declared_size
from scorepack.v2 import array_to_bytes
from serving_helpers import Served, scoring_config, serving, tf_backend
from test_bad_inputs import _raw_exchange

pytest.importorskip("tensorflow")

MAX_BODY = 64 * 1024
MAX_PIXELS = 256 * 256
GOOD = jpeg(40, 30, seed=1)


@pytest.fixture(scope="module")
def cnn(small_cnn_path: Path) -> Iterator[Served]:
    """small_cnn (image [batch, 32, 32, 3] -> probs [batch, 10]) with small input limits."""
    config = scoring_config(max_body_bytes=MAX_BODY, max_image_pixels=MAX_PIXELS)
    with serving(tf_backend(small_cnn_path), config) as served:
        yield served


@pytest.fixture(scope="module")
def multi(multi_input_path: Path) -> Iterator[Served]:
    """multi_input: image [batch, 16, 16, 3] + extra [batch, 4] -> scores [batch, 5]."""
    with serving(tf_backend(multi_input_path)) as served:
        yield served


@pytest.fixture(scope="module")
def ints(int_inputs_path: Path) -> Iterator[Served]:
    """int_inputs: ids int32 [batch, 3] + weights float32 [batch, 3] -> score [batch]."""
    with serving(tf_backend(int_inputs_path)) as served:
        yield served


def infer_path(served: Served) -> str:
    return f"/v2/models/{served.scorer.name}/infer"


def post(served: Served, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return served.client.post(infer_path(served), content=body, headers=headers or {})


def post_json(served: Served, document: Any) -> httpx.Response:
    return post(served, json.dumps(document).encode(), {"content-type": "application/json"})


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def images(served: Served, *bodies: bytes, name: str = "image", **extra: Any) -> httpx.Response:
    """The images as one BYTES input in the binary extension (plus JSON ``extra`` inputs)."""
    raw = array_to_bytes(np.array(list(bodies), dtype=object), "BYTES")
    head = {
        "inputs": [
            {
                "name": name,
                "datatype": "BYTES",
                "shape": [len(bodies)],
                "parameters": {"binary_data_size": len(raw)},
            },
            *extra.values(),
        ]
    }
    header = json.dumps(head).encode()
    return post(served, header + raw, {"inference-header-content-length": str(len(header))})


def still_serves(served: Served) -> None:
    """A good V2 request after the bad one: the server is unharmed."""
    signature = served.scorer.signature
    if signature.input_names == ["image"]:
        response = images(served, GOOD)
    else:
        inputs = []
        for spec in signature.inputs:
            shape = [1, *(d or 1 for d in spec.item_shape)]
            datatype = {"float32": "FP32", "int32": "INT32"}[spec.dtype]
            zeros = np.zeros(shape, dtype=spec.dtype).tolist()
            inputs.append(tensor(spec.name, datatype, shape, zeros))
        response = post_json(served, {"inputs": inputs})
    assert response.status_code == 200, response.text


def refused(served: Served, status: int, *words: str, response: httpx.Response) -> str:
    """Check a V2 error reply (status, words in the message), then a good request."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    for word in words:
        assert word in body["error"], (word, body["error"])
    still_serves(served)
    return str(body["error"])


# --- bodies that are not images --------------------------------------------------------


def test_empty_body(cnn: Served) -> None:
    refused(cnn, 400, "empty", response=post(cnn, b""))
    refused(cnn, 400, "empty", response=post(cnn, b"", {"inference-header-content-length": "0"}))
    refused(cnn, 400, "not a JPEG or PNG", response=images(cnn, b""))


def test_not_an_image(cnn: Served) -> None:
    body = b"hello, this is not an image at all"
    refused(cnn, 400, "not a JPEG or PNG", response=images(cnn, body))
    raw = post(cnn, body, {"inference-header-content-length": "0"})
    refused(cnn, 400, "JPEG or PNG", response=raw)


def test_truncated_jpeg(cnn: Served) -> None:
    refused(cnn, 400, "JPEG", response=images(cnn, truncated_jpeg(jpeg(64, 48, seed=2))))


def test_jpeg_with_only_its_first_bytes(cnn: Served) -> None:
    refused(cnn, 400, "JPEG", response=images(cnn, jpeg(64, 48, seed=2)[:40]))


def test_truncated_png(cnn: Served) -> None:
    refused(cnn, 400, "PNG", response=images(cnn, truncated_png(png(64, 48, seed=3))))


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"a cat"),
        ("image/gif", encode(image(8, 8), "GIF")),
        ("image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 "),
        ("application/xml", b"<image/>"),
        ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--"),
    ],
)
def test_unsupported_content_type(cnn: Served, content_type: str, body: bytes) -> None:
    bare = content_type.split(";")[0]
    refused(cnn, 415, bare, response=post(cnn, body, {"content-type": content_type}))


# --- size limits -----------------------------------------------------------------------


def test_content_length_over_the_limit_is_refused_before_the_body(cnn: Served) -> None:
    host = urlsplit(cnn.url).netloc
    head = (
        f"POST {infer_path(cnn)} HTTP/1.1\r\nHost: {host}\r\n"
        "Inference-Header-Content-Length: 0\r\n"
        f"Content-Length: {1024 * 1024 * 1024}\r\n\r\n"
    ).encode()
    status, headers, _ = _raw_exchange(cnn, head, [])
    assert status == 413
    assert headers.get("connection", "").lower() == "close"
    still_serves(cnn)


def test_chunked_body_over_the_limit_is_cut_off(cnn: Served) -> None:
    host = urlsplit(cnn.url).netloc
    head = (
        f"POST {infer_path(cnn)} HTTP/1.1\r\nHost: {host}\r\n"
        "Inference-Header-Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = 16 * 1024
    chunks = [b"%x\r\n" % piece + b"\xff" * piece + b"\r\n" for _ in range(64)]
    status, headers, sent = _raw_exchange(cnn, head, chunks)
    assert status == 413
    assert sent < len(chunks), "the server read the whole body before refusing it"
    assert headers.get("connection", "").lower() == "close"
    still_serves(cnn)


def test_body_over_the_limit_from_a_normal_client(cnn: Served) -> None:
    body = b"\xff\xd8\xff" + bytes(MAX_BODY)
    response = post(cnn, body, {"inference-header-content-length": "0"})
    error = refused(cnn, 413, str(MAX_BODY), response=response)
    assert "SCOREPACK_MAX_BODY_BYTES" in error


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("real jpeg", jpeg(300, 300, seed=4)),
        ("png header", with_declared_size(png(32, 32), 5000, 5000)),
        ("jpeg header", with_declared_size(jpeg(32, 32), 3000, 3000)),
        ("huge png header", with_declared_size(png(32, 32), 100_000, 100_000)),
        ("huge jpeg header", with_declared_size(jpeg(32, 32), 65_000, 65_000)),
    ],
)
def test_image_over_the_pixel_limit(cnn: Served, name: str, body: bytes) -> None:
    for response in (images(cnn, body), post(cnn, body, {"inference-header-content-length": "0"})):
        error = refused(cnn, 413, str(MAX_PIXELS), response=response)
        assert "SCOREPACK_MAX_IMAGE_PIXELS" in error


# --- JSON tensors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"inputs": [1, 2', "{'inputs': 1}", '{"inputs": NaN}x', "\xff\xfe"],
)
def test_invalid_json(cnn: Served, text: str) -> None:
    response = post(cnn, text.encode(), {"content-type": "application/json"})
    refused(cnn, 400, "not valid JSON", response=response)


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ([1, 2, 3], ["JSON object"]),
        ({"instances": [1]}, ["inputs"]),
        ({"inputs": 3}, ["inputs"]),
        ({"inputs": [3]}, ["Input 0", "JSON object"]),
        ({"inputs": [{"name": "image", "shape": [1], "data": [1]}]}, ["datatype"]),
    ],
)
def test_json_in_the_wrong_layout(cnn: Served, document: Any, words: list[str]) -> None:
    refused(cnn, 400, *words, response=post_json(cnn, document))


_IDS = '{"name": "ids", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}'
_WEIGHTS = '{"name": "weights", "datatype": "FP32", "shape": [1, 3], "data": [1, 1, 1]}'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        # a parser keeps the last of two equal keys: [4, 5, 6] would be scored, silently
        (
            '{"inputs": [{"name": "ids", "datatype": "INT32", "shape": [1, 3], '
            f'"data": [1, 2, 3], "data": [4, 5, 6]}}, {_WEIGHTS}]}}',
            "data",
        ),
        # the second "inputs" would replace the first
        (f'{{"inputs": [{_IDS}, {_WEIGHTS}], "inputs": [{_IDS}, {_WEIGHTS}]}}', "inputs"),
        (f'{{"inputs": [{_IDS}, {_WEIGHTS}], "parameters": {{"p": 1, "p": 2}}}}', "p"),
    ],
    ids=["data", "inputs", "parameters"],
)
def test_a_duplicate_key_is_refused_by_name(ints: Served, text: str, key: str) -> None:
    # /score's promise (tests/test_codecs.py): one strict JSON parser for both routes
    response = post(ints, text.encode(), {"content-type": "application/json"})
    refused(ints, 400, repr(key), "twice", response=response)


def test_a_duplicate_key_in_a_binary_requests_json_header(cnn: Served) -> None:
    raw = array_to_bytes(np.array([GOOD], dtype=object), "BYTES")
    header = (
        '{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "shape": [2], '
        f'"parameters": {{"binary_data_size": {len(raw)}}}}}]}}'
    ).encode()
    headers = {"inference-header-content-length": str(len(header))}
    refused(cnn, 400, "'shape'", "twice", response=post(cnn, header + raw, headers))


@pytest.mark.parametrize(
    ("ids", "weights", "words"),
    [
        # NumPy would make [1, true, 3] integers and [1, true, 1] floats: /score refuses them
        ("[[1, true, 3]]", "[[1, 1, 1]]", ["'ids'", "INT32", "booleans"]),
        ("[[1, 2, 3]]", "[[1, true, 1]]", ["'weights'", "FP32", "booleans"]),
        ("[[1, 2, 3]]", "[[0.5, false, 1]]", ["'weights'", "FP32", "booleans"]),
        ("[[1, 2, 3]]", "[[true, false, true]]", ["'weights'", "FP32", "booleans"]),
        ("[true, false, true]", "[1, 1, 1]", ["'ids'", "INT32", "booleans"]),
    ],
)
def test_booleans_only_for_bool_inputs(
    ints: Served, ids: str, weights: str, words: list[str]
) -> None:
    text = (
        f'{{"inputs": [{{"name": "ids", "datatype": "INT32", "shape": [1, 3], "data": {ids}}}, '
        f'{{"name": "weights", "datatype": "FP32", "shape": [1, 3], "data": {weights}}}]}}'
    )
    response = post(ints, text.encode(), {"content-type": "application/json"})
    refused(ints, 400, *words, "true/false only for bool inputs", response=response)


def test_unknown_top_level_keys_are_ignored_as_v2_clients_send_them(cnn: Served) -> None:
    # KServe's client sends "model_name"; the V2 twin of /score's "extra key" is accepted
    zeros = np.zeros((1, 32, 32, 3)).tolist()
    document = {"inputs": [tensor("image", "FP32", [1, 32, 32, 3], zeros)], "model_name": "x"}
    assert post_json(cnn, document).status_code == 200


def multi_inputs(**override: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = {
        "image": tensor("image", "FP32", [1, 16, 16, 3], np.zeros((1, 16, 16, 3)).tolist()),
        "extra": tensor("extra", "FP32", [1, 4], [[0, 0, 0, 0]]),
    }
    inputs.update(override)
    return [v for v in inputs.values() if v]


def test_wrong_input_name(multi: Served) -> None:
    inputs = multi_inputs(exra=tensor("exra", "FP32", [1, 1], [[1]]))
    response = post_json(multi, {"inputs": inputs})
    refused(multi, 400, "'exra'", "'extra'", "'image'", response=response)


def test_missing_input(multi: Served) -> None:
    response = post_json(multi, {"inputs": multi_inputs(extra={})})
    refused(multi, 400, "Missing", "'extra'", response=response)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (tensor("extra", "FP32", [1, 3], [[1, 2, 3]]), ["'extra'", "[1, 3]", "[batch, 4]"]),
        (
            tensor("extra", "FP32", [1, 1, 4], [[[1, 2, 3, 4]]]),
            ["'extra'", "[1, 1, 4]", "[batch, 4]"],
        ),
        (tensor("extra", "FP32", [], [7]), ["'extra'", "[batch, 4]"]),
        (tensor("extra", "FP32", [1, 4], [1, 2, 3]), ["'extra'", "3 values", "4"]),
    ],
)
def test_wrong_shape(multi: Served, extra: dict[str, Any], words: list[str]) -> None:
    response = post_json(multi, {"inputs": multi_inputs(extra=extra)})
    refused(multi, 400, *words, response=response)


def test_wrong_image_shape_in_json(cnn: Served) -> None:
    zeros = np.zeros((2, 16, 16, 3)).tolist()
    response = post_json(cnn, {"inputs": [tensor("image", "FP32", [2, 16, 16, 3], zeros)]})
    refused(cnn, 400, "'image'", "[2, 16, 16, 3]", "[batch, 32, 32, 3]", response=response)


def test_image_for_a_model_with_other_inputs_too(multi: Served) -> None:
    # /score cannot send the other inputs with an image; V2 can, and must send them
    refused(multi, 400, "Missing", "'extra'", response=images(multi, jpeg(16, 16)))
    extra = tensor("extra", "FP32", [1, 4], [[0, 1, 0, 1]])
    assert images(multi, jpeg(16, 16), extra=extra).status_code == 200
    two = tensor("extra", "FP32", [2, 4], [[0, 1, 0, 1]] * 2)
    refused(multi, 400, "batch", response=images(multi, jpeg(16, 16), extra=two))


def test_inputs_that_disagree_on_the_batch(multi: Served) -> None:
    image_rows = tensor("image", "FP32", [2, 16, 16, 3], np.zeros((2, 16, 16, 3)).tolist())
    response = post_json(multi, {"inputs": multi_inputs(image=image_rows)})
    refused(multi, 400, "batch", response=response)


def test_no_rows(ints: Served) -> None:
    inputs = [tensor("ids", "INT32", [0, 3], []), tensor("weights", "FP32", [0, 3], [])]
    refused(ints, 400, "batch size 0", response=post_json(ints, {"inputs": inputs}))


@pytest.mark.parametrize(
    ("ids", "weights", "words"),
    [
        # a datatype other than the model's: 400 "unexpected datatype", as Triton answers
        # (where /score's JSON casts what fits and refuses the rest by value)
        (
            ("INT32", [[1, 2, 3]]),
            ("BYTES", [["a", "b", "c"]]),
            ["'weights'", "BYTES", "FP32", "float32", "unexpected datatype"],
        ),
        (
            ("FP32", [[1.5, 2, 3]]),
            ("FP32", [[1, 1, 1]]),
            ["'ids'", "FP32", "INT32", "unexpected datatype"],
        ),
        (
            ("INT64", [[1, 2, 2**40]]),
            ("FP32", [[1, 1, 1]]),
            ["'ids'", "INT64", "INT32", "unexpected datatype"],
        ),
        (
            ("INT32", [[1, 2, 3]]),
            ("FP64", [[1, 1, 1]]),
            ["'weights'", "FP64", "FP32", "unexpected datatype"],
        ),
        # the model's datatypes, values that do not fit them
        (("INT32", [["1", "2", "3"]]), ("FP32", [[1, 1, 1]]), ["'ids'", "INT32", "strings"]),
        (("INT32", [[1, None, 3]]), ("FP32", [[1, 1, 1]]), ["'ids'", "INT32"]),
        (("INT32", [[1, 2, 3]]), ("FP32", [[True, {"a": 1}, 1]]), ["'weights'", "FP32"]),
        (("INT32", [[1, 2, 2**40]]), ("FP32", [[1, 1, 1]]), ["'ids'", "INT32", "range"]),
        # JSON has no infinity: an FP32 input's 1e39 would become one
        (("INT32", [[1, 2, 3]]), ("FP32", [[1, -1e39, 1]]), ["'weights'", "FP32", "range"]),
    ],
)
def test_wrong_dtype(
    ints: Served, ids: tuple[str, Any], weights: tuple[str, Any], words: list[str]
) -> None:
    inputs = [
        tensor("ids", ids[0], [1, 3], ids[1]),
        tensor("weights", weights[0], [1, 3], weights[1]),
    ]
    refused(ints, 400, *words, response=post_json(ints, {"inputs": inputs}))


def test_one_long_string_among_many_is_refused_without_padding(ints: Served) -> None:
    # NumPy would pad all 200,000 strings to the longest one's 4 million characters: 3.2
    # TB asked for by a 5 MB body (a MemoryError, or worse, gigabytes actually taken)
    inputs = [
        tensor("ids", "INT32", [1, 3], [1, 2, 3]),
        tensor("weights", "FP32", [1, 3], ["x" * 4_000_000] + ["y"] * 199_999),
    ]
    response = post_json(ints, {"inputs": inputs})
    refused(ints, 400, "'weights'", "FP32", "strings", response=response)


@pytest.mark.parametrize(
    ("ids", "weights"),
    [
        ([[1, 2, 3], [4, 5]], [[1, 1, 1], [1, 1, 1]]),
        ([[1, 2, 3], [4, 5, 6]], [[1, 1, 1], [1, [1], 1]]),
    ],
)
def test_ragged_arrays(ints: Served, ids: Any, weights: Any) -> None:
    inputs = [tensor("ids", "INT32", [2, 3], ids), tensor("weights", "FP32", [2, 3], weights)]
    error = refused(ints, 400, "rectangular", response=post_json(ints, {"inputs": inputs}))
    assert "'ids'" in error or "'weights'" in error


def test_good_json_on_the_int_model(ints: Served) -> None:
    inputs = [
        tensor("ids", "INT32", [2, 3], [1, 2, 3, 4, 5, 6]),
        tensor("weights", "FP32", [2, 3], [[1, 0.5, 2], [0, 0, 1]]),
    ]
    response = post_json(ints, {"inputs": inputs})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], [8.0, 6.0])


# --- parameters, outputs, methods, routes ----------------------------------------------


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"outputs": [{"name": "prob"}]}, ["'prob'", "'probs'"]),
        ({"outputs": [{"name": "probs"}, {"name": "probs"}]}, ["twice"]),
        ({"outputs": {"name": "probs"}}, ["outputs"]),
        ({"parameters": 3}, ["parameters"]),
        ({"id": 5}, ["id"]),
    ],
)
def test_bad_request_options(cnn: Served, extra: dict[str, Any], words: list[str]) -> None:
    zeros = np.zeros((1, 32, 32, 3)).tolist()
    document = {"inputs": [tensor("image", "FP32", [1, 32, 32, 3], zeros)], **extra}
    refused(cnn, 400, *words, response=post_json(cnn, document))


def test_get_infer_is_405(cnn: Served) -> None:
    response = cnn.client.get(infer_path(cnn))
    error = refused(cnn, 405, "POST", "GET", response=response)
    assert response.headers["allow"] == "POST" and error


def test_unknown_route_and_model_are_404(cnn: Served) -> None:
    refused(cnn, 404, "/v2/nope", response=cnn.client.get("/v2/nope"))
    refused(cnn, 404, "Unknown model 'other'", response=cnn.client.post("/v2/models/other/infer"))


def test_no_bad_request_was_a_500(cnn: Served) -> None:
    metrics = cnn.client.get("/metrics").text
    assert 'status="500"' not in metrics
    assert 'status="400"' in metrics and 'status="413"' in metrics
