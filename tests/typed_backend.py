"""A fixture backend with one input of each kind of V2 datatype (no ML framework needed).

Inputs (batch first): ``flags`` bool [N, 3], ``counts`` int64 [N, 2], ``halves`` float16
[N, 2], ``texts`` object (strings as bytes) [N]. Outputs: ``not_flags`` = ~flags,
``doubled`` = counts * 2, ``halves_out`` = halves * 2 (float16), ``texts_out`` = texts
upper-cased, ``lengths`` int32 = len(texts). Every predict call's row count is recorded.
:class:`NoHalvesBackend` leaves out ``halves`` and ``halves_out`` (FP16 has no typed field
in gRPC's ``contents``, so a model without it can take every input typed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scorepack import Backend, Signature, TensorSpec


class TypedBackend(Backend):
    """BOOL, INT64, FP16 and BYTES in and out, computed so each answer can be checked."""

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.calls: list[int] = []

    fp16 = True

    def load(self) -> None:
        half_in = (TensorSpec("halves", "float16", (None, 2)),) if self.fp16 else ()
        half_out = (TensorSpec("halves_out", "float16", (None, 2)),) if self.fp16 else ()
        self.signature = Signature(
            inputs=(
                TensorSpec("flags", "bool", (None, 3)),
                TensorSpec("counts", "int64", (None, 2)),
                *half_in,
                TensorSpec("texts", "object", (None,)),
            ),
            outputs=(
                TensorSpec("not_flags", "bool", (None, 3)),
                TensorSpec("doubled", "int64", (None, 2)),
                *half_out,
                TensorSpec("texts_out", "object", (None,)),
                TensorSpec("lengths", "int32", (None,)),
            ),
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(len(inputs["flags"]))
        texts = inputs["texts"]
        upper = np.empty(len(texts), dtype=object)
        upper[:] = [bytes(t).upper() for t in texts]
        outputs = {
            "not_flags": ~inputs["flags"].astype(bool),
            "doubled": inputs["counts"].astype(np.int64) * 2,
            "texts_out": upper,
            "lengths": np.array([len(t) for t in texts], dtype=np.int32),
        }
        if self.fp16:
            outputs["halves_out"] = (inputs["halves"].astype(np.float16) * 2).astype(np.float16)
        return outputs


class NoHalvesBackend(TypedBackend):
    """:class:`TypedBackend` without its FP16 input and output."""

    fp16 = False
