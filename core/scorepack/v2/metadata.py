"""V2 server and model metadata: the extensions spoken, a scorer's signature, and the state
of a model that is not ready.

One answer for both adapters: V2 REST returns :func:`model_metadata` as it is; gRPC's
``ModelMetadataResponse`` has no ``state`` or ``reason`` fields, so for a model that is not
ready it answers :func:`not_ready` (UNAVAILABLE, as Triton does) with both in the message.
"""

from __future__ import annotations

from typing import Any

from ..errors import NotReadyError
from ..repository import READY, ModelState, Repository
from ..scorer import Scorer
from ..signature import TensorSpec
from ..version import __version__
from .datatypes import datatype_of

__all__ = [
    "EXTENSIONS",
    "model_metadata",
    "not_ready",
    "platform_of",
    "server_metadata",
    "tensor_metadata",
]

#: the V2 extensions this server speaks, over REST and gRPC alike
EXTENSIONS = ("binary_tensor_data", "model_repository", "model_configuration", "statistics")

#: Triton's platform names for the built-in backends, so V2 clients see familiar ones
_PLATFORMS = {
    "scorepack_tensorflow": "tensorflow_savedmodel",
    "scorepack_onnx": "onnxruntime_onnx",
    "scorepack_pytorch": "pytorch_libtorch",
}


def server_metadata() -> dict[str, Any]:
    """The server's metadata (``GET /v2``, gRPC ServerMetadata)."""
    return {"name": "scorepack", "version": __version__, "extensions": list(EXTENSIONS)}


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


def model_metadata(repository: Repository, name: str, version: str | None = None) -> dict[str, Any]:
    """The V2 metadata of model ``name``: ``versions`` lists all its versions, and the
    version asked for (default: the one requests go to) gives its ``platform``,
    ``inputs`` and ``outputs`` when it is ready. When it is not (loading, failed, unloaded)
    the tensors are empty and ``state`` and ``reason`` say why.

    Raises :class:`~scorepack.errors.ModelNotFoundError` for an unknown name or version.
    """
    state = repository.state(name, version)
    scorer = repository.find(name, state.version)
    versions = [v for v in repository.versions(name) if v is not None]
    platform = platform_of(scorer) if scorer is not None else ""
    if scorer is None or state.state != READY:
        return {
            "name": name,
            "versions": versions,
            "platform": platform,
            "inputs": [],
            "outputs": [],
            "state": state.state,
            "reason": state.reason,
        }
    signature = scorer.signature
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": [tensor_metadata(s) for s in signature.inputs],
        "outputs": [tensor_metadata(s) for s in signature.outputs],
    }


def not_ready(state: ModelState) -> NotReadyError:
    """The error for a model version that is not ready, naming its state and the reason
    (a load failure's message, "unloaded", "loading")."""
    label = f"model {state.name!r}" + (f" version {state.version!r}" if state.version else "")
    return NotReadyError(f"The {label} is not ready: {state.state} ({state.reason}).")
