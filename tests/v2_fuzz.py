"""Hypothesis strategies for Open Inference Protocol (V2) inference requests, and the
answers expected when one is accepted (tests/test_fuzz_v2.py).

Each request starts as a good one for one of the fuzz server's models, so that fuzzing
reaches decoding, batching and the response encoders rather than stopping at the first
check, and then takes a few mutations: names, datatypes and shapes changed, data cut,
lengthened, re-nested or given elements of the wrong type, inputs dropped, doubled or
invented, binary sizes and ``Inference-Header-Content-Length`` that lie, BYTES length
prefixes that lie, outputs and parameters of every JSON (or protobuf) kind. While no
mutation touched the inputs, the request's arrays are kept, and an accepted request's
outputs must be the model's outputs for them.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from fixture_backends import (
    EchoBackend,
    EncodedImageBackend,
    ImageAndScaleBackend,
    TypesBackend,
    WideTypesBackend,
)
from images import encode, image, jpeg, png, truncated_jpeg, truncated_png, with_declared_size
from scorepack import Scorer
from scorepack.repository import ModelSource, Repository
from serving_helpers import scoring_config

__all__ = [
    "ANY",
    "IMAGE_SIZE",
    "MAX_IMAGES",
    "MODELS",
    "OUTPUTS",
    "Sent",
    "expected_outputs",
    "fuzz_repository",
    "grpc_requests",
    "rest_requests",
    "to_raw",
]


@dataclass(frozen=True)
class Spec:
    """One model input: name, V2 datatype, shape of a row."""

    name: str
    datatype: str
    item: tuple[int, ...]


IMAGE_SIZE = 16
#: the image model's max batch size: more images than this in one request are refused
MAX_IMAGES = 4
#: the fuzz server's models (tests/fixture_backends.py): their inputs, then outputs
MODELS: dict[str, tuple[Spec, ...]] = {
    "types": (Spec("f", "FP32", (2,)), Spec("i", "INT64", (3,)), Spec("b", "BOOL", (1,))),
    "wide": (
        Spec("h", "FP16", (2,)),
        Spec("u", "UINT8", (3,)),
        Spec("q", "UINT64", (1,)),
        Spec("s", "BYTES", ()),
    ),
    "echo": (Spec("x", "FP32", (2,)),),
    "image": (Spec("image", "FP32", (IMAGE_SIZE, IMAGE_SIZE, 3)),),
    "scaled": (Spec("image", "FP32", (8, 8, 3)), Spec("scale", "FP32", (1,))),
}
OUTPUTS: dict[str, tuple[str, ...]] = {
    "types": ("twice", "total", "negated", "word"),
    "wide": ("h2", "usum", "q", "s"),
    "echo": ("y",),
    "image": ("pixels",),
    "scaled": ("mean", "scale"),
}
#: the served versions of each model (None: the model has no numbered versions)
VERSIONS: dict[str, tuple[str, ...]] = {"types": ("1", "2")}


def fuzz_repository(root: Path) -> Repository:
    """The models above (tests/fixture_backends.py), ``types`` in two versions; the image
    models with small limits, so that images over them are cheap to send."""

    def source(name: str, backend: type, version: str | None = None, **config: Any) -> ModelSource:
        def create() -> Scorer:
            model = backend(root / f"{name}.m")
            return Scorer(model, scoring_config(**config), name=name, version=version)

        return ModelSource(name, version, create)

    limits = {"max_image_pixels": 200 * 200, "max_body_bytes": 256 * 1024}
    return Repository(
        [
            source("types", TypesBackend, "1"),
            source("types", TypesBackend, "2"),
            source("wide", WideTypesBackend),
            source("echo", EchoBackend),
            source("image", EncodedImageBackend, max_batch_size=MAX_IMAGES, **limits),
            source("scaled", ImageAndScaleBackend, max_batch_size=MAX_IMAGES, **limits),
        ]
    )


DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
)  # fmt: skip
_NUMPY = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2",
    "FP32": "<f4", "FP64": "<f8", "BF16": "<f4",
}  # fmt: skip
_BAD_DATATYPES = ("FP128", "", "fp32", "STRING", "INT", "BYTES ", "FP32\x00", "ÄÖ")

# --- encoded images, made once ----------------------------------------------------------------

_GOOD_JPEG = jpeg(40, 30, seed=1)
IMAGES: tuple[bytes, ...] = (
    _GOOD_JPEG,
    jpeg(IMAGE_SIZE, IMAGE_SIZE, seed=2),
    png(20, 12, seed=3),
    jpeg(24, 24, mode="L", seed=4),
    png(8, 8, mode="RGBA", seed=5),
    jpeg(600, 600, seed=6),  # over the pixel limit
    truncated_jpeg(jpeg(64, 48, seed=7)),
    truncated_png(png(64, 48, seed=8)),
    _GOOD_JPEG[:40],
    with_declared_size(png(32, 32), 60_000, 60_000),
    with_declared_size(jpeg(32, 32), 3000, 3000),
    encode(image(8, 8), "GIF"),
    b"\xff\xd8\xff" + bytes(50),
    b"\x89PNG\r\n\x1a\n" + bytes(30),
    b"",
    b"not an image",
)
GOOD_IMAGE = _GOOD_JPEG

# --- elements and arrays --------------------------------------------------------------------


def _elements(datatype: str) -> st.SearchStrategy[Any]:
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "BYTES":
        return st.binary(max_size=8) | st.text(max_size=6).map(lambda t: t.encode("utf-8"))
    if datatype in ("FP16", "FP32", "BF16", "FP64"):
        width = {"FP16": 16, "FP64": 64}.get(datatype, 32)
        return st.floats(allow_nan=False, allow_infinity=False, width=width)
    info = np.iinfo(np.dtype(_NUMPY[datatype]))
    low, high = int(info.min), int(info.max)
    # hypothesis keeps bounded integers mostly small: the type's edges, and values drawn
    # evenly over its whole range, are added by hand
    return st.one_of(
        st.integers(low, high),
        st.sampled_from([low, high, high - 1, low + 1, (low + high) // 2 + 1]),
        st.integers(0, 2**32).map(lambda seed: random.Random(seed).randint(low, high)),
    )


def _bf16(array: np.ndarray) -> np.ndarray:
    # what a BF16 tensor holds: a float32's top 16 bits (the server widens them exactly)
    bits = np.ascontiguousarray(array, "<f4").view("<u4") & np.uint32(0xFFFF0000)
    return bits.view("<f4")


@st.composite
def _array(draw: Any, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    if count <= 24:
        values = draw(st.lists(_elements(datatype), min_size=count, max_size=count))
    else:  # an image's pixels: too many for hypothesis to draw one by one
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        values = list(rng.uniform(-4, 4, count).astype(np.float32))
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    array = np.array(values, dtype=_NUMPY[datatype]).reshape(shape)
    return _bf16(array) if datatype == "BF16" else array


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's bytes on the wire: little-endian, BYTES length-prefixed, BF16 in 16 bits
    (an array of another type is sent as the datatype says, as a careless client would)."""
    if datatype == "BYTES" or array.dtype == object:
        items = [x if isinstance(x, bytes) else np.asarray(x).tobytes() for x in array.flat]
        return b"".join(len(b).to_bytes(4, "little") + b for b in items)
    with np.errstate(all="ignore"):  # values cast to a type they overflow: the point
        if datatype == "BF16":
            wide = np.ascontiguousarray(array, "<f4").view("<u4")
            return (wide >> 16).astype("<u2").tobytes()
        return np.ascontiguousarray(array, _NUMPY.get(datatype, array.dtype)).tobytes()


@dataclass
class Tensor:
    """An input as it will be sent: ``array`` None once a mutation left it without data."""

    name: Any
    datatype: Any
    shape: Any
    array: np.ndarray | None


#: the share of requests left good (their answers checked by value)
CLEAN = 0.3


class Odds:
    """The request's shape decided with plain odds: hypothesis draws its integers and
    choices with a strong pull towards the first and smallest ones (fine for values, but
    "one in ten" would come far more often), so whether and which mutation happens comes
    from a Random that hypothesis seeds (derandomized: the same every run). Values —
    elements, dimensions, JSON, parameters — are still hypothesis's, edge cases and all."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw
        self.random = draw(st.randoms(use_true_random=True))
        #: a request left good, to check the answers; the others get mutations
        self.clean = self.chance(CLEAN)
        #: some mutation happened (the request may still be good, but is not checked so)
        self.spoiled = False

    def chance(self, p: float) -> bool:
        return bool(self.random.random() < p)

    def mutate(self, p: float) -> bool:
        """Whether to make the request worse here (never in a clean one)."""
        hit = not self.clean and self.chance(p)
        self.spoiled |= hit
        return hit

    def choice(self, options: Any) -> Any:
        return self.random.choice(list(options))

    def between(self, low: int, high: int) -> int:
        return self.random.randint(low, high)


def _good_inputs(odds: Odds, model: str) -> list[Tensor]:
    draw = odds.draw
    rows = odds.choice([1, 1, 2, 3])
    tensors = []
    if model in ("image", "scaled") and odds.chance(0.6):
        # encoded images, as BYTES: each becomes a row of the image input
        rows = odds.choice([1, 1, 1, 2, 3, MAX_IMAGES])
        if odds.mutate(0.1):
            rows = odds.choice([MAX_IMAGES + 1, 0])
        # mostly images that decode: one bad one is enough to refuse them all
        bodies = [odds.choice(IMAGES if odds.mutate(0.3) else IMAGES[:5]) for _ in range(rows)]
        array = np.empty(rows, dtype=object)
        array[:] = bodies
        tensors.append(Tensor("image", "BYTES", [rows], array))
    for spec in MODELS[model]:
        if tensors and spec.name == "image":
            continue
        datatype = spec.datatype
        if datatype == "FP32" and odds.chance(0.2):
            datatype = "BF16"  # taken where the model takes FP32
        shape = (rows, *spec.item)
        tensors.append(Tensor(spec.name, datatype, list(shape), draw(_array(datatype, shape))))
    return tensors


# --- mutations shared by both protocols ---------------------------------------------------------

_NAMES = ("f", "i", "b", "h", "u", "s", "x", "image", "y", "twice", "", "F", "nope", "image ")
_DIMS = st.one_of(
    st.integers(-3, 8),
    st.sampled_from([0, 1, 2, 3, 16, 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1]),
)
_TENSOR_MUTATIONS = (
    "name", "datatype", "shape", "dim", "array", "cut", "nodata", "drop", "dup", "extra", "swap",
)  # fmt: skip


def _mutate_tensor(odds: Odds, tensors: list[Tensor], *, grpc: bool) -> None:
    draw = odds.draw
    if not tensors:
        tensors.append(Tensor("x", "FP32", [1, 2], np.zeros((1, 2), "<f4")))
        return
    index = odds.between(0, len(tensors) - 1)
    tensor = tensors[index]
    what = odds.choice(_TENSOR_MUTATIONS)
    if what == "name":
        tensor.name = draw(st.sampled_from(_NAMES) | st.text(max_size=5))
        if not grpc and odds.chance(0.2):
            tensor.name = draw(_JSON)  # not a string at all
    elif what == "datatype":
        tensor.datatype = odds.choice(DATATYPES + _BAD_DATATYPES)
        if not grpc and odds.chance(0.2):
            tensor.datatype = draw(_JSON)
    elif what == "shape":
        tensor.shape = draw(st.lists(_DIMS, max_size=5))
        if not grpc and odds.chance(0.25):
            tensor.shape = draw(_JSON)  # not a list of sizes at all
    elif what == "dim" and isinstance(tensor.shape, list) and tensor.shape:
        tensor.shape[odds.between(0, len(tensor.shape) - 1)] = draw(_DIMS)
    elif what == "array":
        datatype = odds.choice(DATATYPES)
        shape = tuple(odds.between(0, 3) for _ in range(odds.between(0, 3)))
        tensor.array = draw(_array(datatype, shape))
    elif what == "cut" and tensor.array is not None:
        flat = tensor.array.reshape(-1)
        tensor.array = flat[: odds.between(0, max(0, flat.size - 1))]
    elif what == "nodata":
        tensor.array = None
    elif what == "drop":
        tensors.pop(index)
    elif what == "dup":
        copy = Tensor(tensor.name, tensor.datatype, tensor.shape, tensor.array)
        tensors.insert(index, copy)
    elif what == "extra":
        tensors.append(odds.choice(_good_inputs(odds, odds.choice(sorted(MODELS)))))
    elif what == "swap" and len(tensors) > 1:
        # the same inputs in another order: still good (the fingerprint ignores order)
        other = odds.between(0, len(tensors) - 1)
        tensors[index], tensors[other] = tensors[other], tensors[index]


def _mutated(odds: Odds, tensors: list[Tensor], *, grpc: bool) -> bool:
    """Mutate the inputs (or not); True when they are no longer the good ones."""
    before = _fingerprint(tensors)
    for _ in range(0 if odds.clean else odds.choice([0, 1, 1, 1, 2, 3])):
        _mutate_tensor(odds, tensors, grpc=grpc)
    return before != _fingerprint(tensors)


def _fingerprint(tensors: list[Tensor]) -> list[str]:
    return sorted(
        repr((t.name, t.datatype, t.shape, None if t.array is None else
              (t.array.dtype.str, t.array.shape, to_raw(t.array, "BYTES"))))
        for t in tensors
    )  # fmt: skip


# --- REST ---------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=12)
_JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    # the edges of the datatypes: int64, uint64, float16/32/64, the smallest float
    st.sampled_from([2**63, 2**64 - 1, -(2**63) - 1, 65520.0, 1e39, 1e308, -0.0, 5e-324]),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)
_JSON = st.recursive(
    _JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_PARAMETER_KEYS = (
    "binary_data_size", "binary_data", "binary_data_output", "content_type", "priority",
    "timeout", "shared_memory_region", "classification", "x", "",
)  # fmt: skip
_PARAMETERS = st.dictionaries(st.sampled_from(_PARAMETER_KEYS) | _TEXT, _JSON, max_size=3)
#: parameters the server reads (the rest it passes through): a request with one of them
#: set by the fuzzing is not checked by value
_READ = {"binary_data", "binary_data_output", "binary_data_size", "shared_memory_region",
         "classification"}  # fmt: skip


#: Sent.outputs when the request's outputs are not a list of names
ANY = ["?"]


@dataclass
class Sent:
    """A request as sent, and what a 200 must answer (``expect`` None: anything well formed)."""

    model: str  # the model it was aimed at ("" for none served)
    protocol_args: dict[str, Any]
    #: the inputs the model must have seen, when no mutation touched them
    expect: dict[str, np.ndarray] | None = None
    #: a good request, which must be answered 200 (not only refused for a good reason)
    accept: bool = False
    #: send the body in this many pieces, chunked (0: with a Content-Length)
    chunks: int = 0
    #: the outputs asked for (None: all; ANY: not known)
    outputs: list[str] | None = None
    request_id: Any = None


def _target(odds: Odds, model: str) -> tuple[str, str | None]:
    name = model
    if odds.mutate(0.15):
        name = odds.choice(["nope", "Types", "types.", "echo2", "%2e", "types%2Fx"])
    version = odds.choice((*VERSIONS.get(model, (None,)), None))
    if odds.mutate(0.15):
        version = odds.choice(["1", "2", "3", "0", "01", "-1", "x", "latest", "1%2F2"])
    return name, version


def _served(name: str, version: str | None) -> bool:
    if name not in MODELS:
        return False
    return version is None or version in VERSIONS.get(name, ())


def _json_data(odds: Odds, array: np.ndarray) -> Any:
    """The JSON ``data`` of a tensor: its array flat or nested (BYTES as text)."""
    if array.dtype == object:
        flat: Any = [b.decode("utf-8", "replace") for b in array.reshape(-1)]
        texts = np.empty(len(flat), dtype=object)
        texts[:] = flat
        nested = texts.reshape(array.shape).tolist()
    else:
        flat = array.reshape(-1).tolist()
        nested = array.tolist()
    return nested if odds.chance(0.5) else flat


def _mutate_data(odds: Odds, data: Any) -> Any:
    draw = odds.draw
    what = odds.choice(["random", "element", "cut", "longer", "scalar", "deep", "wrap"])
    if what == "random":
        return draw(st.recursive(_JSON_SCALAR, lambda c: st.lists(c, max_size=4), max_leaves=10))
    if what == "scalar":
        return draw(_JSON_SCALAR)
    if what == "deep":
        return [[[data]]]
    if what == "wrap":
        return {"data": data}
    flat = list(_flat(data))
    if what == "element" and flat:
        flat[odds.between(0, len(flat) - 1)] = draw(_JSON)
    elif what == "cut":
        flat = flat[: odds.between(0, len(flat))]
    elif what == "longer":
        flat += draw(st.lists(_JSON_SCALAR, min_size=1, max_size=3))
    return flat


def _flat(data: Any) -> Any:
    if isinstance(data, list):
        for item in data:
            yield from _flat(item)
    else:
        yield data


def _lie(odds: Odds, value: int) -> Any:
    """A byte count: mostly true, else one that lies or is not a count at all."""
    if not odds.mutate(0.15):
        return value
    return odds.choice(
        [value - 1, value + 1, 0, -1, 2**63, odds.between(0, value + 16), str(value),
         float(value), True, None]
    )  # fmt: skip


def _lying_prefix(odds: Odds, raw: bytes) -> bytes:
    """BYTES raw data whose first length prefix says something else."""
    if len(raw) < 4:
        return raw
    said = odds.choice([0, 1, 2**31, 2**32 - 1, odds.between(0, len(raw) + 4)])
    return said.to_bytes(4, "little") + raw[4:]


def _raw_body(odds: Odds, model: str) -> bytes:
    what = odds.choice(["image", "rows"])
    if odds.mutate(0.3):
        what = odds.choice(["junk", "empty"])
    if what == "image":
        return bytes(odds.choice(IMAGES))
    if what == "rows":
        body = np.array(odds.draw(_array("FP32", (odds.between(1, 4), 2)))).tobytes()
        return body[: odds.between(0, len(body))] if odds.mutate(0.3) else body
    if what == "junk":
        return bytes(odds.draw(st.binary(min_size=1, max_size=64)))
    return b""


@st.composite
def rest_requests(draw: Any) -> Sent:
    """One V2 REST infer request: ``protocol_args`` are httpx ``request()`` arguments."""
    odds = Odds(draw)
    model = odds.choice(sorted(MODELS))
    name, version = _target(odds, model)
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    headers: dict[str, Any] = {}
    aimed = model if _served(name, version) and name == model else ""
    kind = odds.choice(["json", "json", "binary", "binary", "raw"])
    if kind == "raw":
        body = _raw_body(odds, model)
        headers["inference-header-content-length"] = odds.choice(["0", "0", "00"])
        if odds.chance(0.3):
            headers["content-type"] = odds.choice(["image/jpeg", "application/octet-stream"])
        sent = Sent(aimed, {"method": "POST", "url": path, "headers": headers, "content": body})
        raw_rows = body and len(body) % 8 == 0 and body[:1] not in (b"\xff", b"\x89")
        if aimed == "echo" and raw_rows:
            sent.expect = {"x": np.frombuffer(body, "<f4").reshape(-1, 2)}
            sent.accept = True
        return sent
    tensors = _good_inputs(odds, model)
    good = not _mutated(odds, tensors, grpc=False)
    items: list[Any] = []
    chunks: list[bytes] = []
    for tensor in tensors:
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                "shape": tensor.shape}  # fmt: skip
        parameters = draw(_PARAMETERS | st.none()) if odds.mutate(0.2) else None
        if isinstance(parameters, dict) and set(parameters) & _READ:
            good = False
        array = tensor.array
        if array is not None and kind == "binary" and odds.chance(0.8):
            datatype = tensor.datatype
            known = isinstance(datatype, str) and (datatype in _NUMPY or datatype == "BYTES")
            raw = to_raw(array, datatype if known else "BYTES")
            if array.dtype == object and odds.mutate(0.2):
                raw, good = _lying_prefix(odds, raw), False
            size = _lie(odds, len(raw))
            good = good and type(size) is int and size == len(raw)
            parameters = {**(parameters or {}), "binary_data_size": size}
            chunks.append(raw)
            if odds.mutate(0.05):
                item["data"] = _json_data(odds, array)  # and its data in the JSON too
        elif array is not None:
            if array.dtype == object and not all(_utf8(b) for b in array.flat):
                good = False  # JSON carries text, not these bytes
            item["data"] = _json_data(odds, array)
            if odds.mutate(0.2):
                item["data"], good = _mutate_data(odds, item["data"]), False
        if parameters is not None:
            item["parameters"] = parameters
        items.append(item)
    document: dict[str, Any] = {"inputs": items}
    sent = Sent(aimed, {"method": "POST", "url": path, "headers": headers})
    good = _rest_options(odds, document, model, sent) and good
    if odds.mutate(0.05):
        document["inputs"] = odds.choice([[], {}, None, 3, "x", [[]], [None]])
        good = False
    header = json.dumps(document).encode()
    if odds.mutate(0.05):
        header, good = header[: odds.between(0, len(header))], False
    body = header + b"".join(chunks)
    if kind == "binary":
        length: Any = _lie(odds, len(header))
        if odds.mutate(0.08):
            length = odds.choice(["", "abc", "-1", "1e3", "0x10", "²", "9" * 30, "١", "+5"])
        good = good and str(length) == str(len(header))
        if length == 0:
            # the whole body is then one raw input, as the binary extension says: none of
            # the JSON's options apply
            sent.outputs = sent.request_id = None
        # as bytes: httpx would not send "²" as a str (h11 passes it on as obs-text)
        headers["inference-header-content-length"] = str(length).encode("utf-8")
        if odds.mutate(0.05):
            body, good = body + draw(st.binary(min_size=1, max_size=8)), False
    if odds.chance(0.2):
        headers["content-type"] = odds.choice(["application/json", "application/vnd.x+json"])
    if odds.mutate(0.1):
        headers["content-type"] = odds.choice(
            ["application/json", "text/plain", "image/jpeg", "application/x-www-form-urlencoded",
             "application/json; charset=latin-1", "application/vnd.x+json", ""]
        )  # fmt: skip
    sent.protocol_args["content"] = body
    # now and then in chunks (Transfer-Encoding: chunked), as a streaming client sends it
    sent.chunks = odds.choice([0, 0, 0, 1, 2, 7])
    if good and aimed and not odds.spoiled:
        sent.expect = {t.name: t.array for t in tensors if t.array is not None}
        # bytes that are not text cannot come back as JSON (a 400, after the model ran)
        sent.accept = all(_utf8(b) for t in tensors if t.datatype == "BYTES" for b in t.array.flat)
    return sent


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _output_names(odds: Odds, model: str) -> list[str]:
    """Some of the model's outputs (none: all), in any order; now and then ones it lacks,
    or one twice."""
    names = list(OUTPUTS[model])
    odds.random.shuffle(names)
    names = names[: odds.between(0, len(names))]
    if odds.mutate(0.3):
        names.insert(odds.between(0, len(names)), odds.choice(["nope", "y", "probs", *names]))
    return names


def _rest_options(odds: Odds, document: dict[str, Any], model: str, sent: Sent) -> bool:
    """Outputs wanted, parameters and id: sometimes good, sometimes not. False when
    they were set to something that changes the answer the oracle expects."""
    draw, good = odds.draw, True
    if odds.chance(0.3):
        names = _output_names(odds, model)
        outputs: Any = []
        for out in names:
            entry: Any = {"name": out}
            if odds.chance(0.4):
                entry["parameters"] = {"binary_data": odds.chance(0.5)}
                if odds.mutate(0.3):
                    entry["parameters"] = draw(_PARAMETERS)
            outputs.append(entry)
        document["outputs"] = outputs
        sent.outputs = names
        if odds.mutate(0.1):
            document["outputs"], sent.outputs = draw(_JSON), ANY
    if odds.chance(0.3):
        document["parameters"] = {"binary_data_output": odds.chance(0.5)}
        if odds.chance(0.3):
            document["parameters"]["priority"] = draw(_TEXT | _JSON_SCALAR)  # passed through
        if odds.mutate(0.3):
            document["parameters"] = draw(_PARAMETERS | _JSON)
    if odds.chance(0.3):
        document["id"] = draw(_JSON if odds.mutate(0.4) else _TEXT)
        sent.request_id = document["id"]
    if odds.chance(0.08):
        document[odds.choice(["model_name", "model_version", "extra"])] = draw(_JSON)
    return good


# --- gRPC ---------------------------------------------------------------------------------------

_CONTENTS_FIELD = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
_FIELDS = sorted(set(_CONTENTS_FIELD.values()))
_GRPC_TEXT = st.text(max_size=10)
_GRPC_PARAMETERS = st.dictionaries(
    st.sampled_from(_PARAMETER_KEYS) | _GRPC_TEXT,
    st.one_of(
        st.tuples(st.just("bool_param"), st.booleans()),
        st.tuples(st.just("int64_param"), st.integers(-(2**63), 2**63 - 1)),
        st.tuples(st.just("uint64_param"), st.integers(0, 2**64 - 1)),
        st.tuples(st.just("string_param"), _GRPC_TEXT),
        st.tuples(st.just("double_param"), st.floats()),
        st.tuples(st.just("unset"), st.none()),
    ),
    max_size=3,
)  # a parameters map: key → (oneof field, value), every kind of InferParameter


def _set_parameters(target: Any, parameters: dict[str, tuple[str, Any]]) -> None:
    for key, (kind, value) in parameters.items():
        slot = target[key]
        if kind != "unset":
            setattr(slot, kind, value)


def _fill_contents(odds: Odds, tensor: Any, datatype: str, array: np.ndarray) -> bool:
    """Put ``array`` in a typed contents field (now and then the wrong one); False unless
    it went in the datatype's own field (values protobuf refuses leave it empty)."""
    field_name = _CONTENTS_FIELD.get(datatype, "fp32_contents")
    if odds.mutate(0.1):
        field_name = odds.choice(_FIELDS)
    values = array.reshape(-1).tolist()
    if field_name != "bool_contents":
        values = [int(v) if isinstance(v, bool) else v for v in values]
    try:
        getattr(tensor.contents, field_name).extend(values)
    except (TypeError, ValueError, OverflowError):
        tensor.ClearField("contents")
        return False
    return field_name == _CONTENTS_FIELD.get(datatype)


def _mangled(odds: Odds, data: bytes) -> bytes:
    """A serialized message with bits flipped, cut short, doubled or with junk after it."""
    mangled = bytearray(data)
    how = odds.choice(["flip", "cut", "twice", "junk"])
    if how == "flip" and mangled:
        for _ in range(odds.between(1, 4)):
            mangled[odds.between(0, len(mangled) - 1)] ^= 1 << odds.between(0, 7)
    elif how == "cut":
        mangled = mangled[: odds.between(0, len(mangled))]
    elif how == "twice":
        mangled = mangled * 2
    else:
        mangled += odds.draw(st.binary(min_size=1, max_size=12))
    return bytes(mangled)


@st.composite
def grpc_requests(draw: Any) -> Sent:
    """One ModelInferRequest: ``protocol_args`` holds ``message`` and ``wire`` (the bytes
    to send instead of the message, when they were mangled)."""
    from scorepack.proto.messages import messages

    odds = Odds(draw)
    model = odds.choice(sorted(MODELS))
    name, version = _target(odds, model)
    aimed = model if _served(name, version) and name == model else ""
    request = messages.ModelInferRequest(model_name=name, model_version=version or "")
    if odds.chance(0.3):
        request.id = draw(_GRPC_TEXT)
    tensors = _good_inputs(odds, model)
    good = not _mutated(odds, tensors, grpc=True)
    typed = odds.chance(0.3)
    for tensor in tensors:
        datatype = tensor.datatype if isinstance(tensor.datatype, str) else "FP32"
        item = request.inputs.add(name=str(tensor.name), datatype=datatype)
        dims = tensor.shape if isinstance(tensor.shape, list) else []
        item.shape.extend(d if isinstance(d, int) and -(2**63) <= d < 2**63 else 1 for d in dims)
        if odds.mutate(0.15):
            _set_parameters(item.parameters, draw(_GRPC_PARAMETERS))
        array = tensor.array
        if array is None:
            continue
        if not typed or (datatype in ("FP16", "BF16") and odds.chance(0.7)):
            known = datatype in _NUMPY or datatype == "BYTES"
            raw = to_raw(array, datatype if known and array.dtype != object else "BYTES")
            if odds.mutate(0.1):
                raw, good = raw[: odds.between(0, len(raw))] + draw(st.binary(max_size=3)), False
            elif array.dtype == object and odds.mutate(0.15):
                raw, good = _lying_prefix(odds, raw), False
            request.raw_input_contents.append(raw)
            if typed or odds.mutate(0.05):
                _fill_contents(odds, item, datatype, array)
                good = False  # raw and contents both
        else:
            good = _fill_contents(odds, item, datatype, array) and good
    if request.raw_input_contents and odds.mutate(0.08):
        good = False
        if odds.chance(0.5):
            request.raw_input_contents.pop()
        else:
            request.raw_input_contents.append(draw(st.binary(max_size=8)))
    wanted = None
    if odds.chance(0.3):
        wanted = _output_names(odds, model)
        for out in wanted:
            entry = request.outputs.add(name=out)
            if odds.mutate(0.25):
                _set_parameters(entry.parameters, draw(_GRPC_PARAMETERS))
    if odds.chance(0.3):
        request.parameters["priority"].string_param = draw(_GRPC_TEXT)  # passed through
        if odds.mutate(0.5):
            _set_parameters(request.parameters, draw(_GRPC_PARAMETERS))
    wire = None
    if odds.mutate(0.08):
        wire, good = _mangled(odds, request.SerializeToString()), False
    sent = Sent(aimed, {"message": request, "wire": wire}, outputs=wanted,
                request_id=request.id)  # fmt: skip
    if good and aimed and not odds.spoiled:
        sent.expect = {t.name: t.array for t in tensors if t.array is not None}
        sent.accept = True
    return sent


# --- what a model answers -----------------------------------------------------------------------


def expected_outputs(model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The outputs the fixture model computes for ``inputs``, those that can be known
    here (None: none, only their shapes)."""
    if model == "types":
        b = inputs["b"].astype(bool)
        with np.errstate(over="ignore"):
            twice = inputs["f"].astype(np.float32) * np.float32(2)
        return {
            "twice": twice,
            "total": inputs["i"].astype(np.int64).sum(axis=1),
            "negated": ~b,
            "word": np.array([b"yes" if v else b"no" for v in b[:, 0]], dtype=object),
        }
    if model == "wide":
        with np.errstate(over="ignore"):  # 2 × 60000 is inf in float16
            h2 = inputs["h"].astype(np.float16) * np.float16(2)
        return {
            "h2": h2,
            "usum": inputs["u"].astype(np.uint8).sum(axis=1, dtype=np.uint16),
            "q": inputs["q"],
            "s": inputs["s"],
        }
    if model == "echo":
        return {"y": inputs["x"].astype(np.float32)}
    if model == "scaled":
        scale = inputs["scale"].astype(np.float32)
        image = inputs["image"]
        if image.dtype == object:  # encoded images: the pixels are the decoder's
            return {"scale": scale}
        with np.errstate(all="ignore"):
            return {"mean": image.mean(axis=(1, 2, 3)) * scale[:, 0], "scale": scale}
    return None
