"""Every bad request from issue 2 gets its 4xx with a JSON error saying what was wrong,
and the server keeps serving: each case is followed by a good request that succeeds."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from images import encode, image, jpeg, png, truncated_jpeg, truncated_png, with_declared_size
from serving_helpers import Served, error_of, scoring_config, serving, tf_backend

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


def still_serves(served: Served) -> None:
    """A good request after the bad one: the server is unharmed."""
    names = served.scorer.signature.input_names
    if names == ["image"]:
        response = served.score(GOOD, "image/jpeg")
    else:  # JSON: one row of zeros for every input
        rows = {
            s.name: np.zeros((1, *(d or 1 for d in s.item_shape)), dtype=s.dtype).tolist()
            for s in served.scorer.signature.inputs
        }
        response = served.score_json(rows)
    assert response.status_code == 200, response.text


def refused(
    served: Served, status: int, code: str, *words: str, response: httpx.Response
) -> dict[str, str]:
    """Check an error reply (status, code, words in the message), then a good request."""
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], (word, error["message"])
    still_serves(served)
    return error


# --- bodies that are not images --------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "image/jpeg", "application/json"])
def test_empty_body(cnn: Served, content_type: str | None) -> None:
    refused(cnn, 400, "empty_body", "empty", response=cnn.score(b"", content_type))


@pytest.mark.parametrize(
    "content_type", [None, "application/octet-stream", "image/jpeg", "image/png"]
)
def test_not_an_image(cnn: Served, content_type: str | None) -> None:
    response = cnn.score(b"hello, this is not an image at all", content_type)
    refused(cnn, 400, "invalid_image", "not a JPEG or PNG", response=response)


def test_truncated_jpeg(cnn: Served) -> None:
    body = truncated_jpeg(jpeg(64, 48, seed=2))
    refused(cnn, 400, "invalid_image", "JPEG", response=cnn.score(body, "image/jpeg"))


def test_jpeg_with_only_its_first_bytes(cnn: Served) -> None:
    body = jpeg(64, 48, seed=2)[:40]
    refused(cnn, 400, "invalid_image", "JPEG", response=cnn.score(body))


def test_truncated_png(cnn: Served) -> None:
    body = truncated_png(png(64, 48, seed=3))
    refused(cnn, 400, "invalid_image", "PNG", response=cnn.score(body, "image/png"))


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
    refused(cnn, 415, "unsupported_media_type", bare, response=cnn.score(body, content_type))


# --- size limits -----------------------------------------------------------------------


def _raw_exchange(
    served: Served, head: bytes, chunks: list[bytes]
) -> tuple[int, dict[str, str], int]:
    """Send ``head`` then ``chunks`` one by one, stopping as soon as the server answers.

    Returns the status, the response headers and how many chunks were sent before it
    answered: fewer than all of them means the server did not wait for the whole body.
    """
    parts = urlsplit(served.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head)
        sent = 0
        for chunk in chunks:
            if select.select([sock], [], [], 0.05)[0]:
                break  # the answer is already here
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
        data = b""
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            assert got, f"connection closed without an answer: {data!r}"
            data += got
    status_line, *lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, sent


def test_content_length_over_the_limit_is_refused_before_the_body(cnn: Served) -> None:
    host = urlsplit(cnn.url).netloc
    head = (
        f"POST /score HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {1024 * 1024 * 1024}\r\n\r\n"
    ).encode()
    # the body never comes: the answer must not wait for it
    status, headers, _ = _raw_exchange(cnn, head, [])
    assert status == 413
    # and the server does not stay on to drain a gigabyte it will never use
    assert headers.get("connection", "").lower() == "close"
    still_serves(cnn)


def test_chunked_body_over_the_limit_is_cut_off(cnn: Served) -> None:
    host = urlsplit(cnn.url).netloc
    head = (
        f"POST /score HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = 16 * 1024
    chunks = [b"%x\r\n" % piece + b"\xff" * piece + b"\r\n" for _ in range(64)]  # 1 MiB
    status, headers, sent = _raw_exchange(cnn, head, chunks)
    assert status == 413
    assert sent < len(chunks), "the server read the whole body before refusing it"
    assert headers.get("connection", "").lower() == "close"
    still_serves(cnn)


def test_body_over_the_limit_from_a_normal_client(cnn: Served) -> None:
    body = b"\xff\xd8\xff" + bytes(MAX_BODY)  # just over: a client that sends it all anyway
    response = cnn.score(body, "image/jpeg")
    error = refused(cnn, 413, "body_too_large", str(MAX_BODY), response=response)
    assert "SCOREPACK_MAX_BODY_BYTES" in error["message"]


@pytest.mark.parametrize(
    ("name", "body"),
    [
        # a real image, over the pixel limit and under the byte limit
        ("real jpeg", jpeg(300, 300, seed=4)),
        # headers claiming sizes the data does not hold: a decode would fail with a 400,
        # so a 413 shows the header was checked first
        ("png header", with_declared_size(png(32, 32), 5000, 5000)),
        ("jpeg header", with_declared_size(jpeg(32, 32), 3000, 3000)),
        # beyond Pillow's own decompression-bomb limit: still our 413, not a 400
        ("huge png header", with_declared_size(png(32, 32), 100_000, 100_000)),
        ("huge jpeg header", with_declared_size(jpeg(32, 32), 65_000, 65_000)),
    ],
)
def test_image_over_the_pixel_limit(cnn: Served, name: str, body: bytes) -> None:
    assert len(body) < MAX_BODY
    response = cnn.score(body)
    error = refused(cnn, 413, "image_too_large", str(MAX_PIXELS), response=response)
    assert "SCOREPACK_MAX_IMAGE_PIXELS" in error["message"]


# --- JSON tensors ----------------------------------------------------------------------


def _json(served: Served, text: str) -> httpx.Response:
    return served.score(text.encode(), "application/json")


@pytest.mark.parametrize(
    "text",
    ['{"inputs": [1, 2', "{'inputs': 1}", '{"inputs": NaN}x', "\xff\xfe"],
)
def test_invalid_json(cnn: Served, text: str) -> None:
    refused(cnn, 400, "invalid_json", "not valid JSON", response=_json(cnn, text))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[1, 2, 3]", ["image"]),
        ('{"instances": [1]}', ["inputs"]),
        ('{"inputs": 3}', ["inputs"]),
        ('{"inputs": {"image": [1]}, "extra": 1}', ["extra"]),
    ],
)
def test_json_in_the_wrong_layout(cnn: Served, text: str, words: list[str]) -> None:
    refused(cnn, 400, "invalid_json", *words, response=_json(cnn, text))


def test_wrong_input_name(multi: Served) -> None:
    rows = {"image": np.zeros((1, 16, 16, 3)).tolist(), "extra": [[0, 0, 0, 0]], "exra": [[1]]}
    response = multi.score_json(rows)
    refused(multi, 400, "invalid_tensor", "'exra'", "'extra'", "'image'", response=response)


def test_missing_input(multi: Served) -> None:
    response = multi.score_json({"image": np.zeros((1, 16, 16, 3)).tolist()})
    refused(multi, 400, "invalid_tensor", "Missing", "'extra'", response=response)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ([[1, 2, 3]], ["'extra'", "[1, 3]", "[batch, 4]"]),
        ([[[1, 2, 3, 4]]], ["'extra'", "[1, 1, 4]", "[batch, 4]"]),
        (7, ["'extra'", "[batch, 4]"]),
    ],
)
def test_wrong_shape(multi: Served, extra: object, words: list[str]) -> None:
    response = multi.score_json({"image": np.zeros((1, 16, 16, 3)).tolist(), "extra": extra})
    refused(multi, 400, "invalid_tensor", *words, response=response)


def test_wrong_image_shape_in_json(cnn: Served) -> None:
    response = cnn.score_json({"image": np.zeros((2, 16, 16, 3)).tolist()})
    refused(
        cnn,
        400,
        "invalid_tensor",
        "'image'",
        "[2, 16, 16, 3]",
        "[batch, 32, 32, 3]",
        response=response,
    )


def test_image_for_a_model_with_other_inputs_too(multi: Served) -> None:
    response = multi.score(jpeg(16, 16), "image/jpeg")
    refused(multi, 400, "bad_request", "'image'", "'extra'", "JSON", response=response)


def test_inputs_that_disagree_on_the_batch(multi: Served) -> None:
    response = multi.score_json(
        {"image": np.zeros((2, 16, 16, 3)).tolist(), "extra": [[0, 0, 0, 0]]}
    )
    refused(multi, 400, "invalid_tensor", "batch", response=response)


def test_no_rows(ints: Served) -> None:
    response = ints.score_json({"ids": [], "weights": []})
    assert response.status_code == 400
    refused(ints, 400, "invalid_tensor", response=response)


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ({"ids": [[1, 2, 3]], "weights": [["a", "b", "c"]]}, ["'weights'", "float32", "strings"]),
        ({"ids": [[1.5, 2, 3]], "weights": [[1, 1, 1]]}, ["'ids'", "int32", "floats"]),
        ({"ids": [["1", "2", "3"]], "weights": [[1, 1, 1]]}, ["'ids'", "int32", "strings"]),
        ({"ids": [[1, None, 3]], "weights": [[1, 1, 1]]}, ["'ids'", "int32"]),
        ({"ids": [[1, 2, 3]], "weights": [[True, {"a": 1}, 1]]}, ["'weights'", "float32"]),
        ({"ids": [[1, 2, 2**40]], "weights": [[1, 1, 1]]}, ["'ids'", "int32", "range"]),
        # JSON has no infinity: a float32 input's 1e39 would become one
        ({"ids": [[1, 2, 3]], "weights": [[1, -1e39, 1]]}, ["'weights'", "float32", "range"]),
    ],
)
def test_wrong_dtype(ints: Served, inputs: dict[str, object], words: list[str]) -> None:
    refused(ints, 400, "invalid_tensor", *words, response=ints.score_json(inputs))


def test_one_long_string_among_many_is_refused_without_padding(ints: Served) -> None:
    # NumPy would pad all 200,000 strings to the longest one's 4 million characters: 3.2
    # TB asked for by a 5 MB body (a MemoryError, or worse, gigabytes actually taken)
    weights = ["x" * 4_000_000] + ["y"] * 199_999
    response = ints.score_json({"ids": [[1, 2, 3]], "weights": weights})
    refused(ints, 400, "invalid_tensor", "'weights'", "float32", "strings", response=response)


@pytest.mark.parametrize(
    "inputs",
    [
        {"ids": [[1, 2, 3], [4, 5]], "weights": [[1, 1, 1], [1, 1, 1]]},
        {"ids": [[1, 2, 3], [4, 5, 6]], "weights": [[1, 1, 1], [1, [1], 1]]},
    ],
)
def test_ragged_arrays(ints: Served, inputs: dict[str, object]) -> None:
    error = refused(ints, 400, "invalid_tensor", "rectangular", response=ints.score_json(inputs))
    assert "'ids'" in error["message"] or "'weights'" in error["message"]


def test_good_json_on_the_int_model(ints: Served) -> None:
    response = ints.score_json({"ids": [[1, 2, 3], [4, 5, 6]], "weights": [[1, 0.5, 2], [0, 0, 1]]})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"]["score"], [8.0, 6.0])


# --- query string, methods, routes -----------------------------------------------------


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"topk": "3"}, ["topk", "top_k"]),
        ({"top_k": "abc"}, ["top_k", "'abc'"]),
        ({"top_k": "0"}, ["top_k", "positive"]),
        ({"top_k": "-2"}, ["top_k"]),
        ({"raw": "maybe"}, ["raw", "'maybe'"]),
    ],
)
def test_bad_query_parameters(cnn: Served, params: dict[str, str], words: list[str]) -> None:
    response = cnn.score(GOOD, "image/jpeg", params=params)
    refused(cnn, 400, "bad_request", *words, response=response)


def test_good_query_parameters(cnn: Served) -> None:
    response = cnn.score(GOOD, "image/jpeg", params={"top_k": "3", "raw": "true"})
    assert response.status_code == 200
    body = response.json()
    assert len(body["predictions"][0]["top_k"]) == 3
    assert np.asarray(body["outputs"]["probs"]).shape == (1, 10)


def test_get_score_is_405(cnn: Served) -> None:
    response = cnn.client.get("/score")
    error = refused(cnn, 405, "method_not_allowed", "POST", response=response)
    assert response.headers["allow"] == "POST"
    assert "GET" in error["message"]


def test_unknown_route_is_404(cnn: Served) -> None:
    for response in (cnn.client.get("/nope"), cnn.client.post("/predict", content=GOOD)):
        refused(cnn, 404, "not_found", "/score", response=response)


def test_no_bad_request_was_a_500(cnn: Served) -> None:
    metrics = cnn.client.get("/metrics").text
    assert 'status="500"' not in metrics
    assert 'status="400"' in metrics and 'status="413"' in metrics
