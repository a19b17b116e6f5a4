"""scorepack's TensorFlow SavedModel backend. Importing this module does not import
TensorFlow; the framework is imported when a model loads."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from scorepack import BackendSpec, Requirements, hookimpl
from scorepack.cuda import choose_environment, parse_kind
from scorepack.detect import is_saved_model

from .backend import INSTALL, TensorFlowBackend

__all__ = ["SPEC", "TensorFlowBackend"]

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

    GPU (``cuda``, ``cuda12``): ``tensorflow[and-cuda]`` from scorepack's known-good table
    (:mod:`scorepack.cuda`; ``tensorflow-gpu`` is a removed stub upstream): CUDA 12, no
    sm_90 code, so the service gets a large PTX JIT cache.
    """
    version = _installed_version()
    device, major = parse_kind(kind)
    if device == "cuda":
        env = choose_environment("tensorflow", version, major)
        return Requirements(pip=env.pip, base_image=env.base_image, cuda=env)
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
