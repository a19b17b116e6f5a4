"""The signature of a TorchScript archive, which does not record its input shapes.

A TorchScript archive knows its input *names* (the ``forward`` arguments) but not their
shapes or dtypes. scorepack reads them, in this order of precedence, from:

1. ``-O input_shape=...`` / ``-O input_dtype=...`` when the model is served;
2. a ``scorepack.json`` extra file stored in the archive at export time::

       from scorepack import TensorSpec
       from scorepack_pytorch import signature_files

       torch.jit.save(
           torch.jit.script(model), "model.ts",
           _extra_files=signature_files([TensorSpec("image", "float32", (None, 3, 224, 224))]),
       )

The outputs are found by one dry run on zeros at load time, unless ``scorepack.json``
lists them. Nothing here imports torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scorepack import TensorSpec
from scorepack.errors import ModelLoadError

__all__ = [
    "EXTRA_FILE",
    "merge_inputs",
    "parse_dtype_option",
    "parse_shape_option",
    "read_signature_file",
    "signature_files",
]

#: the name of scorepack's extra file inside a TorchScript archive
EXTRA_FILE = "scorepack.json"

_DIMS = re.compile(r"^(\?|-1|\d+)(x(\?|-1|\d+))*$")


def signature_files(
    inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec] = ()
) -> dict[str, str]:
    """``_extra_files`` for ``torch.jit.save`` that record the model's signature.

    Shapes include the batch dimension first, as ``None`` for any batch size. Inputs are
    passed to ``forward`` positionally, in the order given; their names are the names
    clients use in JSON requests.
    """
    if not inputs:
        raise ValueError("signature_files needs at least one input")
    data = {
        "inputs": [spec.to_dict() for spec in inputs],
        "outputs": [spec.to_dict() for spec in outputs],
    }
    return {EXTRA_FILE: json.dumps(data)}


def read_signature_file(
    text: str | bytes,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs from a ``scorepack.json`` extra file (empty when absent)."""
    if not text:
        return (), ()
    try:
        data = json.loads(text)
        inputs = tuple(TensorSpec.from_dict(i) for i in data.get("inputs", ()))
        outputs = tuple(TensorSpec.from_dict(o) for o in data.get("outputs", ()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(
            f"the archive's {EXTRA_FILE} is not a scorepack signature: {exc}. Write it with "
            "scorepack_pytorch.signature_files(...)."
        ) from exc
    for spec in (*inputs, *outputs):
        _check_dtype(spec.dtype, f"{EXTRA_FILE} entry {spec.name!r}")
    return inputs, outputs


def _per_input(value: Any, names: Sequence[str], option: str) -> dict[str, str]:
    """``VALUE`` (one input) or ``NAME:VALUE,NAME:VALUE`` → {name: value}."""
    text = str(value).strip()
    if ":" not in text:
        if len(names) != 1:
            raise ModelLoadError(
                f"-O {option}={text} is ambiguous: the model has inputs {', '.join(names)}. "
                f"Name each one: -O {option}=" + ",".join(f"{n}:..." for n in names)
            )
        return {names[0]: text}
    parsed: dict[str, str] = {}
    for part in text.split(","):
        name, sep, item = part.partition(":")
        name = name.strip()
        if not sep or name not in names:
            raise ModelLoadError(
                f"-O {option}: {part.strip()!r} names no input; the inputs are "
                f"{', '.join(names)} (use NAME:VALUE,NAME:VALUE)"
            )
        parsed[name] = item.strip()
    return parsed


def parse_shape_option(value: Any, names: Sequence[str]) -> dict[str, tuple[int | None, ...]]:
    """``-O input_shape``: the shape of one row (no batch dimension) of each input.

    ``3x224x224`` for a model with one input; ``image:3x224x224,extra:4`` for several.
    ``?`` (or ``-1``) marks a dimension of any size.
    """
    shapes: dict[str, tuple[int | None, ...]] = {}
    for name, text in _per_input(value, names, "input_shape").items():
        if not _DIMS.match(text):
            raise ModelLoadError(
                f"-O input_shape: {text!r} is not a shape; write the dimensions of one row "
                "joined by x, e.g. 3x224x224 (? for any size)"
            )
        shapes[name] = tuple(None if d in ("?", "-1") else int(d) for d in text.split("x"))
    return shapes


def parse_dtype_option(value: Any, names: Sequence[str]) -> dict[str, str]:
    """``-O input_dtype``: ``float32`` for one input, ``image:float32,ids:int64`` for several."""
    dtypes = _per_input(value, names, "input_dtype")
    for name, dtype in dtypes.items():
        dtypes[name] = _check_dtype(dtype, f"-O input_dtype for {name!r}")
    return dtypes


def _check_dtype(dtype: str, where: str) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise ModelLoadError(f"{where}: {dtype!r} is not a NumPy dtype name") from None


def merge_inputs(
    names: Sequence[str],
    stored: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int | None, ...]],
    dtypes: Mapping[str, str],
) -> tuple[TensorSpec, ...] | None:
    """Input specs: options over the stored metadata; None when a shape is unknown.

    ``names`` are the final input names (the stored ones when there are any).
    """
    specs = []
    for index, name in enumerate(names):
        base = stored[index] if stored else None
        if name in shapes:
            shape: tuple[int | None, ...] = (None, *shapes[name])
            batched = True
        elif base is not None:
            shape, batched = base.shape, base.batched
        else:
            return None
        dtype = dtypes.get(name) or (base.dtype if base is not None else "float32")
        specs.append(TensorSpec(name, dtype, shape, batched=batched))
    return tuple(specs)
