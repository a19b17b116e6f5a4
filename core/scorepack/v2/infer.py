"""V2 inference over a :class:`~scorepack.scorer.Scorer`: the same admission, decoding
limits, validation, batcher and error table as ``/score``.

Inputs are checked against the model's signature exactly as ``/score``'s JSON tensors are,
and, as Triton does, each input's datatype must be the one the model's metadata states: an
INT64 tensor for an FP32 input is a 400 ("unexpected datatype"), never a silent cast. Two
exceptions, both lossless: an image model also takes its image input as ``BYTES`` elements
holding encoded JPEG or PNG images (each goes through the same decoding and preprocessing
as an image posted to ``/score``, pixel limit included, and becomes one row; at most the
model's max batch size of them in one request, decoded one after another, and no further
once the request is past its deadline or its client has gone: 504 as a late model call,
or dropped, :func:`scorepack.decoding.checkpoint`); and ``BF16``
is taken where the model takes ``FP32``, since NumPy has no bfloat16 and a BF16 value
widens to float32 exactly (see :mod:`~scorepack.v2.datatypes`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..batching import BatchResult
from ..codecs import Decoded, check_tensors, decode_image
from ..decoding import checkpoint
from ..errors import BadRequestError, InvalidTensorError
from ..scorer import Scorer
from ..signature import Signature, TensorSpec
from .datatypes import datatype_of
from .types import InferInput, InferOutput, InferRequest, InferResponse

__all__ = [
    "RESERVED_PARAMETERS",
    "decode_request",
    "expected_datatype",
    "infer",
    "infer_blocking",
]

#: request parameters that steer the transport, not the model: not echoed back
RESERVED_PARAMETERS = frozenset({"binary_data_output", "binary_data_size", "binary_data"})


async def infer(
    scorer: Scorer, request: InferRequest | Callable[[], InferRequest]
) -> InferResponse:
    """Score one V2 request through the scorer's batcher; raise scorepack errors.

    ``request`` may be a function that parses it from the wire: it is then called in the
    decode pool once the request is admitted, as ``/score`` decodes its body, so a full
    queue refuses it before any parsing and large bodies never block the event loop.
    """
    call = _Call(scorer, request)
    return call.response(await scorer.run_async(call.decode))


def infer_blocking(
    scorer: Scorer,
    request: InferRequest | Callable[[], InferRequest],
    watch: Callable[[Future[Any]], None] | None = None,
) -> InferResponse:
    """:func:`infer`'s blocking twin, for a host that gives each request a thread (see
    :meth:`Scorer.run <scorepack.scorer.Scorer.run>` for ``watch``)."""
    call = _Call(scorer, request)
    return call.response(scorer.run(call.decode, watch=watch))


class _Call:
    """One V2 request on its way through a scorer: parsed and decoded in the decode pool,
    answered from the batch result."""

    __slots__ = ("parsed", "request", "scorer", "wanted")

    def __init__(self, scorer: Scorer, request: InferRequest | Callable[[], InferRequest]) -> None:
        self.scorer = scorer
        self.request = request
        self.parsed: InferRequest | None = None
        self.wanted: list[str] = []

    def decode(self) -> Decoded:
        request = self.request() if callable(self.request) else self.request
        self.parsed = request
        self.wanted = _requested_outputs(self.scorer.signature, request)
        return decode_request(self.scorer, request)

    def response(self, result: BatchResult) -> InferResponse:
        request = self.parsed
        assert request is not None
        outputs = [_output(name, result.outputs[name]) for name in self.wanted]
        parameters = {k: v for k, v in request.parameters.items() if k not in RESERVED_PARAMETERS}
        return InferResponse(
            model_name=self.scorer.name,
            model_version=self.scorer.version,
            outputs=outputs,
            id=request.id,
            parameters=parameters,
            batch_size=result.batch_size,
            queue_seconds=result.queue_seconds,
        )


#: output parameters of V2 extensions this server does not offer (ServerMetadata lists the
#: ones it does): ignored, the client would read plain outputs as class labels, or look for
#: them in a shared-memory region nobody wrote (an input in shared memory arrives without
#: data, which is refused as such)
_EXTENSION_PARAMETERS = {
    "classification": "classification",
    "shared_memory_region": "shared-memory",
}


def _refuse_extensions(parameters: Any, where: str) -> None:
    for key, extension in _EXTENSION_PARAMETERS.items():
        if key in parameters:
            raise BadRequestError(
                f"{where} has the parameter {key!r} of the V2 {extension} extension, which "
                "this server does not offer: ask for the output without it."
            )


def _requested_outputs(signature: Signature, request: InferRequest) -> list[str]:
    names = signature.output_names
    if not request.outputs:
        # none asked for, or an empty list ("outputs": [] over REST, which gRPC cannot
        # tell from none): every output, as Triton answers both
        return names
    for output in request.outputs:
        _refuse_extensions(output.parameters, f"Output {output.name!r}")
    asked = [o.name for o in request.outputs]
    unknown = [n for n in asked if n not in names]
    if unknown:
        raise InvalidTensorError(
            f"Unknown output(s) {unknown}; the model's outputs are {names}.", unknown[0]
        )
    if len(set(asked)) != len(asked):
        raise BadRequestError(f"An output is asked for twice: {asked}.")
    return asked


def _output(name: str, array: np.ndarray) -> InferOutput:
    array = np.asarray(array)
    if array.dtype.kind in "SU":
        array = array.astype(object)
    return InferOutput(name, datatype_of(array.dtype), tuple(array.shape), array)


def decode_request(scorer: Scorer, request: InferRequest) -> Decoded:
    """The request's inputs as checked, model-ready arrays (runs in the decode pool)."""
    signature = scorer.signature
    seen: dict[str, InferInput] = {}
    for item in request.inputs:
        if item.name in seen:
            raise InvalidTensorError(f"Input {item.name!r} is given twice.", item.name)
        seen[item.name] = item
    if not seen:
        raise InvalidTensorError(
            f"The request has no inputs; the model's are {signature.input_names}."
        )
    plan = scorer.image_plan
    image = seen.get(plan.input) if plan is not None else None
    encoded = image is not None and _is_encoded_image(image, signature)
    for item in seen.values():
        if not (encoded and item is image):
            _check_datatype(item, signature)
    if image is None or not encoded:
        return check_tensors({n: i.data for n, i in seen.items()}, signature)
    images = _decode_images(scorer, image)
    rest = {n: i.data for n, i in seen.items() if n != image.name}
    others = Signature(
        inputs=tuple(s for s in signature.inputs if s.name != image.name),
        outputs=signature.outputs,
    )
    if not others.inputs:
        if rest:
            unknown = sorted(rest)
            raise InvalidTensorError(
                f"Unknown input(s) {unknown}; the model's inputs are {signature.input_names}.",
                unknown[0],
            )
        return images
    decoded = check_tensors(rest, others)
    if decoded.rows != images.rows:
        raise InvalidTensorError(
            f"The inputs disagree on the batch size: {images.rows} image(s) in "
            f"{image.name!r}, {decoded.rows} row(s) in the others."
        )
    return Decoded({**decoded.inputs, **images.inputs}, images.rows)


def expected_datatype(spec: TensorSpec) -> str | None:
    """The V2 datatype an input must have: the one model metadata states (None when the
    model's dtype has no V2 name: such an input is then only checked by value)."""
    try:
        return datatype_of(spec.dtype)
    except (TypeError, ValueError):
        return None


def _check_datatype(item: InferInput, signature: Signature) -> None:
    if item.name not in signature.input_names:
        return  # an unknown input: check_tensors names the model's inputs
    spec = signature.input(item.name)
    want = expected_datatype(spec)
    if want is None or item.datatype == want or (item.datatype == "BF16" and want == "FP32"):
        return
    raise InvalidTensorError(
        f"Input {item.name!r} has datatype {item.datatype}, but the model takes {want} "
        f"({spec.dtype}): unexpected datatype; send {want}.",
        item.name,
    )


def _is_encoded_image(item: InferInput, signature: Signature) -> bool:
    # a BYTES input where the model takes pixels: the client sent encoded images
    spec = signature.input(item.name)
    return item.datatype == "BYTES" and np.dtype(spec.dtype).kind not in "OSU"


def _decode_images(scorer: Scorer, item: InferInput) -> Decoded:
    bodies: list[Any] = list(item.data.reshape(-1))
    if not bodies:
        raise InvalidTensorError(f"Input {item.name!r} holds no images.", item.name)
    most = scorer.batcher.max_rows
    if len(bodies) > most:
        # each image, however small its bytes, becomes a whole row of the model's input
        # (602 kB for a float32 224x224x3 one): 16 MiB of 1x1 PNGs would ask for 130 GB.
        # Triton refuses a request over the model's max batch size the same way.
        raise InvalidTensorError(
            f"Input {item.name!r} holds {len(bodies)} images; one request may hold at most "
            f"{most}, the model's max batch size (--max-batch-size). Send the rest in "
            "further requests.",
            item.name,
        )
    rows = []
    for body in bodies:
        # stop between images once the request is past its deadline or its client left
        checkpoint()
        rows.append(scorer.decode_image(bytes(body)))
    if len(rows) == 1:
        return rows[0]
    name = item.name
    parts = [row.inputs[name] for row in rows]
    if len({(p.dtype.str, p.shape[1:]) for p in parts}) > 1:
        # a backend that decodes JPEGs itself got bytes for some and pixels for others
        # (PNG, CMYK): give it pixels for all, decoded here
        assert scorer.image_plan is not None
        parts = []
        for body in bodies:
            checkpoint()
            pixels = decode_image(bytes(body), scorer.image_plan, scorer.config.max_image_pixels)
            parts.append(pixels.inputs[name])
    return Decoded({name: np.concatenate(parts)}, len(parts))
