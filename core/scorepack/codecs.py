"""Request bodies in, response bodies out.

In: raw image bytes (JPEG or PNG, told by content type or sniffed from the bytes) or JSON
named tensors ``{"inputs": {"name": [[...]]}}``. Images are decoded here
(:func:`decode_image`), or, for a backend that decodes JPEGs itself, only checked and
passed on as bytes (:func:`encoded_image`). Out: one JSON encoder, orjson.
"""

from __future__ import annotations

import io
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
    UnsupportedMediaTypeError,
)
from .preprocess import ImagePlan
from .signature import Signature, TensorSpec

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "Decoded",
    "body_kind",
    "check_tensors",
    "decode_image",
    "decode_tensors",
    "encode_json",
    "encoded_image",
    "sniff",
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
    """The image with only its header read, or the 400/413 that its header earns."""
    try:
        image = _open_header(body, kind)
    except Exception as exc:
        raise InvalidImageError(f"The {kind.upper()} header could not be read: {exc}") from exc
    width, height = image.size
    problem: RequestError | None = None
    if width * height > max_pixels:
        problem = ImageTooLargeError(width, height, max_pixels)
    elif width < 1 or height < 1:
        problem = InvalidImageError(f"The image has no pixels ({width}x{height}).")
    if problem is not None:
        image.close()
        raise problem
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
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"The body is not valid JSON: {exc}") from exc
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
    return check_tensors(tensors, signature)


def _expected(signature: Signature) -> str:
    return '{"inputs": {' + ", ".join(f'"{n}": [...]' for n in signature.input_names) + "}}"


def check_tensors(tensors: Mapping[str, Any], signature: Signature) -> Decoded:
    """Named array-likes checked against the signature: names, dtypes, shapes, batch size."""
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
    arrays = {spec.name: _tensor(tensors[spec.name], spec) for spec in signature.inputs}
    rows = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(rows.values())) > 1:
        raise InvalidTensorError(f"The inputs disagree on the batch size: {rows}.")
    count = next(iter(rows.values()))
    if count == 0:
        raise InvalidTensorError("The inputs hold no rows (batch size 0).")
    return Decoded(arrays, count)


def _tensor(value: Any, spec: TensorSpec) -> np.ndarray:
    want = np.dtype(spec.dtype)
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise InvalidTensorError(
            f"Input {spec.name!r} is not a rectangular array: {exc}", spec.name
        ) from exc
    array = _cast(array, want, spec)
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


def _cast(array: np.ndarray, want: np.dtype[Any], spec: TensorSpec) -> np.ndarray:
    kind = array.dtype.kind
    if want.kind in "fc":
        ok = kind in "biuf"
    elif want.kind in "iu":
        ok = kind in "biu"
    elif want.kind == "b":
        ok = kind == "b"
    else:  # strings and objects
        ok = kind in "USO"
    if not ok:
        got = {"U": "strings", "f": "floats", "b": "booleans", "O": "mixed values"}.get(
            kind, array.dtype.name
        )
        raise InvalidTensorError(
            f"Input {spec.name!r} must be {want.name}, but the JSON holds {got}.", spec.name
        )
    if want.kind in "iu" and kind in "iu":
        info = np.iinfo(want)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidTensorError(
                f"Input {spec.name!r} has values outside the range of {want.name}.", spec.name
            )
    if want.kind in "USO":
        return array.astype(object)
    return array.astype(want, copy=False)


def encode_json(document: Mapping[str, Any]) -> bytes:
    """The one JSON encoder for responses (NumPy arrays and scalars included)."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
