"""The protocol-neutral V2 core: the datatype table and raw tensor bytes, inference through
a scorer's batcher with /score's validation, images as BYTES, outputs selection, ids and
parameters, and model metadata. The REST and gRPC adapters have their own tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fixture_backends import EchoBackend, EncodedImageBackend, TypesBackend
from images import jpeg, png
from scorepack import Scorer
from scorepack.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidTensorError,
    ModelNotFoundError,
)
from scorepack.repository import ModelSource, Repository
from scorepack.v2 import (
    DATATYPES,
    InferInput,
    InferRequest,
    RequestedOutput,
    array_from_bytes,
    array_from_data,
    array_to_bytes,
    datatype_of,
    infer,
    model_metadata,
    not_ready,
    numpy_dtype,
)
from serving_helpers import scoring_config

# --- datatypes ---------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", sorted(set(DATATYPES) - {"BYTES", "BF16"}))
def test_every_numeric_datatype_round_trips_through_raw_bytes(datatype: str) -> None:
    dtype = numpy_dtype(datatype)
    values = np.arange(6).reshape(2, 3) % 2 if datatype == "BOOL" else np.arange(6).reshape(2, 3)
    array = values.astype(dtype)
    raw = array_to_bytes(array, datatype)
    assert len(raw) == 6 * dtype.itemsize
    back = array_from_bytes("x", datatype, [2, 3], raw)
    np.testing.assert_array_equal(back, array)
    assert datatype_of(back.dtype) == datatype
    assert back.dtype == dtype
    np.testing.assert_array_equal(array_from_data("x", datatype, [2, 3], array.tolist()), array)
    # flat data takes the shape given
    flat = array_from_data("x", datatype, [3, 2], array.reshape(-1).tolist())
    assert flat.shape == (3, 2)


def test_fp16_and_bf16() -> None:
    half = np.array([0.5, -2.0, 65504.0], dtype=np.float16)
    raw = array_to_bytes(half, "FP16")
    assert raw == half.astype("<f2").tobytes()
    np.testing.assert_array_equal(array_from_bytes("h", "FP16", [3], raw), half)
    # BF16 is a float32's top 16 bits: values exact in bf16 survive; NumPy gets float32
    values = np.array([1.0, -3.5, 0.15625, 256.0], dtype=np.float32)
    raw = array_to_bytes(values, "BF16")
    assert len(raw) == 8
    back = array_from_bytes("b", "BF16", [4], raw)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, values)


def test_bytes_are_length_prefixed() -> None:
    items = np.array([b"ab", b"", "é"], dtype=object)
    raw = array_to_bytes(items, "BYTES")
    assert raw == b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9"
    back = array_from_bytes("s", "BYTES", [3, 1], raw)
    assert back.shape == (3, 1) and back.dtype == object
    assert back.reshape(-1).tolist() == [b"ab", b"", "é".encode()]
    assert array_from_data("s", "BYTES", [2], ["a", "b"]).tolist() == [b"a", b"b"]


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: array_from_bytes("x", "FP32", [2], b"\x00" * 7), ["'x'", "7 bytes", "8"]),
        (lambda: array_from_bytes("x", "BYTES", [2], b"\x01\x00\x00\x00a"), ["1 BYTES", "2"]),
        (lambda: array_from_bytes("x", "BYTES", [1], b"\x09\x00\x00\x00a"), ["9 bytes"]),
        (lambda: array_from_bytes("x", "BYTES", [1], b"\x01\x00\x00\x00ab"), ["left"]),
        (lambda: array_from_bytes("x", "BOOL", [1], b"\x07"), ["BOOL", "0 and 1"]),
        (lambda: array_from_bytes("x", "FP8", [1], b"\x00"), ["FP8", "FP32"]),
        (lambda: array_from_bytes("x", "FP32", [-1], b""), ["shape"]),
        (lambda: array_from_data("x", "FP32", [3], [1.0, 2.0]), ["2 values", "3"]),
        (lambda: array_from_data("x", "INT32", [1], ["a"]), ["INT32", "strings"]),
        (lambda: array_from_data("x", "INT32", [1], [1.5]), ["INT32", "floats"]),
        (lambda: array_from_data("x", "INT8", [1], [300]), ["range", "INT8"]),
        (lambda: array_from_data("x", "BOOL", [1], [1]), ["BOOL"]),
        (lambda: array_from_data("x", "BYTES", [1], [1]), ["strings"]),
        (lambda: array_from_data("x", "FP32", [2, 2], [[1, 2], [3]]), ["rectangular"]),
    ],
)
def test_tensor_data_that_does_not_fit_is_a_400(call: Any, words: list[str]) -> None:
    with pytest.raises(InvalidTensorError) as caught:
        call()
    for word in words:
        assert word in caught.value.message, caught.value.message


# --- inference ---------------------------------------------------------------------------


@pytest.fixture
def types_scorer(tmp_path: Path) -> Iterator[Scorer]:
    with Scorer(TypesBackend(tmp_path / "m.types"), name="types", version="3").start() as scorer:
        yield scorer


def run(scorer: Scorer, request: InferRequest) -> Any:
    return asyncio.run(infer(scorer, request))


def tensor(name: str, datatype: str, values: Any) -> InferInput:
    array = np.asarray(values, dtype=numpy_dtype(datatype))
    return InferInput(name, datatype, tuple(array.shape), array)


def types_request(**kw: Any) -> InferRequest:
    inputs = [
        tensor("f", "FP32", [[1.5, 2.0], [3.0, 4.0]]),
        tensor("i", "INT64", [[1, 2, 3], [2**40, 0, 1]]),
        tensor("b", "BOOL", [[True], [False]]),
    ]
    return InferRequest(inputs=inputs, **kw)


def test_infer_every_output_with_id_and_parameters(types_scorer: Scorer) -> None:
    response = run(
        types_scorer,
        types_request(id="req-7", parameters={"priority": 2, "binary_data_output": True}),
    )
    assert (response.model_name, response.model_version, response.id) == ("types", "3", "req-7")
    assert response.parameters == {"priority": 2}  # transport switches are not echoed
    out = {o.name: o for o in response.outputs}
    assert [o.name for o in response.outputs] == ["twice", "total", "negated", "word"]
    assert (out["twice"].datatype, out["twice"].shape) == ("FP32", (2, 2))
    np.testing.assert_array_equal(out["twice"].data, [[3.0, 4.0], [6.0, 8.0]])
    assert (out["total"].datatype, out["total"].data.tolist()) == ("INT64", [6, 2**40 + 1])
    assert (out["negated"].datatype, out["negated"].data.tolist()) == ("BOOL", [[False], [True]])
    assert (out["word"].datatype, out["word"].data.tolist()) == ("BYTES", [b"yes", b"no"])


def test_outputs_selection(types_scorer: Scorer) -> None:
    response = run(
        types_scorer, types_request(outputs=[RequestedOutput("word"), RequestedOutput("total")])
    )
    assert [o.name for o in response.outputs] == ["word", "total"]
    with pytest.raises(InvalidTensorError, match=r"Unknown output\(s\) \['nope'\]"):
        run(types_scorer, types_request(outputs=[RequestedOutput("nope")]))


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ([tensor("f", "FP32", [[1, 2]]), tensor("i", "INT64", [[1, 2, 3]])], ["Missing", "'b'"]),
        ([], ["no inputs"]),
        ([tensor("f", "FP32", [[1, 2]])] * 2, ["'f'", "twice"]),
        (
            [
                tensor("f", "FP32", [[1, 2, 3]]),
                tensor("i", "INT64", [[1, 2, 3]]),
                tensor("b", "BOOL", [[True]]),
            ],
            ["'f'", "[1, 3]", "[batch, 2]"],
        ),
        (
            [
                tensor("f", "FP32", [[1, 2]]),
                tensor("i", "FP32", [[1.5, 2, 3]]),
                tensor("b", "BOOL", [[True]]),
            ],
            # a datatype other than the model's is refused as Triton refuses it
            ["'i'", "FP32", "INT64", "unexpected datatype"],
        ),
        (
            [
                tensor("f", "FP32", [[1, 2]]),
                tensor("i", "INT64", [[1, 2, 3]] * 2),
                tensor("b", "BOOL", [[True]]),
            ],
            ["batch"],
        ),
    ],
)
def test_inputs_are_checked_as_score_checks_them(
    types_scorer: Scorer, inputs: list[InferInput], words: list[str]
) -> None:
    with pytest.raises(InvalidTensorError) as caught:
        run(types_scorer, InferRequest(inputs=inputs))
    for word in words:
        assert word in caught.value.message, caught.value.message
    assert types_scorer.batcher.queue_depth == 0  # the admitted place was given back


def test_requests_go_through_the_batcher(tmp_path: Path) -> None:
    with Scorer(EchoBackend(tmp_path / "m.echo")).start() as scorer:
        before = scorer.batcher.stats.requests
        response = run(scorer, InferRequest([tensor("x", "FP32", [[1, 2], [3, 4]])]))
        np.testing.assert_array_equal(response.outputs[0].data, [[1, 2], [3, 4]])
        assert scorer.batcher.stats.requests == before + 1
        assert response.model_version is None


# --- images as BYTES ---------------------------------------------------------------------


@pytest.fixture
def image_scorer(tmp_path: Path) -> Iterator[Scorer]:
    backend = EncodedImageBackend(tmp_path / "img", options={"encoded": "false"})
    config = scoring_config(max_image_pixels=200 * 200)
    with Scorer(backend, config, name="img").start() as scorer:
        yield scorer


def image_input(*bodies: bytes, shape: tuple[int, ...] | None = None) -> InferInput:
    data = np.array(list(bodies), dtype=object)
    shape = shape or (len(bodies),)
    return InferInput("image", "BYTES", shape, data.reshape(shape))


def test_images_as_bytes_decode_as_score_does(image_scorer: Scorer) -> None:
    pictures = [jpeg(40, 30, seed=1), png(20, 24, seed=2)]
    response = run(image_scorer, InferRequest([image_input(*pictures, shape=(2, 1))]))
    pixels = response.outputs[0]
    assert pixels.shape == (2, 16, 16, 3)
    for row, picture in zip(pixels.data, pictures, strict=True):
        expected = image_scorer.score(picture, raw=True)["outputs"]["pixels"]
        np.testing.assert_allclose(row, np.asarray(expected)[0], atol=1e-6)


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        (b"not an image", InvalidImageError, ["not a JPEG or PNG"]),
        (jpeg(64, 48)[:40], InvalidImageError, ["JPEG"]),
        (jpeg(300, 300), ImageTooLargeError, [str(200 * 200)]),
    ],
)
def test_bad_images_as_bytes(
    image_scorer: Scorer, body: bytes, error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        run(image_scorer, InferRequest([image_input(body)]))
    for word in words:
        assert word in str(caught.value)
    assert run(image_scorer, InferRequest([image_input(jpeg())])).outputs[0].shape == (1, 16, 16, 3)


def test_pixels_still_work_on_an_image_model(image_scorer: Scorer) -> None:
    pixels = np.zeros((1, 16, 16, 3), dtype=np.float32)
    response = run(image_scorer, InferRequest([InferInput("image", "FP32", pixels.shape, pixels)]))
    np.testing.assert_array_equal(response.outputs[0].data, pixels)


# --- metadata ----------------------------------------------------------------------------


def test_model_metadata(types_scorer: Scorer, tmp_path: Path) -> None:
    def echo(version: str) -> ModelSource:
        path = tmp_path / f"e{version}.echo"
        return ModelSource("types", version, lambda: Scorer(EchoBackend(path), name="types"))

    # every version is listed; the tensors are the version asked for's (default: highest)
    repository = Repository([echo("1"), ModelSource("types", "3", lambda: types_scorer)])
    repository.start()
    try:
        meta = model_metadata(repository, "types")
    finally:
        repository.close()
    assert meta["name"] == "types" and meta["versions"] == ["1", "3"]
    assert "state" not in meta and "reason" not in meta
    assert meta["platform"] == "fixture_backends"
    assert meta["inputs"] == [
        {"name": "f", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "i", "datatype": "INT64", "shape": [-1, 3]},
        {"name": "b", "datatype": "BOOL", "shape": [-1, 1]},
    ]
    assert meta["outputs"][3] == {"name": "word", "datatype": "BYTES", "shape": [-1]}
    # a version not loaded: no tensors, its state and why; not_ready says both
    unloaded = Repository([echo("1"), echo("2")])
    meta = model_metadata(unloaded, "types", "2")
    assert meta == {
        "name": "types",
        "versions": ["1", "2"],
        "platform": "",
        "inputs": [],
        "outputs": [],
        "state": "UNAVAILABLE",
        "reason": "not loaded",
    }
    error = not_ready(unloaded.state("types", "2"))
    assert error.message == "The model 'types' version '2' is not ready: UNAVAILABLE (not loaded)."
    with pytest.raises(ModelNotFoundError):
        model_metadata(unloaded, "types", "9")
