"""scorepack's PyTorch backend: TorchScript archives and torch.export programs (.pt2).

Importing this module does not import torch; the framework is imported when a model loads.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable

from scorepack import BackendSpec, Requirements, hookimpl
from scorepack.detect import format_detector

from .backend import CPU_INDEX, EXPORT_ADVICE, INSTALL, TorchBackend
from .compat import torchvision_release
from .metadata import EXTRA_FILE, signature_files

__all__ = [
    "EXPORT_ADVICE",
    "EXTRA_FILE",
    "SPEC",
    "TorchBackend",
    "requirements",
    "signature_files",
]

#: CUDA torch wheels bring the CUDA runtime and cuDNN as pip packages, so the image
#: needs the NVIDIA driver stack and Azure ML's runtime only (as for TensorFlow)
GPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
CPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
DEFAULT_VERSION = "2.13.0"
#: the CUDA build GPU packages install; SCOREPACK_TORCH_CUDA=cu126 (say) picks another
DEFAULT_CUDA = "cu128"


def _installed_version() -> str:
    """The installed torch's public version (``2.13.0+cpu`` → ``2.13.0``)."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return DEFAULT_VERSION
    return version.split("+", 1)[0]


def requirements(kind: str) -> Requirements:
    """Pinned to the torch that built and tested the package, in the build for ``kind``.

    CPU and CUDA builds of torch share one name and differ by index, so each variant
    pins the local version (``+cpu``, ``+cu128``) and names its PyTorch index: pip
    cannot then pick PyPI's default build instead.
    """
    version = _installed_version()
    if kind == "cuda":
        cuda = os.environ.get("SCOREPACK_TORCH_CUDA", DEFAULT_CUDA)
        pins = [f"torch=={version}+{cuda}"]
        vision = torchvision_release(version)
        if vision:
            # for -O gpu_decode=true (nvJPEG); small beside the CUDA torch it matches
            pins.append(f"torchvision=={vision}+{cuda}")
        return Requirements(
            pip=(f"--extra-index-url https://download.pytorch.org/whl/{cuda}", *pins),
            base_image=GPU_BASE_IMAGE,
        )
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
