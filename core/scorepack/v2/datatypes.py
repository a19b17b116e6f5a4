"""The Open Inference Protocol's datatypes and NumPy's, and tensors as raw bytes.

Every V2 datatype maps to a NumPy dtype: ``BYTES`` to object arrays of ``bytes``, and
``BF16``, which NumPy lacks, to float32 (its 16 bits are a float32's top half, so the
widening is exact). Raw tensor bytes — the REST binary extension and gRPC's
``raw_input_contents``/``raw_output_contents`` — are little-endian, row-major; a ``BYTES``
tensor is each element as a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..codecs import tensor_array
from ..errors import InvalidTensorError

__all__ = [
    "DATATYPES",
    "array_from_bytes",
    "array_from_data",
    "array_to_bytes",
    "datatype_of",
    "numpy_dtype",
]

#: V2 datatype → NumPy dtype (little-endian, as the wire carries them)
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<f4"),  # widened on the way in; see the module docstring
    "BYTES": np.dtype(object),
}

_BY_KIND_SIZE = {
    (dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if name not in ("BF16", "BYTES")
}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The NumPy dtype for a V2 datatype name; a 400 names the valid ones."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise InvalidTensorError(
            f"Unknown datatype {datatype!r}; V2 datatypes are {', '.join(DATATYPES)}."
        ) from None


def datatype_of(dtype: Any) -> str:
    """The V2 datatype for a NumPy dtype (or dtype name); strings and objects are BYTES."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    try:
        return _BY_KIND_SIZE[(dt.kind, dt.itemsize)]
    except KeyError:
        raise ValueError(f"no V2 datatype for NumPy dtype {dt.name}") from None


def _count(shape: Iterable[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


#: NumPy's limits on any array: at most 64 dimensions, and a byte size (elements × an
#: item of up to 8 bytes) that fits a signed 64-bit integer, zero dimensions left out
_MAX_DIMS = 64
_MAX_ELEMENTS = (2**63 - 1) // 8


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidTensorError(
            f"Input {name!r} has shape {shape!r}; a shape is a list of sizes (integers >= 0).",
            name,
        )
    # checked before any array is made, so a shape NumPy cannot hold (even with a zero
    # dimension in it, which makes its data empty) is a 400, not NumPy's ValueError
    if len(shape) > _MAX_DIMS or _count(d or 1 for d in shape) > _MAX_ELEMENTS:
        raise InvalidTensorError(
            f"Input {name!r} has shape {_shape_text(shape)}, larger than any tensor can be "
            f"(at most {_MAX_DIMS} dimensions and 2^60 elements).",
            name,
        )
    return tuple(shape)


def _shape_text(shape: Sequence[int]) -> str:
    text = str(list(shape))
    return text if len(text) <= 200 else text[:200] + "...]"


def array_from_bytes(
    name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview
) -> np.ndarray:
    """A tensor from its raw bytes; a size that does not fit the shape is a 400."""
    dims = _check_shape(name, shape)
    count = _count(dims)
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        return _unpack_bytes(name, raw, count).reshape(dims)
    width = 2 if datatype == "BF16" else dtype.itemsize
    if len(raw) != count * width:
        raise InvalidTensorError(
            f"Input {name!r} has {len(raw)} bytes of data; {datatype} of shape {list(dims)} "
            f"takes {count * width}.",
            name,
        )
    if datatype == "BF16":
        halves = np.frombuffer(raw, dtype="<u2").astype("<u4") << 16
        return halves.view("<f4").reshape(dims)
    array = np.frombuffer(raw, dtype=dtype).reshape(dims)
    if datatype == "BOOL" and array.size and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise InvalidTensorError(
            f"Input {name!r} is BOOL but holds bytes other than 0 and 1.", name
        )
    return array


def _unpack_bytes(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    view = memoryview(raw).cast("B")
    if count * 4 > len(view):
        # every element takes at least its 4-byte length: refused before the shape's
        # count is allocated (a shape of [10**12] would ask for terabytes)
        raise InvalidTensorError(
            f"Input {name!r} holds {len(view) // 4} BYTES elements at most (each takes a "
            f"4-byte length, and it has {len(view)} bytes); its shape needs {count}.",
            name,
        )
    items = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise InvalidTensorError(
                f"Input {name!r} holds {index} BYTES elements; its shape needs {count}.", name
            )
        size = int.from_bytes(view[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(view):
            raise InvalidTensorError(
                f"Input {name!r}: BYTES element {index} says {size} bytes, but only "
                f"{len(view) - offset} remain.",
                name,
            )
        items[index] = bytes(view[offset : offset + size])
        offset += size
    if offset != len(view):
        raise InvalidTensorError(
            f"Input {name!r} has {len(view) - offset} bytes left after its {count} BYTES elements.",
            name,
        )
    return items


def array_to_bytes(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's raw bytes (BYTES length-prefixed; strings encoded as UTF-8)."""
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts.append(len(data).to_bytes(4, "little"))
            parts.append(data)
        return b"".join(parts)
    if datatype == "BF16":
        wide = np.ascontiguousarray(array, dtype="<f4").view("<u4")
        return (wide >> 16).astype("<u2").tobytes()
    return np.ascontiguousarray(array, dtype=numpy_dtype(datatype)).tobytes()


def array_from_data(
    name: str, datatype: str, shape: Sequence[int], data: Any, *, plain: bool = False
) -> np.ndarray:
    """A tensor from JSON ``data``, nested or flat, checked against its shape and type.

    Elements are checked by :func:`scorepack.codecs.tensor_array`, ``/score``'s one check
    (numbers for numeric datatypes, ``true``/``false`` only for BOOL, no nulls), so a body
    is refused the same way on either route. ``plain=True`` says the data can hold only
    numbers (:func:`scorepack.codecs.plain_numbers`; gRPC's typed fields), which spares
    numeric data the look at each element.
    """
    dims = _check_shape(name, shape)
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        # BYTES elements become bytes (strings encoded as UTF-8), each as long as it is
        flat = list(_flatten(data))
        if not all(isinstance(item, str | bytes) for item in flat):
            raise InvalidTensorError(f"Input {name!r} is BYTES: its data must be strings.", name)
        items = np.empty(len(flat), dtype=object)
        items[:] = [item.encode("utf-8") if isinstance(item, str) else item for item in flat]
        array = items
    else:
        array = tensor_array(data, dtype, name, plain=plain, label=datatype).reshape(-1)
    if array.size != _count(dims):
        raise InvalidTensorError(
            f"Input {name!r} holds {array.size} values; shape {list(dims)} takes {_count(dims)}.",
            name,
        )
    return array.reshape(dims)


def _flatten(data: Any) -> Iterator[Any]:
    # a loop with a stack, not recursion: JSON may nest a thousand lists deep
    stack = [iter((data,))]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list | tuple):
            stack.append(iter(item))
        else:
            yield item


_END = object()
