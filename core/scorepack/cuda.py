"""Known-good CUDA environments: one table, per framework version, of what a GPU package pins.

A GPU package is only as good as the wheels it asks for. Each row of :data:`KNOWN_GOOD`
says, for one framework release and one CUDA major: the pip requirement lines (and the
extra index, when the wheels do not come from the package index), the CUDA user-space
the wheels bring, the NVIDIA driver the node needs, the GPU architectures the build has
native code for (others JIT-compile PTX on first use, or do not run), and the base image.

Facts, and how they were checked (2026-12-07, by resolving with pip for Linux x86-64,
Python 3.11, ``--only-binary=:all:`` against the package index; ``scorepack check``
re-checks a built package the same way):

* torch 2.13.0 from the package index is the CUDA 13.0 build: its metadata requires
  ``cuda-toolkit==13.0.3`` and ``nvidia-cudnn-cu13``; no extra index. PyTorch's own index
  has ``+cu126`` and ``+cu130`` builds of 2.13 (no ``+cu128``).
* onnxruntime-gpu 1.31.1 (the newest; CPU onnxruntime is 1.32.0, the two are not released
  in lock-step) ``[cuda,cudnn]`` resolves to CUDA 13 wheels; 1.23.2 is a CUDA 12 build
  (``nvidia-*-cu12``); 1.27.0's ``cuda`` extra does not resolve (it asks for
  ``nvidia-cuda-nvrtc-cu13``, which does not exist).
* tensorflow 2.21.0 ``[and-cuda]`` was built with CUDA 12.5 and resolves to CUDA 12.9
  user-space wheels; its kernels are compiled for sm_60/70/80/89 with PTX for compute_90,
  so on H100/H200 (sm_90) every kernel is JIT-compiled from PTX on first use.

The architecture lists come from the projects' published build settings, not from a run
on every GPU; ``scripts/gpu-check`` prints what the GPU at hand reports.

A driver's CUDA version must be at least the user-space's major (CUDA's minor-version
compatibility covers the minors); PTX JIT needs a driver at least as new as the toolkit
that wrote the PTX. Both are folded into ``driver_min``.

The wheels bring CUDA, cuDNN and friends as pip packages, so the image needs no CUDA of
its own: the NVIDIA container runtime mounts the driver's ``libcuda`` from the node. Every
row therefore builds on Azure ML's plain Ubuntu image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import hugepages
from .errors import PackageError

__all__ = [
    "KNOWN_GOOD",
    "PLAIN_UBUNTU_IMAGE",
    "CudaEnvironment",
    "choose_environment",
    "environments_for",
    "parse_kind",
    "service_variables",
]

#: Azure ML's Ubuntu 22.04 image without CUDA (glibc 2.35): the wheels bring CUDA
PLAIN_UBUNTU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
#: where a fresh container keeps JIT-compiled PTX; mount a volume here to keep it
JIT_CACHE_PATH = "/tmp/scorepack/cuda-jit-cache"
#: CUDA's largest JIT cache (4 GiB); its default, 256 MiB, is smaller than TensorFlow's kernels
JIT_CACHE_MAX = str(4 * 1024**3)


@dataclass(frozen=True)
class CudaEnvironment:
    """One known-good GPU environment of one framework release."""

    #: the framework as scorepack names it (``torch``, ``onnxruntime``, ``tensorflow``)
    framework: str
    #: the framework release the build machine has (the CPU build, for onnxruntime)
    built_with: str
    #: the CUDA the framework build targets (``major.minor``, or the major alone where
    #: the project does not say); the driver floor and PTX JIT follow from it
    cuda: str
    #: pip requirement lines, an ``--extra-index-url`` line first when one is needed
    pip: tuple[str, ...]
    #: the lowest NVIDIA driver branch that runs it (on every architecture listed)
    driver_min: int
    #: GPU architectures with native code (``sm_XY``)
    native_archs: tuple[str, ...]
    #: PTX targets (``compute_XY``): newer GPUs JIT-compile from these on first use
    ptx_archs: tuple[str, ...] = ()
    base_image: str = PLAIN_UBUNTU_IMAGE
    #: environment variables the service should run with
    environment: Mapping[str, str] = field(default_factory=dict)
    notes: str = ""
    #: the default among a release's rows
    default: bool = False

    @property
    def major(self) -> int:
        """The CUDA major version (12, 13)."""
        return int(self.cuda.split(".", 1)[0])

    @property
    def index_url(self) -> str | None:
        """The extra index the wheels come from, or None for the package index alone."""
        for line in self.pip:
            if line.startswith("--extra-index-url"):
                return line.split(None, 1)[1].strip()
        return None

    def jit_archs(self) -> str:
        """One sentence on which GPUs run native code and which JIT-compile PTX."""
        native = ", ".join(self.native_archs) or "none"
        if not self.ptx_archs:
            return f"native code for {native}; no PTX, so newer GPUs are not served"
        ptx = ", ".join(self.ptx_archs)
        return (
            f"native code for {native}; PTX for {ptx}, JIT-compiled on first use on newer GPUs "
            f"(cache: CUDA_CACHE_PATH, CUDA_CACHE_MAXSIZE)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``requirements.cuda`` entry."""
        return {
            "cuda": self.cuda,
            "driver_min": self.driver_min,
            "native_archs": list(self.native_archs),
            "ptx_archs": list(self.ptx_archs),
            "index_url": self.index_url,
            "environment": dict(self.environment),
            "notes": self.notes,
        }


_TORCH_NOTES = "torch.cuda.get_arch_list() on the GPU machine is authoritative"
_JIT_ENV = {"CUDA_CACHE_PATH": JIT_CACHE_PATH, "CUDA_CACHE_MAXSIZE": JIT_CACHE_MAX}

#: the table: every GPU environment scorepack builds, and nothing else
KNOWN_GOOD: tuple[CudaEnvironment, ...] = (
    CudaEnvironment(
        framework="torch",
        built_with="2.13.0",
        cuda="13.0",
        # the package index's Linux x86-64 wheel is the CUDA 13.0 build: no extra index
        pip=("torch==2.13.0", "torchvision==0.28.0"),
        driver_min=580,
        native_archs=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"),
        ptx_archs=("compute_120",),
        notes=_TORCH_NOTES,
        default=True,
    ),
    CudaEnvironment(
        framework="torch",
        built_with="2.13.0",
        cuda="12.6",
        pip=(
            f"--extra-index-url {PYTORCH_INDEX}/cu126",
            "torch==2.13.0+cu126",
            "torchvision==0.28.0+cu126",
        ),
        driver_min=525,
        native_archs=("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"),
        ptx_archs=("compute_90",),
        notes=_TORCH_NOTES + "; the wheels come from PyTorch's index",
    ),
    CudaEnvironment(
        framework="onnxruntime",
        built_with="1.32",
        cuda="13.0",
        pip=("onnxruntime-gpu[cuda,cudnn]==1.31.1",),
        driver_min=580,
        native_archs=("sm_75", "sm_80", "sm_90"),
        ptx_archs=("compute_90",),
        notes=(
            "onnxruntime-gpu 1.31.1 is the newest GPU release (the CPU build is 1.32.0); "
            "TensorRT is not in the package: -O tensorrt=true needs libnvinfer in the image"
        ),
        default=True,
    ),
    CudaEnvironment(
        framework="onnxruntime",
        built_with="1.32",
        cuda="12",
        pip=("onnxruntime-gpu[cuda,cudnn]==1.23.2",),
        driver_min=525,
        native_archs=("sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90"),
        ptx_archs=("compute_90",),
        notes=(
            "a CUDA 12 build on the package index that resolves (older than the CPU build the "
            "package was checked with: onnxruntime refuses a model newer than it reads, at load)"
        ),
    ),
    CudaEnvironment(
        framework="tensorflow",
        built_with="2.21",
        cuda="12.5",
        pip=("tensorflow[and-cuda]==2.21.0",),
        # 525 runs the native sm_60..sm_89 code; PTX from CUDA 12.5 needs a 555 driver (H100)
        driver_min=555,
        native_archs=("sm_60", "sm_70", "sm_80", "sm_89"),
        ptx_archs=("compute_90",),
        environment=_JIT_ENV,
        notes=(
            "no sm_90 code: on H100/H200 every fresh container JIT-compiles the kernels from "
            "PTX (minutes); the cache is kept under CUDA_CACHE_PATH, mount a volume there to "
            "keep it across restarts"
        ),
        default=True,
    ),
)


def _release(version: str) -> str:
    """``2.13.0+cpu`` → ``2.13.0``."""
    return version.split("+", 1)[0].strip()


def environments_for(framework: str, version: str) -> tuple[CudaEnvironment, ...]:
    """The known-good rows for ``framework`` at ``version`` (a release or ``major.minor``)."""
    release = _release(version)
    return tuple(
        row
        for row in KNOWN_GOOD
        if row.framework == framework
        and (release == row.built_with or release.startswith(row.built_with + "."))
    )


def parse_kind(kind: str) -> tuple[str, int | None]:
    """A requirements kind: ``cpu``, ``cuda`` (the default CUDA), ``cuda12``, ``cuda13``."""
    if kind.startswith("cuda") and kind[4:].isdigit():
        return "cuda", int(kind[4:])
    return kind, None


def choose_environment(framework: str, version: str, major: int | None) -> CudaEnvironment:
    """The row for ``framework`` ``version`` and CUDA ``major`` (None: the default row).

    Raises :class:`~scorepack.errors.PackageError` naming what is known when nothing fits.
    """
    rows = environments_for(framework, version)
    if not rows:
        known = sorted({f"{r.framework} {r.built_with}" for r in KNOWN_GOOD})
        raise PackageError(
            f"scorepack knows no working GPU environment for {framework} {_release(version)}; "
            f"it knows: {', '.join(known)}. Build with one of those installed, or --device cpu."
        )
    if major is None:
        return next((r for r in rows if r.default), rows[0])
    for row in rows:
        if row.major == major:
            return row
    offered = ", ".join(sorted({str(r.major) for r in rows}))
    raise PackageError(
        f"{framework} {_release(version)} offers CUDA {offered} in scorepack's known-good "
        f"environments, not CUDA {major}."
    )


def service_variables(env: CudaEnvironment | None) -> dict[str, str]:
    """The environment variables a package's service runs with: glibc's huge pages for the
    model's memory (:mod:`scorepack.hugepages`), and its CUDA environment's own."""
    cuda = dict(env.environment) if env is not None else {}
    return hugepages.service_variables() | cuda
