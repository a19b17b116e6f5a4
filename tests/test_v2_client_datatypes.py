"""scorepack's own V2 client (scorepack.client_v2, and client_grpc through it) speaks the
datatypes with the server's table and codecs (scorepack.v2.datatypes), keeping its own
refusals: BF16 (NumPy has no bfloat16) and dtypes V2 has no name for, as BadRequestError."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from scorepack import client_v2
from scorepack.errors import BadRequestError
from scorepack.v2.datatypes import DATATYPES, array_from_bytes, array_to_bytes


def test_the_client_reads_the_servers_datatype_table() -> None:
    for datatype, dtype in DATATYPES.items():
        if datatype == "BF16":
            continue
        assert client_v2.numpy_dtype(datatype) == dtype
        if datatype != "BYTES":
            assert client_v2.array_datatype(np.zeros(2, dtype)) == datatype
    assert client_v2.array_datatype(np.array(["a", "b"])) == "BYTES"
    with pytest.raises(BadRequestError, match="Unknown V2 datatype 'BF16'"):
        client_v2.numpy_dtype("BF16")
    with pytest.raises(BadRequestError, match="Unknown V2 datatype 'FP8'"):
        client_v2.numpy_dtype("FP8")
    with pytest.raises(BadRequestError, match="No V2 datatype for NumPy dtype complex64"):
        client_v2.array_datatype(np.zeros(2, np.complex64))


def test_request_bodies_are_what_the_server_decodes() -> None:
    inputs = {
        "half": np.array([[1.5, -2.25]], np.float16),
        "text": np.array([["é", b"\x00\xff"]], dtype=object),
        "flags": np.array([True, False, True]),
    }
    body, length = client_v2.rest_infer_body(inputs, request_id="r1")
    header = orjson.loads(body[:length])
    assert header["id"] == "r1"
    offset = length
    for entry in header["inputs"]:
        size = entry["parameters"]["binary_data_size"]
        raw = body[offset : offset + size]
        offset += size
        decoded = array_from_bytes(entry["name"], entry["datatype"], entry["shape"], raw)
        expected = inputs[entry["name"]]
        if entry["datatype"] == "BYTES":
            assert decoded.tolist() == [["é".encode(), b"\x00\xff"]]
        else:
            np.testing.assert_array_equal(decoded, expected)
            assert decoded.dtype == expected.dtype
    assert offset == len(body)
    assert [e["datatype"] for e in header["inputs"]] == ["FP16", "BYTES", "BOOL"]


def test_answers_decode_with_the_shared_codec_and_bad_bytes_are_named() -> None:
    probs = np.array([[0.25, 0.75]], np.float32)
    np.testing.assert_array_equal(
        client_v2.decode_raw(array_to_bytes(probs, "FP32"), "FP32", [1, 2]), probs
    )
    words = np.array([b"ab", b""], dtype=object)
    assert client_v2.decode_raw(array_to_bytes(words, "BYTES"), "BYTES", [2]).tolist() == [
        b"ab",
        b"",
    ]
    with pytest.raises(BadRequestError, match=r"tensor 'probs' cannot be decoded.*takes 8"):
        client_v2.decode_raw(b"\x00" * 6, "FP32", [1, 2], "probs")
    with pytest.raises(BadRequestError, match="Unknown V2 datatype 'BF16'"):
        client_v2.decode_raw(b"\x00\x00", "BF16", [1])
