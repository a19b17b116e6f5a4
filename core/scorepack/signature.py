"""What a model takes and gives: named tensors with dtypes and shapes.

Backends read these from the model itself (never hard-coded); the core uses them to
derive preprocessing, to validate JSON tensors and to build warm-up batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Signature", "TensorSpec"]

Dim = int | None


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output.

    ``shape`` includes the batch dimension as its first entry when ``batched`` is true;
    ``None`` marks a dimension of any size. ``dtype`` is a NumPy dtype name
    (``"float32"``, ``"uint8"``, ``"int64"``, ``"bool"``, ``"object"`` for strings).
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    batched: bool = True

    @property
    def item_shape(self) -> tuple[Dim, ...]:
        """The shape of one row: the shape without its batch dimension."""
        return self.shape[1:] if self.batched else self.shape

    def shape_text(self) -> str:
        """The shape as people read it: ``[batch, 224, 224, 3]``."""
        dims = ["?" if d is None else str(d) for d in self.shape]
        if self.batched and dims:
            dims[0] = "batch" if self.shape[0] is None else f"batch={self.shape[0]}"
        return "[" + ", ".join(dims) + "]"

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready mapping (used by the package manifest)."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "batched": self.batched,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        """The inverse of :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            dtype=str(data["dtype"]),
            shape=tuple(None if d is None else int(d) for d in data["shape"]),
            batched=bool(data.get("batched", True)),
        )


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs of a model, in the model's own order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    name: str = "serving_default"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def input(self, name: str) -> TensorSpec:
        """The input called ``name``; KeyError lists the real names."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"no input {name!r}; inputs are {self.input_names}")

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    @property
    def batch_limit(self) -> int | None:
        """The largest batch every input accepts, or None when unbounded.

        A model exported with a fixed batch dimension (an ONNX graph with batch 1, say)
        can only be called with exactly that many rows; the batcher is capped to it.
        """
        fixed = {s.shape[0] for s in self.inputs if s.batched and s.shape and s.shape[0]}
        return min(fixed) if fixed else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=_specs(data.get("inputs", ())),
            outputs=_specs(data.get("outputs", ())),
            name=str(data.get("name", "serving_default")),
        )


def _specs(items: Iterable[Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.from_dict(i) for i in items)
