"""scorepack's ONNX Runtime backend. Importing this module does not import onnxruntime;
the runtime is imported when a model loads."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from scorepack import BackendSpec, Requirements, hookimpl
from scorepack.detect import format_detector

from .backend import INSTALL, OnnxBackend

__all__ = ["SPEC", "OnnxBackend", "requirements"]

#: onnxruntime-gpu[cuda,cudnn] brings CUDA and cuDNN as pip packages, so the image
#: needs the NVIDIA driver stack and Azure ML's runtime only (as for TensorFlow)
GPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
CPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
DEFAULT_VERSION = "1.32.0"
DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "ort-nightly", "ort-nightly-gpu")


def _installed_version() -> str:
    for dist in DISTRIBUTIONS:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return DEFAULT_VERSION


def requirements(kind: str) -> Requirements:
    """Pinned to the onnxruntime that built and tested the package.

    GPU: ``onnxruntime-gpu`` with its ``cuda`` and ``cudnn`` extras; CPU: ``onnxruntime``.
    The two must never be installed together (they share the ``onnxruntime`` module).
    """
    version = _installed_version()
    if kind == "cuda":
        return Requirements(
            pip=(f"onnxruntime-gpu[cuda,cudnn]=={version}",), base_image=GPU_BASE_IMAGE
        )
    return Requirements(pip=(f"onnxruntime=={version}",), base_image=CPU_BASE_IMAGE)


SPEC = BackendSpec(
    name="onnx",
    backend=OnnxBackend,
    formats=("ONNX model (.onnx, any file name: detected by content)",),
    detect=format_detector("onnx"),
    framework="onnxruntime",
    distributions=DISTRIBUTIONS,
    install=INSTALL,
    requirements=requirements,
)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(SPEC)
