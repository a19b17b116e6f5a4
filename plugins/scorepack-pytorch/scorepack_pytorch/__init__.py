"""scorepack's PyTorch backend: TorchScript archives and torch.export programs (.pt2).

Importing this module does not import torch; the framework is imported when a model loads.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from scorepack import BackendSpec, Requirements, hookimpl
from scorepack.cuda import choose_environment, parse_kind
from scorepack.detect import format_detector

from .backend import CPU_INDEX, EXPORT_ADVICE, INSTALL, TorchBackend
from .metadata import EXTRA_FILE, signature_files

__all__ = [
    "EXPORT_ADVICE",
    "EXTRA_FILE",
    "SPEC",
    "TorchBackend",
    "requirements",
    "signature_files",
]

CPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
DEFAULT_VERSION = "2.13.0"


def _installed_version() -> str:
    """The installed torch's public version (``2.13.0+cpu`` → ``2.13.0``)."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return DEFAULT_VERSION
    return version.split("+", 1)[0]


def requirements(kind: str) -> Requirements:
    """Pinned to the torch that built and tested the package, in the build for ``kind``.

    GPU (``cuda``, or ``cuda12``/``cuda13`` for a CUDA major): a row of scorepack's
    known-good table (:mod:`scorepack.cuda`) — the package index's own torch wheel is the
    CUDA 13 build, CUDA 12 comes from PyTorch's index with a ``+cu126`` local version —
    with the matching torchvision (for ``-O gpu_decode=true``). CPU: ``+cpu`` from
    PyTorch's CPU index, so pip cannot pick the package index's CUDA build instead.
    """
    version = _installed_version()
    device, major = parse_kind(kind)
    if device == "cuda":
        env = choose_environment("torch", version, major)
        return Requirements(pip=env.pip, base_image=env.base_image, cuda=env)
    return Requirements(
        pip=(f"--extra-index-url {CPU_INDEX}", f"torch=={version}+cpu"),
        base_image=CPU_BASE_IMAGE,
    )


SPEC = BackendSpec(
    name="pytorch",
    backend=TorchBackend,
    formats=(
        "TorchScript archive (torch.jit.save)",
        "torch.export program (torch.export.save, .pt2)",
    ),
    detect=format_detector("pytorch"),
    framework="torch",
    distributions=("torch",),
    install=INSTALL,
    requirements=requirements,
)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(SPEC)
