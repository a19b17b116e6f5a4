"""Request bodies in, response bodies out.

In: raw image bytes (JPEG or PNG, told by content type or sniffed from the bytes) or JSON
named tensors ``{"inputs": {"name": [[...]]}}``. Images are decoded here
(:func:`decode_image`), or, for a backend that decodes JPEGs itself, only checked and
passed on as bytes (:func:`encoded_image`). Out: one JSON encoder, orjson.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .errors import (
    EmptyBodyError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidJSONError,
    InvalidTensorError,
    RequestError,
    UnsupportedEncodingError,
    UnsupportedMediaTypeError,
)
from .imagelimits import check_jpeg, check_png, check_side
from .preprocess import ImagePlan
from .signature import Signature, TensorSpec

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "Decoded",
    "body_kind",
    "check_content_encoding",
    "check_tensors",
    "decode_image",
    "decode_tensors",
    "encode_json",
    "encoded_image",
    "float_overflows",
    "loads_json",
    "plain_numbers",
    "sniff",
    "tensor_array",
]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
_IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/x-png"}
# content types that say nothing about the bytes; curl --data-binary sends the form one
_SNIFFED_TYPES = {
    "",
    "application/octet-stream",
    "binary/octet-stream",
    "application/x-www-form-urlencoded",
}


@dataclass(frozen=True)
class Decoded:
    """Model-ready arrays for one request; every array's first dimension is ``rows``."""

    inputs: dict[str, np.ndarray]
    rows: int


def sniff(body: bytes) -> str | None:
    """``"jpeg"``, ``"png"`` or ``"json"`` from the first bytes, else None."""
    if body.startswith(_JPEG):
        return "jpeg"
    if body.startswith(_PNG):
        return "png"
    if body.lstrip()[:1] in (b"{", b"["):
        return "json"
    return None


def body_kind(content_type: str | None, body: bytes) -> str:
    """``"image"`` or ``"json"``, or a 4xx error saying why neither."""
    if not body:
        raise EmptyBodyError()
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        return "json"
    if ctype.startswith("image/"):
        if ctype not in _IMAGE_TYPES:
            raise UnsupportedMediaTypeError(ctype)
        return "image"
    if ctype in _SNIFFED_TYPES:
        kind = sniff(body)
        if kind in ("jpeg", "png"):
            return "image"
        if kind == "json":
            return "json"
        raise InvalidImageError(
            f"The body is not a JPEG or PNG image, nor JSON (it starts with {body[:8]!r})."
        )
    raise UnsupportedMediaTypeError(ctype)


def check_content_encoding(value: str | None) -> None:
    """Refuse a compressed body (415): scorepack reads bodies as sent.

    Ignoring ``Content-Encoding: gzip`` would score the compressed bytes as an image or
    JSON and answer something misleading; decoding it would let a small body expand past
    the body limit. Send bodies uncompressed (``identity``).
    """
    codings = [c.strip().lower() for c in (value or "").split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        raise UnsupportedEncodingError(value or "")


def decode_image(
    body: bytes, plan: ImagePlan, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> Decoded:
    """Decode one JPEG/PNG and preprocess it into a one-row batch for ``plan.input``.

    The header is read first: an image declaring more than ``max_pixels`` pixels is
    refused before any pixel is decoded.
    """
    kind = _image_kind(body)
    with _checked_header(body, kind, max_pixels) as image:
        return _decode_pixels(image, kind, plan)


def encoded_image(
    body: bytes, plan: ImagePlan, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> Decoded:
    """Check one image as :func:`decode_image` does, but leave a JPEG's pixels undecoded.

    For backends that decode JPEGs themselves (``Backend.accepts_encoded_images``, e.g.
    nvJPEG on a GPU). The body is sniffed, its header read and its size checked against
    ``max_pixels`` (413) exactly as :func:`decode_image` does; then an 8-bit greyscale or
    colour JPEG comes back as a one-row object array holding the bytes themselves.
    Anything else (PNG, CMYK JPEG) is decoded here, on the CPU, as :func:`decode_image`
    would, so the backend gets pixels for it.
    """
    kind = _image_kind(body)
    with _checked_header(body, kind, max_pixels) as image:
        if kind == "jpeg" and image.mode in _ENCODED_JPEG_MODES:
            return Decoded({plan.input: np.array([body], dtype=object)}, 1)
        return _decode_pixels(image, kind, plan)


#: JPEG colour models a backend's decoder is handed; CMYK/YCCK stay with Pillow
_ENCODED_JPEG_MODES = ("L", "RGB")


def _image_kind(body: bytes) -> str:
    kind = sniff(body)
    if kind not in ("jpeg", "png"):
        raise InvalidImageError(
            f"The body is not a JPEG or PNG image (it starts with {body[:8]!r})."
        )
    return kind


def _checked_header(body: bytes, kind: str, max_pixels: int) -> Image.Image:
    """The image with only its header read, or the 400/413 that its header earns.

    Its structure is checked first (:mod:`scorepack.imagelimits`): Pillow parses headers
    in Python, and a body built to make that, or the decode, expensive is refused
    before either starts.
    """
    (check_jpeg if kind == "jpeg" else check_png)(body)
    try:
        image = _open_header(body, kind)
    except Exception as exc:
        raise InvalidImageError(f"The {kind.upper()} header could not be read: {exc}") from exc
    width, height = image.size
    try:
        if width * height > max_pixels:
            raise ImageTooLargeError(width, height, max_pixels)
        if width < 1 or height < 1:
            raise InvalidImageError(f"The image has no pixels ({width}x{height}).")
        check_side(width, height)
    except RequestError:
        image.close()
        raise
    return image


def _decode_pixels(image: Image.Image, kind: str, plan: ImagePlan) -> Decoded:
    """Decode an image whose header passed, and preprocess it into one row."""
    if kind == "jpeg" and not plan.exact_decode:
        # libjpeg(-turbo) scales by 1/2, 1/4 or 1/8 inside the decoder, far cheaper than
        # decoding every pixel and resampling them away; never below what resize needs
        image.draft(plan.pil_mode, plan.decode_size(*image.size))
    try:
        image.load()
        row = plan.apply(image)
    except Exception as exc:
        # truncated or corrupt data: Pillow raises OSError, SyntaxError, zlib errors…
        raise InvalidImageError(f"The {kind.upper()} image could not be decoded: {exc}") from exc
    return Decoded({plan.input: row[None]}, 1)


def _open_header(body: bytes, kind: str) -> Image.Image:
    """Read only the header, through the format's own plugin.

    ``Image.open`` would refuse images over Pillow's global decompression-bomb limit
    itself, as a generic error; opening through the plugin leaves the pixel limit to
    :func:`decode_image`, which answers with the configured limit and a 413.
    """
    from PIL import JpegImagePlugin, PngImagePlugin

    if kind == "jpeg":
        return JpegImagePlugin.jpeg_factory(io.BytesIO(body))
    return PngImagePlugin.PngImageFile(io.BytesIO(body))


def decode_tensors(body: bytes, signature: Signature) -> Decoded:
    """Parse ``{"inputs": {name: nested lists}}`` and check it against the signature.

    A model with one input also takes ``{"inputs": [...]}``. Each tensor carries the batch
    dimension; a tensor one dimension short is taken as a single row.
    """
    document = loads_json(body)
    expected = _expected(signature)
    if not isinstance(document, dict) or "inputs" not in document:
        raise InvalidJSONError(f"Expected a JSON object like {expected}.")
    extra = sorted(set(document) - {"inputs"})
    if extra:
        raise InvalidJSONError(f"Unexpected key(s) {extra} in the body; expected {expected}.")
    tensors = document["inputs"]
    if isinstance(tensors, list) and len(signature.inputs) == 1:
        tensors = {signature.inputs[0].name: tensors}
    if not isinstance(tensors, dict):
        raise InvalidJSONError(f'"inputs" must map input names to arrays: {expected}.')
    return check_tensors(tensors, signature, plain=plain_numbers(body, document))


def _expected(signature: Signature) -> str:
    return '{"inputs": {' + ", ".join(f'"{n}": [...]' for n in signature.input_names) + "}}"


def check_tensors(
    tensors: Mapping[str, Any], signature: Signature, *, plain: bool = False
) -> Decoded:
    """Named array-likes checked against the signature: names, dtypes, shapes, batch size.

    ``plain=True`` says the values can hold only numbers (see :func:`tensor_array`).
    """
    names = signature.input_names
    missing = [n for n in names if n not in tensors]
    unknown = sorted(set(tensors) - set(names))
    if unknown:
        raise InvalidTensorError(
            f"Unknown input(s) {unknown}; the model's inputs are {names}.", unknown[0]
        )
    if missing:
        raise InvalidTensorError(
            f"Missing input(s) {missing}; the model's inputs are {names}.", missing[0]
        )
    arrays = {spec.name: _tensor(tensors[spec.name], spec, plain) for spec in signature.inputs}
    # an input without a batch dimension (an ONNX scalar) is one value for all the rows:
    # it says nothing about the batch size (its shape[0] was an IndexError: a 500)
    rows = {spec.name: arrays[spec.name].shape[0] for spec in signature.inputs if spec.batched}
    if not rows:
        raise InvalidTensorError(
            f"The model's inputs {names} have no batch dimension; scorepack serves models "
            "with at least one batched input."
        )
    if len(set(rows.values())) > 1:
        raise InvalidTensorError(f"The inputs disagree on the batch size: {rows}.")
    count = next(iter(rows.values()))
    if count == 0:
        raise InvalidTensorError("The inputs hold no rows (batch size 0).")
    return Decoded(arrays, count)


def _tensor(value: Any, spec: TensorSpec, plain: bool) -> np.ndarray:
    array = tensor_array(value, np.dtype(spec.dtype), spec.name, plain=plain)
    item = spec.item_shape
    if spec.batched and array.ndim == len(item):
        array = array[None]
    fixed = spec.shape[1:] if spec.batched else spec.shape
    got = array.shape[1:] if spec.batched else array.shape
    if array.ndim != len(spec.shape) or any(
        d is not None and d != g for d, g in zip(fixed, got, strict=False)
    ):
        raise InvalidTensorError(
            f"Input {spec.name!r} has shape {list(array.shape)}; expected {spec.shape_text()} "
            "(the first dimension is the batch; a single row may leave it out).",
            spec.name,
        )
    return array


# --- JSON bodies: one strict parser, one element check per datatype ------------------------
# Shared by every protocol that takes tensors as JSON (/score here, the V2 REST codec):
# the same body is refused the same way whichever route it came in on.


def loads_json(body: bytes) -> Any:
    """Parse a JSON request body strictly: a duplicate key anywhere is a 400 naming it.

    JSON parsers keep the last of two equal keys, so ``{"inputs": {"x": A, "x": B}}``
    would score B and drop A without a word. orjson parses (fast); the count of ``{`` and
    ``:`` in the text then proves there was no duplicate — every key is followed by one
    colon, so more colons than parsed keys means a duplicate (or a colon inside a string).
    Only then does the standard library parse it again, reporting each object's pairs,
    to name the key. NaN and Infinity are not JSON and are refused.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"The body is not valid JSON: {exc}") from exc
    objects, keys, _ = _count_objects(document)
    if body.count(b"{") != objects or body.count(b":") != keys:
        try:
            json.loads(body, object_pairs_hook=_refuse_duplicates)
        except RecursionError:
            # orjson takes 1,024 levels; the standard library's parser recurses in Python
            # and gives up sooner (a "[" a thousand deep with a ":" in a string)
            raise InvalidJSONError(
                "The body's JSON is nested too deeply to check for duplicate keys."
            ) from None
    return document


def _count_objects(value: Any) -> tuple[int, int, int]:
    """Objects, keys and the strings that are their values, reachable through objects and
    through lists that start with an object (arrays of data are not walked)."""
    objects = keys = strings = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            objects += 1
            keys += len(item)
            for v in item.values():
                kind = type(v)
                if kind is str:
                    strings += 1
                elif kind is dict or kind is list:
                    stack.append(v)
        elif type(item) is list and item and type(item[0]) is dict:
            stack.extend(v for v in item if type(v) in (dict, list))
    return objects, keys, strings


def plain_numbers(body: bytes, document: Any) -> bool:
    """Whether the arrays of a parsed JSON ``body`` can hold nothing but numbers: the text
    has no ``true`` or ``false``, and every ``"`` in it belongs to a key or to a string
    that is an object's value (one in an array, or an escaped quote, counts against it).
    Then NumPy may parse the arrays directly (:func:`tensor_array`'s ``plain``)."""
    if b"true" in body or b"false" in body:
        return False
    _, keys, strings = _count_objects(document)
    return body.count(b'"') == 2 * (keys + strings)


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJSONError(
                    f"The key {key!r} appears twice in one JSON object; each key must be "
                    "unique (a parser would silently keep only the last).",
                )
            seen.add(key)
    return found


#: numpy kinds a JSON array may parse to, per kind of wanted element type
_ACCEPTED_KINDS = {"f": "iuf", "c": "iuf", "i": "iu", "u": "iu", "b": "b"}
_KIND_NAMES = {
    "U": "strings",
    "f": "floats",
    "i": "integers",
    "u": "integers",
    "b": "booleans",
    "O": "nulls or mixed values",
}


def float_overflows(array: np.ndarray, want: np.dtype[Any]) -> bool:
    """Whether numbers parsed from JSON would become infinite as ``want`` (float16/32):
    JSON has no infinity, so one there is an overflow, not a value the client sent."""
    if array.dtype.kind not in "iuf" or want.itemsize >= 8:
        return False
    limit = float(np.finfo(want).max)
    return bool(array.max() > limit or array.min() < -limit)


def tensor_array(
    value: Any,
    dtype: np.dtype[Any],
    name: str,
    *,
    plain: bool = False,
    label: str | None = None,
) -> np.ndarray:
    """A JSON value (nested lists) as an array of ``dtype``, its elements checked by type.

    The one element-type check for every datatype: numbers for numeric inputs (integers
    for integer inputs, in range), ``true``/``false`` only for boolean inputs, strings
    only for string (BYTES) inputs; nulls and mixtures nowhere. NumPy alone would turn
    ``[true, 2.5]`` into floats and ``[1, "a"]`` into strings, and it pads every string
    to the longest one (a long string among many short ones, in a body of a megabyte,
    would ask for gigabytes). So nested lists become an array of the Python objects
    themselves, whose element types are looked at, unless ``plain`` says they can hold
    only numbers (:func:`plain_numbers`: no string values and no ``true``/``false`` in
    the body; gRPC's typed fields): then NumPy parses them directly, the fast way.
    ``label`` names the type in messages (V2 gives its datatype, e.g. ``FP32``; default:
    the NumPy dtype's name). An empty array holds no wrong element: any dtype takes it.
    Shapes are not checked here.
    """
    want = np.dtype(dtype)
    strings = want.kind in "USO"
    typename = label or want.name
    if isinstance(value, np.ndarray):
        # an array handed over as it is (V2 binary data, V2 BYTES): nothing was coerced
        array = value
        if strings and array.dtype.kind == "O":
            if not all(isinstance(x, str | bytes) for x in array.flat):
                _refuse(name, want, label, "values that are neither strings nor bytes")
        elif array.size and array.dtype.kind not in _accepted(want):
            _refuse(name, want, label, _KIND_NAMES.get(array.dtype.kind, array.dtype.name))
    elif plain and not strings:
        array = _rectangular(name, value, None)
        if array.size and array.dtype.kind not in _accepted(want):
            _refuse(name, want, label, _KIND_NAMES.get(array.dtype.kind, array.dtype.name))
    else:
        array = _from_objects(name, value, want, label)
    if want.kind in "iu":
        info = np.iinfo(want)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidTensorError(
                f"Input {name!r} has values outside the range of {typename}.", name
            )
    elif want.kind == "f" and array.size and float_overflows(array, want):
        raise InvalidTensorError(
            f"Input {name!r} has values outside the range of {typename} "
            f"(at most ±{np.finfo(want).max:.4g}).",
            name,
        )
    if strings:
        return array.astype(object, copy=False)
    return array.astype(want, copy=False)


#: the Python types of JSON elements each kind of wanted element type takes
_ACCEPTED_TYPES: dict[str, frozenset[type]] = {
    "f": frozenset({int, float}),
    "c": frozenset({int, float}),
    "i": frozenset({int}),
    "u": frozenset({int}),
    "b": frozenset({bool}),
}
#: JSON elements by Python type, as messages name them
_TYPE_NAMES: dict[type, str] = {str: "strings", float: "floats", int: "integers", bool: "booleans"}


def _accepted(want: np.dtype[Any]) -> str:
    return "US" if want.kind in "USO" else _ACCEPTED_KINDS.get(want.kind, "")


def _rectangular(name: str, value: Any, dtype: type | None) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except ValueError as exc:
        raise InvalidTensorError(f"Input {name!r} is not a rectangular array: {exc}", name) from exc


def _from_objects(name: str, value: Any, want: np.dtype[Any], label: str | None) -> np.ndarray:
    """Nested lists as an array of their Python elements (references: nothing padded),
    refused unless every element is of a type ``want`` takes; numbers come back as int64,
    float64 or bool for the range checks."""
    objects = _rectangular(name, value, object)
    found = set(map(type, objects.ravel()))
    if list in found:
        # ragged: NumPy made an array of the rows that did not line up
        raise InvalidTensorError(
            f"Input {name!r} is not a rectangular array: its rows differ in length.", name
        )
    wanted = {str} if want.kind in "USO" else _ACCEPTED_TYPES.get(want.kind, frozenset())
    wrong = found - wanted
    if wrong:
        if len(found) > 1 and str in found:
            problem = "numbers mixed with strings"
        elif len(found) > 1 and bool in found:
            problem = "booleans mixed with numbers"
        elif len(wrong) == 1 and (kind := next(iter(wrong))) in _TYPE_NAMES:
            problem = _TYPE_NAMES[kind]
        else:
            problem = "nulls or mixed values"
        _refuse(name, want, label, problem)
    if want.kind in "USO" or not objects.size:
        return objects
    # uint64 for unsigned inputs: a UINT64 value past 2^63 fits it, not int64 (a negative
    # one fits neither and is refused as out of range, as it should be)
    base = {"b": np.bool_, "i": np.int64, "u": np.uint64}.get(want.kind, np.float64)
    try:
        return objects.astype(base)
    except OverflowError:
        raise InvalidTensorError(
            f"Input {name!r} has values outside the range of {label or want.name}.", name
        ) from None


def _refuse(name: str, want: np.dtype[Any], label: str | None, problem: str) -> None:
    what = "strings" if want.kind in "USO" else "booleans" if want.kind == "b" else None
    if what is None:
        wanted = f"{label or want.name} numbers"
    else:
        wanted = f"{what} ({label})" if label else what
    raise InvalidTensorError(
        f"Input {name!r} must hold {wanted}, but the JSON holds {problem} (true/false "
        "only for bool inputs, strings only for string inputs, no nulls).",
        name,
    )


def encode_json(document: Mapping[str, Any]) -> bytes:
    """The one JSON encoder for responses (NumPy arrays and scalars included)."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
