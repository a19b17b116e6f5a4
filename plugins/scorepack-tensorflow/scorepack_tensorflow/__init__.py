"""scorepack's TensorFlow SavedModel backend. Importing this module does not import
TensorFlow; the framework is imported when a model loads."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from scorepack import BackendSpec, Requirements, hookimpl
from scorepack.detect import is_saved_model

from .backend import INSTALL, TensorFlowBackend

__all__ = ["SPEC", "TensorFlowBackend"]

#: what a GPU package's image builds on; TensorFlow's pip wheels bring CUDA themselves,
#: so the image needs the NVIDIA driver stack and Azure ML's runtime only
GPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
CPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
DEFAULT_VERSION = "2.21.0"


def _installed_version() -> str:
    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return DEFAULT_VERSION


def requirements(kind: str) -> Requirements:
    """Pinned to the TensorFlow that built and tested the package.

    GPU: ``tensorflow[and-cuda]`` (``tensorflow-gpu`` is a removed stub upstream).
    """
    version = _installed_version()
    if kind == "cuda":
        return Requirements(pip=(f"tensorflow[and-cuda]=={version}",), base_image=GPU_BASE_IMAGE)
    return Requirements(pip=(f"tensorflow-cpu=={version}",), base_image=CPU_BASE_IMAGE)


SPEC = BackendSpec(
    name="tensorflow",
    backend=TensorFlowBackend,
    formats=("TensorFlow SavedModel directory (saved_model.pb)",),
    detect=is_saved_model,
    framework="tensorflow",
    distributions=("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    install=INSTALL,
    requirements=requirements,
)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(SPEC)
