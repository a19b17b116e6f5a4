"""V2 model metadata from a scorer's signature."""

from __future__ import annotations

from typing import Any

from ..scorer import Scorer
from ..signature import TensorSpec
from .datatypes import datatype_of

__all__ = ["model_metadata", "platform_of", "tensor_metadata"]

#: Triton's platform names for the built-in backends, so V2 clients see familiar ones
_PLATFORMS = {
    "scorepack_tensorflow": "tensorflow_savedmodel",
    "scorepack_onnx": "onnxruntime_onnx",
    "scorepack_pytorch": "pytorch_libtorch",
}


def platform_of(scorer: Scorer) -> str:
    """The V2 ``platform``: Triton's name for a built-in backend, else the plugin module."""
    module = type(scorer.backend).__module__.split(".")[0]
    return _PLATFORMS.get(module, module)


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    """``{"name", "datatype", "shape"}`` with -1 for dimensions of any size."""
    return {
        "name": spec.name,
        "datatype": datatype_of(spec.dtype),
        "shape": [-1 if d is None else d for d in spec.shape],
    }


def model_metadata(scorer: Scorer) -> dict[str, Any]:
    """The V2 model metadata of a loaded scorer."""
    signature = scorer.signature
    return {
        "name": scorer.name,
        "versions": [scorer.version] if scorer.version else [],
        "platform": platform_of(scorer),
        "inputs": [tensor_metadata(s) for s in signature.inputs],
        "outputs": [tensor_metadata(s) for s in signature.outputs],
    }
