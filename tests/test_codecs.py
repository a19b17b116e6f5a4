"""Request bodies in, response bodies out: the codecs on their own (the HTTP tests go
through them too; these pin down the rules case by case, fast)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from images import (
    encode,
    flat_png,
    image,
    jpeg,
    many_chunks_png,
    many_scans_jpeg,
    many_segments_jpeg,
    padded_jpeg,
    png,
    truncated_jpeg,
    with_declared_size,
)
from scorepack import Signature, TensorSpec
from scorepack.codecs import body_kind, decode_image, decode_tensors, encode_json, sniff
from scorepack.errors import (
    EmptyBodyError,
    ImageTooComplexError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidJSONError,
    InvalidTensorError,
    UnsupportedMediaTypeError,
)
from scorepack.preprocess import PreprocessConfig, plan_image

IMAGE_SIG = Signature(
    inputs=(TensorSpec("image", "float32", (None, 24, 32, 3)),),
    outputs=(TensorSpec("probs", "float32", (None, 10)),),
)
MIXED_SIG = Signature(
    inputs=(
        TensorSpec("ids", "int64", (None, 2)),
        TensorSpec("text", "object", (None,)),
        TensorSpec("mask", "bool", (None, 2)),
        TensorSpec("scale", "float32", (None,)),
    ),
    outputs=(TensorSpec("y", "float32", (None,)),),
)
PLAN = plan_image(IMAGE_SIG, PreprocessConfig())


def test_sniff() -> None:
    assert sniff(jpeg()) == "jpeg"
    assert sniff(png()) == "png"
    assert sniff(b'  \n{"inputs": []}') == "json"
    assert sniff(b"[1, 2]") == "json"
    assert sniff(encode(image(8, 8), "GIF")) is None
    assert sniff(b"") is None


@pytest.mark.parametrize(
    ("content_type", "body", "kind"),
    [
        ("image/jpeg", b"\xff\xd8\xff", "image"),
        ("IMAGE/PNG", b"x", "image"),  # told, not sniffed: decoding finds out
        ("image/jpeg; q=0.9", b"x", "image"),
        ("application/json", b"x", "json"),
        ("application/json; charset=utf-8", b"{}", "json"),
        ("application/vnd.scorepack+json", b"{}", "json"),
        (None, jpeg(), "image"),
        ("", png(), "image"),
        ("application/octet-stream", b'{"inputs": 1}', "json"),
        ("application/x-www-form-urlencoded", jpeg(), "image"),  # what curl -d sends
    ],
)
def test_body_kind(content_type: str | None, body: bytes, kind: str) -> None:
    assert body_kind(content_type, body) == kind


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("image/jpeg", b"", EmptyBodyError),
        (None, b"", EmptyBodyError),
        ("text/plain", b"cat", UnsupportedMediaTypeError),
        ("image/gif", b"GIF89a", UnsupportedMediaTypeError),
        ("image/bmp", b"BM", UnsupportedMediaTypeError),
        ("application/octet-stream", b"GIF89a", InvalidImageError),
        (None, b"\x00\x01", InvalidImageError),
    ],
)
def test_body_kind_refuses(content_type: str | None, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        body_kind(content_type, body)


def test_decode_image_gives_one_model_ready_row() -> None:
    assert PLAN is not None
    decoded = decode_image(jpeg(64, 48), PLAN)
    assert decoded.rows == 1
    assert list(decoded.inputs) == ["image"]
    row = decoded.inputs["image"]
    assert row.shape == (1, 24, 32, 3) and row.dtype == np.float32
    assert row.flags["C_CONTIGUOUS"]


def test_pixel_limit_is_checked_on_the_header() -> None:
    assert PLAN is not None
    body = with_declared_size(jpeg(32, 32), 4000, 3000)
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(body, PLAN, max_pixels=1_000_000)
    assert (caught.value.width, caught.value.height) == (4000, 3000)
    # at the limit exactly is allowed
    decode_image(jpeg(100, 100), PLAN, max_pixels=10_000)
    with pytest.raises(ImageTooLargeError):
        decode_image(jpeg(101, 100), PLAN, max_pixels=10_000)


def test_beyond_pillows_own_bomb_limit_is_still_ours() -> None:
    assert PLAN is not None
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(with_declared_size(png(16, 16), 200_000, 200_000), PLAN)
    assert caught.value.width == 200_000


@pytest.mark.parametrize(
    "body",
    [
        truncated_jpeg(jpeg(64, 48)),
        jpeg(64, 48)[:20],
        png(64, 48)[:30],
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        # a header checksum that does not match
        png(16, 16)[:29] + b"\x00\x00\x00\x00" + png(16, 16)[33:],
    ],
)
def test_broken_images(body: bytes) -> None:
    assert PLAN is not None
    with pytest.raises(InvalidImageError):
        decode_image(body, PLAN)


def test_decode_tensors_single_input_shorthand_and_single_row() -> None:
    rows = np.zeros((2, 24, 32, 3)).tolist()
    assert decode_tensors(orjson.dumps({"inputs": rows}), IMAGE_SIG).rows == 2
    one = decode_tensors(orjson.dumps({"inputs": {"image": rows[0]}}), IMAGE_SIG)
    assert one.rows == 1 and one.inputs["image"].shape == (1, 24, 32, 3)
    assert one.inputs["image"].dtype == np.float32


def test_decode_tensors_converts_to_the_signatures_dtypes() -> None:
    body = orjson.dumps(
        {"inputs": {"ids": [[1, 2]], "text": ["héllo"], "mask": [[True, False]], "scale": [1]}}
    )
    decoded = decode_tensors(body, MIXED_SIG)
    assert decoded.inputs["ids"].dtype == np.int64
    assert decoded.inputs["text"].dtype == object and decoded.inputs["text"][0] == "héllo"
    assert decoded.inputs["mask"].dtype == bool
    assert decoded.inputs["scale"].dtype == np.float32


@pytest.mark.parametrize(
    ("inputs", "name", "words"),
    [
        ({"ids": [[1, 2]], "text": ["a"], "mask": [[1, 0]], "scale": [1]}, "mask", ["bool"]),
        ({"ids": [[1, 2]], "text": [1], "mask": [[True, True]], "scale": [1]}, "text", ["strings"]),
        ({"ids": [[1, 2]], "text": ["a", 1], "mask": [[True]], "scale": [1]}, "text", ["strings"]),
        (
            {"ids": [[1, 2]], "text": ["a"], "mask": [[True, True]], "scale": ["x"]},
            "scale",
            ["float32"],
        ),
        # booleans only for bool inputs, alone or mixed with numbers
        (
            {"ids": [[True, 2]], "text": ["a"], "mask": [[True, True]], "scale": [1]},
            "ids",
            ["bool"],
        ),
        (
            {"ids": [[1, 2]], "text": ["a"], "mask": [[True, True]], "scale": [2.5, True]},
            "scale",
            ["booleans"],
        ),
        (
            {"ids": [[1, 2]], "text": ["a"], "mask": [[True, True]], "scale": [True]},
            "scale",
            ["booleans"],
        ),
        (
            {"ids": [[1, None]], "text": ["a"], "mask": [[True, True]], "scale": [1]},
            "ids",
            ["null"],
        ),
    ],
)
def test_decode_tensors_dtype_rules(inputs: dict[str, object], name: str, words: list[str]) -> None:
    body = orjson.dumps({"inputs": inputs})
    with pytest.raises(InvalidTensorError) as caught:
        decode_tensors(body, MIXED_SIG)
    assert caught.value.input_name == name
    assert f"'{name}'" in caught.value.message
    assert all(w in caught.value.message for w in words)


def test_decode_tensors_layout_errors() -> None:
    with pytest.raises(InvalidJSONError, match="not valid JSON"):
        decode_tensors(b'{"inputs": ', IMAGE_SIG)
    with pytest.raises(InvalidJSONError, match="Unexpected key"):
        decode_tensors(b'{"inputs": [], "params": {}}', IMAGE_SIG)
    # the list shorthand is for single-input models only
    with pytest.raises(InvalidJSONError, match='"ids"'):
        decode_tensors(b'{"inputs": [[1, 2]]}', MIXED_SIG)


def test_encode_json_handles_numpy() -> None:
    document = {"a": np.arange(3, dtype=np.int64), "b": np.float32(0.5), "c": [np.float64(1.5)]}
    assert orjson.loads(encode_json(document)) == {"a": [0, 1, 2], "b": 0.5, "c": [1.5]}


# --- reduced-size JPEG decoding --------------------------------------------------------

SIG_224 = Signature(
    inputs=(TensorSpec("image", "float32", (None, 224, 224, 3)),),
    outputs=(TensorSpec("probs", "float32", (None, 10)),),
)
#: the stated tolerance of the fast path against the exact one, in pixel levels of 0..255
DRAFT_MEAN_TOLERANCE = 2.0
DRAFT_P99_TOLERANCE = 8.0


def _pillow_reference(body: bytes, width: int, height: int) -> np.ndarray:
    """Decode every pixel, then resize: what the exact path must equal."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(body)) as img:
        small = img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(small, dtype=np.float32)


@pytest.mark.parametrize("resize", ["stretch", "crop"])
def test_large_jpegs_decode_at_reduced_size_within_the_stated_tolerance(resize: str) -> None:
    body = jpeg(1024, 768, seed=3)
    fast_plan = plan_image(SIG_224, PreprocessConfig(resize=resize))
    exact_plan = plan_image(SIG_224, PreprocessConfig(resize=resize, exact_decode=True))
    assert fast_plan is not None and exact_plan is not None
    fast = decode_image(body, fast_plan).inputs["image"][0]
    exact = decode_image(body, exact_plan).inputs["image"][0]
    diff = np.abs(fast - exact)
    # the fast path is really taken (DCT-domain scaling gives other pixels)...
    assert diff.max() > 0
    # ...and stays within the tolerance stated in the README
    assert diff.mean() <= DRAFT_MEAN_TOLERANCE
    assert np.percentile(diff, 99) <= DRAFT_P99_TOLERANCE


def test_exact_decode_equals_a_full_pillow_decode_and_resize() -> None:
    body = jpeg(1024, 768, seed=4)
    plan = plan_image(SIG_224, PreprocessConfig(exact_decode=True))
    assert plan is not None
    row = decode_image(body, plan).inputs["image"][0]
    np.testing.assert_array_equal(row, _pillow_reference(body, 224, 224))


def test_small_jpegs_and_pngs_are_decoded_exactly() -> None:
    # nothing to gain below twice the model's size: the fast path must change nothing
    for body in (jpeg(300, 260, seed=5), png(1024, 768, seed=6)):
        fast_plan = plan_image(SIG_224, PreprocessConfig())
        exact_plan = plan_image(SIG_224, PreprocessConfig(exact_decode=True))
        assert fast_plan is not None and exact_plan is not None
        np.testing.assert_array_equal(
            decode_image(body, fast_plan).inputs["image"],
            decode_image(body, exact_plan).inputs["image"],
        )


@pytest.mark.parametrize(
    ("resize", "size", "expected"),
    [
        ("stretch", (1024, 768), (224, 224)),
        ("stretch", (100, 80), (100, 80)),
        # crop: the shorter side to 224/0.875 = 256, the width in proportion
        ("crop", (1024, 768), (342, 256)),
        ("crop", (200, 150), (200, 150)),
    ],
)
def test_decode_size_never_drops_below_what_resize_needs(
    resize: str, size: tuple[int, int], expected: tuple[int, int]
) -> None:
    plan = plan_image(SIG_224, PreprocessConfig(resize=resize))
    assert plan is not None
    assert plan.decode_size(*size) == expected


# --- strict JSON: duplicate keys, one element check per datatype ---------------------------


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"inputs": {"ids": [[1, 2]], "ids": [[3, 4]]}}', "ids"),
        (b'{"inputs": {"x": [1]}, "inputs": {"x": [2]}}', "inputs"),
        (b'{"inputs": [{"name": "a", "name": "b"}]}', "name"),
        (b'{"inputs": {"x": [[{"deep": 1, "deep": 2}]]}}', "deep"),
        (b'{"inputs": {"x": [1], "y": "a:b", "x": [2]}}', "x"),
    ],
)
def test_a_duplicate_key_anywhere_is_refused_by_name(body: bytes, key: str) -> None:
    from scorepack.codecs import loads_json

    with pytest.raises(InvalidJSONError) as caught:
        loads_json(body)
    assert repr(key) in caught.value.message


def test_strict_json_accepts_what_only_looks_like_a_duplicate() -> None:
    from scorepack.codecs import loads_json

    # colons and braces inside strings, equal keys in different objects
    doc = loads_json(b'{"a": {"k": "x:{y}"}, "b": {"k": [1, 2]}, "c": [{"k": 1}, {"k": 2}]}')
    assert doc["a"]["k"] == "x:{y}" and doc["c"][1]["k"] == 2
    for bad in (b'{"inputs": [NaN]}', b'{"inputs": [Infinity]}'):
        with pytest.raises(InvalidJSONError):
            loads_json(bad)


def test_tensor_array_is_the_one_element_check_for_every_datatype() -> None:
    from scorepack.codecs import tensor_array

    ok = [
        ([1, 2.5], "float32"),
        ([[1, 2]], "int64"),
        ([True, False], "bool"),
        (["a", "b"], "object"),
        ([], "float32"),
    ]
    for value, dtype in ok:
        assert tensor_array(value, np.dtype(dtype), "x").size == len(np.ravel(value))
    bad = [
        ([True, 2.5], "float32"),
        ([1, True], "int64"),
        ([1.5], "int64"),
        ([1, 0], "bool"),
        (["a", 1], "object"),
        ([1, None], "float32"),
        (["1.5"], "float32"),
        ([300], "uint8"),
    ]
    for value, dtype in bad:
        with pytest.raises(InvalidTensorError):
            tensor_array(value, np.dtype(dtype), "x")
    # arrays given as arrays are trusted for their dtype kind
    assert tensor_array(np.ones((2, 2)), np.dtype("float32"), "x").dtype == np.float32


# --- the limits on hostile images within the pixel limit (imagelimits.py) -----------------


def test_a_jpegs_scans_are_limited_to_100() -> None:
    assert PLAN is not None
    # Pillow's progressive greyscale JPEG has 6 scans of its own
    decode_image(many_scans_jpeg(94, 64, 48), PLAN)
    with pytest.raises(ImageTooComplexError, match="more than 100 scans"):
        decode_image(many_scans_jpeg(95, 64, 48), PLAN)


def test_a_side_over_65535_pixels_is_refused_whatever_the_pixel_count() -> None:
    assert PLAN is not None
    decode_image(flat_png(1, 65_535), PLAN)
    decode_image(flat_png(65_535, 1), PLAN)
    with pytest.raises(ImageTooComplexError, match="65536x1"):
        decode_image(flat_png(65_536, 1), PLAN)
    # the pixel limit still comes first, with its own message
    with pytest.raises(ImageTooLargeError):
        decode_image(flat_png(1, 70_000), PLAN, max_pixels=60_000)


def test_header_floods_are_refused_before_pillow_parses_them() -> None:
    assert PLAN is not None
    decode_image(many_segments_jpeg(990), PLAN)
    decode_image(padded_jpeg(60_000), PLAN)
    decode_image(many_chunks_png(4000), PLAN)
    with pytest.raises(InvalidImageError, match="1000 segments"):
        decode_image(many_segments_jpeg(1001), PLAN)
    with pytest.raises(InvalidImageError, match="padding"):
        decode_image(padded_jpeg(70_000), PLAN)
    with pytest.raises(InvalidImageError, match="chunks"):
        decode_image(many_chunks_png(4096 + 24 + 1), PLAN)
