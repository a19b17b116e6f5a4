"""scorepack's ONNX Runtime backend. Importing this module does not import onnxruntime;
the runtime is imported when a model loads."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from scorepack import BackendSpec, Requirements, hookimpl
from scorepack.cuda import choose_environment, parse_kind
from scorepack.detect import format_detector

from .backend import INSTALL, OnnxBackend

__all__ = ["SPEC", "OnnxBackend", "requirements"]

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
    """CPU: ``onnxruntime`` pinned to the version that built and tested the package.

    GPU (``cuda``, ``cuda12``, ``cuda13``): ``onnxruntime-gpu[cuda,cudnn]`` from scorepack's
    known-good table (:mod:`scorepack.cuda`). CPU and GPU releases are not made in
    lock-step (CPU 1.32.0, GPU 1.31.1), so the GPU pin never copies the CPU version. The
    two must never be installed together (they share the ``onnxruntime`` module).
    """
    version = _installed_version()
    device, major = parse_kind(kind)
    if device == "cuda":
        env = choose_environment("onnxruntime", version, major)
        return Requirements(pip=env.pip, base_image=env.base_image, cuda=env)
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
